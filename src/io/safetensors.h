/* Safetensors checkpoints: memory-mapped, header validated (offsets in range,
 * sizes == dtype x shape, no overlaps, header size sane). A model directory
 * may be one model.safetensors or shards listed in model.safetensors.index.json;
 * st_set presents them as one tensor namespace. Owns the mappings; tensor data
 * pointers stay valid until st_set_close(). Knows nothing of models. */
#ifndef HEARTH_IO_SAFETENSORS_H
#define HEARTH_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/common.h"
#include "core/dtype.h"

#define ST_MAX_DIMS 8

typedef struct st_tensor {
    const char *name;
    hr_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;   /* into the mapping; element-aligned only if the writer padded the
                           header (the Python writer pads to 8): copy or read bytewise */
    size_t nbytes;
    const char *file;   /* path of the file holding it */
} st_tensor;

typedef struct st_file st_file;   /* one .safetensors file */
typedef struct st_set st_set;     /* all tensors of a checkpoint directory */

st_file *st_file_open(const char *path, hr_err *err);
void st_file_close(st_file *f);
int st_file_count(const st_file *f);
const st_tensor *st_file_tensor(const st_file *f, int i);
const st_tensor *st_file_find(const st_file *f, const char *name);
/* __metadata__ value for key, or NULL. */
const char *st_file_metadata(const st_file *f, const char *key);

/* Opens dir/model.safetensors.index.json (sharded) or dir/model.safetensors or,
 * failing both, every *.safetensors in dir. */
st_set *st_set_open_dir(const char *dir, hr_err *err);
void st_set_close(st_set *s);
int st_set_count(const st_set *s);
const st_tensor *st_set_tensor(const st_set *s, int i);
const st_tensor *st_set_find(const st_set *s, const char *name); /* NULL if absent */

#endif
