/* Host -> device uploads through a pinned staging ring (weights at load time).
 * A plain cudaMemcpyAsync from pageable memory (the mmap of a checkpoint, a
 * converted buffer) is staged by the driver chunk by chunk and then waited
 * for; here the backend owns CU_UP_NBUF pinned buffers of CU_UP_CHUNK bytes
 * (cudaHostAlloc, allocated lazily by the first upload that takes this path,
 * freed with the backend) and a dedicated copy stream: chunk i is memcpy'd
 * into a free buffer while chunks i-1, i-2 ... are still in DMA, so the host
 * copy (and the page faults of a cold mmap) overlaps the PCIe transfer.
 *
 * Ordering (the tensor_set contract: the data is there for anything the
 * backend's stream runs later):
 *   - before its first copy, the copy stream waits for everything queued on
 *     the compute stream so far (tensor_new's zero-fill of this memory, or
 *     work still reading a reused block);
 *   - after the last copy the compute stream waits on the copy stream's
 *     event, so every later op, tensor_get and sync sees the data.
 * cu_upload returns once every byte has been copied out of the caller's
 * memory (the caller may free or reuse it), not when the DMA has finished:
 * the next tensor's conversion on the host overlaps this one's transfer.
 * A staging buffer is rewritten only after its event says its DMA is done. */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cu_types.cuh"
extern "C" {
#include "core/log.h"
}

#define CU_UP_NBUF  4
#define CU_UP_CHUNK ((size_t)32 << 20)

struct cu_upload {
    bool failed; /* pinned memory unavailable: always the direct path */
    cudaStream_t copy;
    cudaEvent_t order; /* recorded on the compute stream: the copy stream waits on it */
    cudaEvent_t last;  /* recorded on the copy stream: the compute stream waits on it */
    void *buf[CU_UP_NBUF];
    cudaEvent_t done[CU_UP_NBUF]; /* buf[i]'s DMA finished */
    bool busy[CU_UP_NBUF];
    int next;
};

static void up_destroy(cu_upload *u) {
    if (u->copy) cudaStreamSynchronize(u->copy);
    for (int i = 0; i < CU_UP_NBUF; i++) {
        if (u->buf[i]) cudaFreeHost(u->buf[i]);
        if (u->done[i]) cudaEventDestroy(u->done[i]);
        u->buf[i] = NULL;
        u->done[i] = NULL;
    }
    if (u->order) cudaEventDestroy(u->order);
    if (u->last) cudaEventDestroy(u->last);
    if (u->copy) cudaStreamDestroy(u->copy);
    u->order = u->last = NULL;
    u->copy = NULL;
    cudaGetLastError();
}

/* The ring, created on first use; NULL when it cannot be (then the caller
 * takes the direct path, and keeps taking it). */
static cu_upload *up_get(cu_backend *c) {
    if (!c->upload) {
        c->upload = (cu_upload *)hr_xcalloc(1, sizeof(cu_upload));
        /* HEARTH_CUDA_UPLOAD_RING=0: direct copies (comparisons) */
        if (!hr_env_on("HEARTH_CUDA_UPLOAD_RING", true)) c->upload->failed = true;
    }
    cu_upload *u = c->upload;
    if (u->failed) return NULL;
    if (u->copy) return u;
    bool ok = cudaSetDevice(c->device) == cudaSuccess &&
              cudaStreamCreateWithFlags(&u->copy, cudaStreamNonBlocking) == cudaSuccess &&
              cudaEventCreateWithFlags(&u->order, cudaEventDisableTiming) == cudaSuccess &&
              cudaEventCreateWithFlags(&u->last, cudaEventDisableTiming) == cudaSuccess;
    for (int i = 0; ok && i < CU_UP_NBUF; i++)
        ok = cudaHostAlloc(&u->buf[i], CU_UP_CHUNK, cudaHostAllocPortable) == cudaSuccess &&
             cudaEventCreateWithFlags(&u->done[i], cudaEventDisableTiming) == cudaSuccess;
    if (!ok) {
        HR_LOGW("cuda: no pinned upload staging (%s); weights are copied directly",
                cudaGetErrorString(cudaGetLastError()));
        up_destroy(u);
        u->failed = true;
        return NULL;
    }
    u->next = 0;
    return u;
}

void cu_upload_free(cu_backend *c) {
    if (!c->upload) return;
    up_destroy(c->upload);
    free(c->upload);
    c->upload = NULL;
}

/* The plain path: one async copy from the caller's memory, then a wait, so
 * the caller may reuse its memory on return. */
static int upload_direct(cu_backend *c, void *dst, const void *host, size_t n) {
    cudaError_t e = cudaMemcpyAsync(dst, host, n, cudaMemcpyHostToDevice, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    return e == cudaSuccess ? HR_OK : cu_fail(c, e, "tensor_set");
}

int cu_upload_h2d(cu_backend *c, void *dst, const void *host, size_t n) {
    if (n == 0) return HR_OK;
    bool ring = n >= CU_UPLOAD_MIN || (c->upload && c->upload->copy);
    cu_upload *u = ring ? up_get(c) : NULL;
    if (!u) return upload_direct(c, dst, host, n);
    cudaError_t e;
    if ((e = cudaEventRecord(u->order, c->stream)) != cudaSuccess ||
        (e = cudaStreamWaitEvent(u->copy, u->order, 0)) != cudaSuccess)
        return cu_fail(c, e, "upload ordering");
    const char *src = (const char *)host;
    char *d = (char *)dst;
    int rc = HR_OK;
    for (size_t off = 0; off < n; off += CU_UP_CHUNK) {
        size_t len = HR_MIN(CU_UP_CHUNK, n - off);
        int i = u->next;
        u->next = (u->next + 1) % CU_UP_NBUF;
        if (u->busy[i]) { /* the oldest chunk in flight: wait for its DMA */
            if ((e = cudaEventSynchronize(u->done[i])) != cudaSuccess) {
                rc = cu_fail(c, e, "upload staging wait");
                break;
            }
            u->busy[i] = false;
        }
        memcpy(u->buf[i], src + off, len);
        if ((e = cudaMemcpyAsync(d + off, u->buf[i], len, cudaMemcpyHostToDevice, u->copy)) != cudaSuccess ||
            (e = cudaEventRecord(u->done[i], u->copy)) != cudaSuccess) {
            rc = cu_fail(c, e, "upload copy");
            break;
        }
        u->busy[i] = true;
    }
    /* also after a failure: whatever was queued stays ordered before later work */
    if ((e = cudaEventRecord(u->last, u->copy)) != cudaSuccess ||
        (e = cudaStreamWaitEvent(c->stream, u->last, 0)) != cudaSuccess) {
        if (rc == HR_OK) rc = cu_fail(c, e, "upload ordering");
    }
    return rc;
}
