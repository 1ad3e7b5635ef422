/* Private to src/io: a read-only memory mapping of a whole file, shared by the
 * safetensors and GGUF readers. Not part of the module's public interface. */
#ifndef HEARTH_IO_MAPPED_H
#define HEARTH_IO_MAPPED_H

#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

typedef struct io_mapped {
    const uint8_t *base; /* NULL for an empty file */
    size_t size;
} io_mapped;

/* Maps path read-only (MAP_PRIVATE). An empty file maps to base == NULL, size 0.
 * HR_ENOTFOUND / HR_EIO with "path: reason" in err. */
int io_map_file(const char *path, io_mapped *m, hr_err *err);
void io_unmap(io_mapped *m);

#endif
