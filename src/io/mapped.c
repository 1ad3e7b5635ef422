#include "io/mapped.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int io_map_file(const char *path, io_mapped *m, hr_err *err) {
    m->base = NULL;
    m->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return hr_err_set(err, errno == ENOENT ? HR_ENOTFOUND : HR_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    int rc = HR_OK;
    if (fstat(fd, &st) != 0) {
        rc = hr_err_set(err, HR_EIO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = hr_err_set(err, HR_EIO, "%s: not a regular file", path);
        goto fail;
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            rc = hr_err_set(err, HR_EIO, "%s: mmap: %s", path, strerror(errno));
            goto fail;
        }
        m->base = p;
        m->size = (size_t)st.st_size;
    }
fail:
    close(fd); /* the mapping stays valid after close */
    return rc;
}

void io_unmap(io_mapped *m) {
    if (m->base) munmap((void *)m->base, m->size);
    m->base = NULL;
    m->size = 0;
}
