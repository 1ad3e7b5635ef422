/* GGUF v2/v3 files (llama.cpp): metadata key/values, tensor infos, alignment,
 * memory-mapped data, and dequantization of F32, F16, BF16, Q8_0, Q4_0, Q4_1,
 * Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K to float32. Validates every
 * offset and size against the file. Knows nothing of models. */
#ifndef HEARTH_IO_GGUF_H
#define HEARTH_IO_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

typedef enum {
    GGUF_TYPE_UINT8 = 0, GGUF_TYPE_INT8 = 1, GGUF_TYPE_UINT16 = 2, GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4, GGUF_TYPE_INT32 = 5, GGUF_TYPE_FLOAT32 = 6, GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8, GGUF_TYPE_ARRAY = 9, GGUF_TYPE_UINT64 = 10, GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
} gguf_type;

/* ggml tensor types (numbering as in ggml.h). */
typedef enum {
    GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q5_0 = 6, GGML_Q5_1 = 7,
    GGML_Q8_0 = 8, GGML_Q8_1 = 9, GGML_Q2_K = 10, GGML_Q3_K = 11, GGML_Q4_K = 12, GGML_Q5_K = 13,
    GGML_Q6_K = 14, GGML_Q8_K = 15, GGML_BF16 = 30,
} ggml_type;

typedef struct gguf_str { uint64_t len; const char *ptr; } gguf_str; /* not NUL-terminated */

typedef struct gguf_kv {
    char *key;              /* NUL-terminated copy */
    gguf_type type;
    gguf_type arr_type;     /* for arrays */
    uint64_t arr_len;
    const void *arr_data;   /* arrays of numbers: into the mapping, maybe unaligned (use gguf_get_arr_int/float);
                               of strings: see gguf_get_arr_str; of arrays: the raw nested encoding */
    const gguf_str *arr_strs; /* string arrays: arr_len entries (owned by the gguf_file) */
    union { uint64_t u64; int64_t i64; double f64; bool b; gguf_str str; } v;
} gguf_kv;

typedef struct gguf_tensor {
    char *name;
    int ndim;
    int64_t ne[4];          /* ggml order: ne[0] is the contiguous dimension */
    ggml_type type;
    uint64_t offset;        /* relative to data section */
    const void *data;
    size_t nbytes;
} gguf_tensor;

typedef struct gguf_file gguf_file;

gguf_file *gguf_open(const char *path, hr_err *err);
void gguf_close(gguf_file *f);
uint32_t gguf_version(const gguf_file *f);
uint32_t gguf_alignment(const gguf_file *f);     /* general.alignment, default 32 */
size_t gguf_data_offset(const gguf_file *f);     /* file offset of the data section */
int gguf_n_kv(const gguf_file *f);
const gguf_kv *gguf_kv_at(const gguf_file *f, int i);
const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key);
/* Typed getters: return def when absent or of an incompatible type. */
int64_t gguf_get_int(const gguf_file *f, const char *key, int64_t def);
double gguf_get_float(const gguf_file *f, const char *key, double def);
bool gguf_get_bool(const gguf_file *f, const char *key, bool def);
/* Returns a malloc'd NUL-terminated copy, or NULL when absent. */
char *gguf_get_str(const gguf_file *f, const char *key);
/* i-th string of a string array (not NUL-terminated); {0, NULL} when out of range. */
gguf_str gguf_get_arr_str(const gguf_kv *kv, uint64_t i);
/* i-th element of an integer (or bool) array / a numeric array; def when kv is
 * not such an array or i is out of range. */
int64_t gguf_get_arr_int(const gguf_kv *kv, uint64_t i, int64_t def);
double gguf_get_arr_float(const gguf_kv *kv, uint64_t i, double def);

int gguf_n_tensors(const gguf_file *f);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, int i);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);
int64_t gguf_tensor_nelem(const gguf_tensor *t);

/* Dequantizes a whole tensor into dst (nelem floats). HR_EUNSUP for other types. */
int gguf_dequantize(const gguf_tensor *t, float *dst, hr_err *err);
/* Dequantizes n elements of a row-contiguous block stream of type `type`
 * (n a multiple of the type's block size), exactly as ggml's reference
 * dequantize_row_* does. HR_EUNSUP for types without a dequantizer,
 * HR_EINVAL for a partial block. */
int ggml_dequantize_row(ggml_type type, const void *src, float *dst, int64_t n);
/* Elements per block and bytes per block (0, 0 for unknown types). */
int ggml_blck_size(ggml_type type);
size_t ggml_type_size(ggml_type type);
const char *ggml_type_name(ggml_type type);

#endif
