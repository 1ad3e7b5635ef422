/* Finds a model the way users have it: a local directory, a local .gguf file,
 * or a Hugging Face id ("org/name", optional "@revision") resolved in the HF
 * cache ($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub). */
#ifndef HEARTH_IO_MODEL_PATH_H
#define HEARTH_IO_MODEL_PATH_H

#include <stddef.h>

#include "core/common.h"

/* Writes the resolved directory (or .gguf file) into out. HR_ENOTFOUND with a
 * message listing where it looked. */
int hr_model_path_resolve(const char *spec, char *out, size_t out_len, hr_err *err);

#endif
