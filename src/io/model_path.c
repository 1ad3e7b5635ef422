/* Model location resolution. The HF cache layout (huggingface_hub):
 *   <hub>/models--<org>--<name>/refs/<ref>          text file holding a commit hash
 *   <hub>/models--<org>--<name>/snapshots/<commit>/ the files of that revision
 * <hub> is $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub,
 * else ~/.cache/huggingface/hub. Nothing is downloaded here. */
#include "io/model_path.h"

#include <ctype.h>
#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static int copy_out(char *out, size_t out_len, const char *s, hr_err *err) {
    if (strlen(s) >= out_len) return hr_err_set(err, HR_EINVAL, "model path too long: %s", s);
    strcpy(out, s);
    return HR_OK;
}

/* The hub cache root, per huggingface_hub's precedence; returns what chose it. */
static const char *hub_root(char *buf, size_t n) {
    const char *v;
    if ((v = getenv("HF_HUB_CACHE")) && *v) {
        snprintf(buf, n, "%s", v);
        return "$HF_HUB_CACHE";
    }
    if ((v = getenv("HF_HOME")) && *v) {
        snprintf(buf, n, "%s/hub", v);
        return "$HF_HOME/hub";
    }
    if ((v = getenv("XDG_CACHE_HOME")) && *v) {
        snprintf(buf, n, "%s/huggingface/hub", v);
        return "$XDG_CACHE_HOME/huggingface/hub";
    }
    snprintf(buf, n, "%s/.cache/huggingface/hub", (v = getenv("HOME")) && *v ? v : ".");
    return "~/.cache/huggingface/hub, as no $HF_HUB_CACHE or $HF_HOME is set";
}

/* A repo id is "name" or "org/name": letters, digits, '-', '_', '.', no "..". */
static int valid_repo_id(const char *id) {
    int slashes = 0;
    if (!*id || id[0] == '/' || id[0] == '.' || strstr(id, "..")) return 0;
    for (const char *p = id; *p; p++) {
        if (*p == '/')
            slashes++;
        else if (!isalnum((unsigned char)*p) && !strchr("-_.", *p))
            return 0;
    }
    return slashes <= 1 && !ends_with(id, "/");
}

/* Reads refs/<ref> into hash (trimmed); 0 on success. */
static int read_ref(const char *path, char *hash, size_t n) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t got = fread(hash, 1, n - 1, f);
    fclose(f);
    hash[got] = '\0';
    while (got && isspace((unsigned char)hash[got - 1])) hash[--got] = '\0';
    if (!got || strchr(hash, '/') || strstr(hash, "..")) return -1;
    return 0;
}

/* A GGUF repo snapshot has no config.json: return its only .gguf file. */
static void prefer_single_gguf(char *out, size_t out_len) {
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", out);
    if (is_file(p)) return;
    DIR *d = opendir(out);
    if (!d) return;
    char found[1024] = "";
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (ends_with(de->d_name, ".gguf") && de->d_name[0] != '.') {
            n++;
            snprintf(found, sizeof found, "%s", de->d_name);
        }
    closedir(d);
    if (n == 1 && strlen(out) + 1 + strlen(found) < out_len && strlen(out) + 1 + strlen(found) < sizeof p) {
        snprintf(p, sizeof p, "%s/%s", out, found);
        strcpy(out, p);
    }
}

/* Resolves "org/name[@rev]" in one hub root. Returns HR_OK, or HR_ENOTFOUND
 * with `tried` describing what was looked at. */
static int resolve_in_hub(const char *hub, const char *id, const char *rev, char *out, size_t out_len, char *tried,
                          size_t tried_len) {
    char repo[4096], p[4096], hash[256];
    char mangled[1024];
    snprintf(mangled, sizeof mangled, "%s", id);
    /* huggingface_hub: "models--" + repo_id with "/" replaced by "--" */
    char name[1100] = "models--";
    for (const char *s = mangled; *s; s++) {
        size_t l = strlen(name);
        if (*s == '/')
            snprintf(name + l, sizeof name - l, "--");
        else if (l + 1 < sizeof name)
            name[l] = *s, name[l + 1] = '\0';
    }
    snprintf(repo, sizeof repo, "%s/%s", hub, name);
    if (!is_dir(repo)) {
        snprintf(tried, tried_len, "%s (no such directory)", repo);
        return HR_ENOTFOUND;
    }
    const char *want = rev ? rev : "main";
    snprintf(p, sizeof p, "%s/refs/%s", repo, want);
    if (read_ref(p, hash, sizeof hash) == 0) {
        snprintf(p, sizeof p, "%s/snapshots/%s", repo, hash);
        if (is_dir(p)) goto found;
        snprintf(tried, tried_len, "%s (ref '%s' -> %s, snapshot missing)", repo, want, hash);
        return HR_ENOTFOUND;
    }
    /* a commit hash given directly */
    if (rev) {
        snprintf(p, sizeof p, "%s/snapshots/%s", repo, rev);
        if (is_dir(p)) goto found;
        snprintf(tried, tried_len, "%s (no ref or snapshot '%s')", repo, rev);
        return HR_ENOTFOUND;
    }
    /* no refs/main (e.g. a cache filled by hand): accept a single snapshot */
    snprintf(p, sizeof p, "%s/snapshots", repo);
    DIR *d = opendir(p);
    int n = 0;
    char only[512] = "";
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.') {
            n++;
            snprintf(only, sizeof only, "%s", de->d_name);
        }
    if (d) closedir(d);
    if (n == 1) {
        snprintf(p, sizeof p, "%s/snapshots/%s", repo, only);
        if (is_dir(p)) goto found;
    }
    snprintf(tried, tried_len, "%s (no refs/main and %d snapshots)", repo, n);
    return HR_ENOTFOUND;
found:
    if (strlen(p) >= out_len) return HR_EINVAL;
    strcpy(out, p);
    prefer_single_gguf(out, out_len);
    return HR_OK;
}

int hr_model_path_resolve(const char *spec, char *out, size_t out_len, hr_err *err) {
    if (!spec || !*spec) return hr_err_set(err, HR_EINVAL, "empty model path");
    if (is_dir(spec)) return copy_out(out, out_len, spec, err);
    if (is_file(spec)) {
        if (ends_with(spec, ".gguf")) return copy_out(out, out_len, spec, err);
        return hr_err_set(err, HR_EINVAL, "%s: a file but not a .gguf; give the model directory instead", spec);
    }
    /* Looks like a path (or a .gguf), not an id: say so rather than search the cache. */
    char id[1024];
    snprintf(id, sizeof id, "%s", spec);
    char *at = strchr(id, '@');
    const char *rev = NULL;
    if (at) {
        *at = '\0';
        rev = at + 1;
    }
    if (!valid_repo_id(id) || (rev && (!*rev || strstr(rev, "..") || rev[0] == '/')) || ends_with(spec, ".gguf"))
        return hr_err_set(err, HR_ENOTFOUND,
                          "model '%s' not found: no such file or directory (and not a Hugging Face id)", spec);
    char hub[2048], tried[3000];
    const char *why = hub_root(hub, sizeof hub);
    int rc = resolve_in_hub(hub, id, rev, out, out_len, tried, sizeof tried);
    if (rc == HR_OK) return HR_OK;
    if (rc != HR_ENOTFOUND) return hr_err_set(err, rc, "model '%s': resolved path too long", spec);
    return hr_err_set(err, HR_ENOTFOUND,
                      "model '%s' not found: not a local path, and not in the Hugging Face cache: %s "
                      "(cache root from %s; hearth does not download: fetch it with `hf download %s`)",
                      spec, tried, why, id);
}
