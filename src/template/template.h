/* Chat templates: a Jinja2 subset in C that renders Hugging Face chat
 * templates byte-for-byte as Python's jinja2 does (the subset that published
 * templates use). A template outside the subset fails with the line and the
 * construct named, never with wrong output. Knows nothing of tokenizers. */
#ifndef HEARTH_TEMPLATE_H
#define HEARTH_TEMPLATE_H

#include <jansson.h>
#include <stdbool.h>

#include "core/common.h"

typedef struct tpl_template tpl_template;

/* Parses a template source. NULL + err ("line N: ...") on a syntax error
 * (HR_EINVAL) or a construct outside the subset (HR_EUNSUP). */
tpl_template *tpl_parse(const char *source, hr_err *err);
void tpl_free(tpl_template *t);

/* Renders with the given context object (its keys become variables). Output
 * is malloc'd, NUL-terminated. raise_exception() -> HR_EINVAL with its
 * message; other errors jinja2 would raise -> HR_EINVAL "line N: ..."; what
 * the subset cannot do -> HR_EUNSUP "line N: unsupported ...". The template
 * is not modified, so several threads may render one parsed template. */
int tpl_render(const tpl_template *t, json_t *context, char **out, hr_err *err);

/* Convenience for chat, as transformers' apply_chat_template(tokenize=False)
 * renders: the context is {messages, tools (JSON null when NULL, so `tools
 * is defined` holds as in transformers), documents (null),
 * add_generation_prompt, bos_token / eos_token (left undefined when NULL),
 * + every key of extra (e.g. reasoning_effort, other special tokens)}.
 * A message's reasoning (reasoning_content / thinking / reasoning) is also
 * exposed under `thinking` and `reasoning_content`, as transformers does. */
int tpl_render_chat(const char *source, json_t *messages, json_t *tools, bool add_generation_prompt,
                    const char *bos_token, const char *eos_token, json_t *extra, char **out, hr_err *err);

#endif
