#include "backend/backend.h"

#include <string.h>

hr_backend *hr_backend_create(const hr_backend_opts *opts, hr_err *err) {
    const char *dev = opts && opts->device ? opts->device : "auto";
    int threads = opts ? opts->n_threads : 0;
    if (!strcmp(dev, "cpu")) return hr_backend_cpu_create(threads, err);
    if (!strcmp(dev, "cuda") || !strcmp(dev, "auto")) {
#ifdef HEARTH_HAVE_CUDA
        if (!strcmp(dev, "cuda") || hr_backend_cuda_available())
            return hr_backend_cuda_create(opts ? opts->device_index : 0, err);
#else
        if (!strcmp(dev, "cuda")) {
            hr_err_set(err, HR_EUNSUP, "this hearth was built without CUDA (configure with -DHEARTH_CUDA=ON)");
            return NULL;
        }
#endif
        return hr_backend_cpu_create(threads, err);
    }
    hr_err_set(err, HR_EINVAL, "unknown device '%s' (expected cpu, cuda or auto)", dev);
    return NULL;
}

void hr_backend_free(hr_backend *be) {
    if (be) be->ops->free(be);
}

int hr_tensor_set_repeated(hr_backend *be, hr_tensor *t, const void *chunk, size_t chunk_bytes) {
    if (!chunk_bytes) return HR_EINVAL;
    int rc = HR_OK;
    for (size_t done = 0; rc == HR_OK && done < t->nbytes;) {
        size_t len = HR_MIN(chunk_bytes, t->nbytes - done);
        rc = be->ops->tensor_set(be, t, chunk, done, len);
        done += len;
    }
    return rc;
}

hr_tensor *hr_tensor_from_f32(hr_backend *be, int ndim, const int64_t *ne, const float *data, const char *name) {
    hr_tensor *t = be->ops->tensor_new(be, HR_F32, ndim, ne, name);
    if (!t) return NULL;
    if (be->ops->tensor_set(be, t, data, 0, t->nbytes) != HR_OK) {
        be->ops->tensor_free(be, t);
        return NULL;
    }
    return t;
}
