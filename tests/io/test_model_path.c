/* Model path resolution: local dirs and .gguf files, and Hugging Face ids in a
 * fake HF cache built in a temp dir ($HF_HUB_CACHE / $HF_HOME / $HOME
 * precedence, refs, explicit revisions, GGUF-only snapshots, errors). */
#include <sys/stat.h>
#include <unistd.h>

#include "io/model_path.h"
#include "test.h"

static char g_root[256];

static void mkdirs(const char *path) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(buf, 0700);
            *p = '/';
        }
    mkdir(buf, 0700);
}

static void touch(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void fmt(char *buf, const char *f1, const char *f2) { snprintf(buf, 1024, "%s/%s", f1, f2); }

/* Creates <hub>/models--<mangled>/snapshots/<hash>/config.json and refs/<ref> -> hash. */
static void make_repo(const char *hub, const char *mangled, const char *ref, const char *hash) {
    char p[1024], q[1024];
    snprintf(p, sizeof p, "%s/models--%s/snapshots/%s", hub, mangled, hash);
    mkdirs(p);
    fmt(q, p, "config.json");
    touch(q, "{}");
    if (ref) {
        snprintf(p, sizeof p, "%s/models--%s/refs", hub, mangled);
        mkdirs(p);
        snprintf(q, sizeof q, "%s/%s", p, ref);
        char *slash = strrchr(q, '/'); /* refs like pr/1 need their folder */
        *slash = '\0';
        mkdirs(q);
        *slash = '/';
        char text[128];
        snprintf(text, sizeof text, "%s\n", hash);
        touch(q, text);
    }
}

static void expect_ok(const char *spec, const char *want) {
    char out[1024];
    hr_err err = {0};
    int rc = hr_model_path_resolve(spec, out, sizeof out, &err);
    CHECK_MSG(rc == HR_OK, "%s: %s", spec, err.msg);
    if (rc == HR_OK) CHECK_MSG(strcmp(out, want) == 0, "%s -> %s, want %s", spec, out, want);
}

static void expect_fail(const char *spec, int code, const char *want1, const char *want2) {
    char out[1024];
    hr_err err = {0};
    int rc = hr_model_path_resolve(spec, out, sizeof out, &err);
    CHECK_MSG(rc == code, "%s: rc %d, want %d", spec, rc, code);
    CHECK_MSG(strstr(err.msg, want1) != NULL, "%s: \"%s\" lacks \"%s\"", spec, err.msg, want1);
    if (want2) CHECK_MSG(strstr(err.msg, want2) != NULL, "%s: \"%s\" lacks \"%s\"", spec, err.msg, want2);
}

int main(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(g_root, sizeof g_root, "%s/hr_mp_XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(g_root)) return 2;
    char hub[1024], home[1024], hfhome[1024], p[1024], want[1024];
    fmt(hub, g_root, "hubcache");
    fmt(hfhome, g_root, "hfhome");
    fmt(home, g_root, "home");
    mkdirs(hub);
    unsetenv("XDG_CACHE_HOME");
    setenv("HF_HUB_CACHE", hub, 1);
    setenv("HF_HOME", hfhome, 1);
    setenv("HOME", home, 1);

    /* local directory and .gguf file are taken as given */
    expect_ok(g_root, g_root);
    fmt(p, g_root, "m.gguf");
    touch(p, "GGUF");
    expect_ok(p, p);
    fmt(p, g_root, "m.bin");
    touch(p, "x");
    expect_fail(p, HR_EINVAL, "not a .gguf", NULL);
    expect_fail("./no/such/dir", HR_ENOTFOUND, "no such file or directory", NULL);
    expect_fail("/abs/missing.gguf", HR_ENOTFOUND, "no such file or directory", NULL);
    expect_fail("", HR_EINVAL, "empty", NULL);

    /* refs/main */
    make_repo(hub, "org--model", "main", "abc123");
    make_repo(hub, "org--model", "v1.0", "def456");
    make_repo(hub, "org--model", "pr/7", "aaa777");
    snprintf(want, sizeof want, "%s/models--org--model/snapshots/abc123", hub);
    expect_ok("org/model", want);
    expect_ok("org/model@main", want);
    snprintf(want, sizeof want, "%s/models--org--model/snapshots/def456", hub);
    expect_ok("org/model@v1.0", want);
    expect_ok("org/model@def456", want); /* a commit hash directly */
    snprintf(want, sizeof want, "%s/models--org--model/snapshots/aaa777", hub);
    expect_ok("org/model@pr/7", want);
    expect_fail("org/model@nope", HR_ENOTFOUND, "no ref or snapshot 'nope'", hub);
    expect_fail("org/model@../../etc", HR_ENOTFOUND, "not a Hugging Face id", NULL);
    expect_fail("org/other", HR_ENOTFOUND, "models--org--other (no such directory)", "hf download org/other");
    expect_fail("org/other", HR_ENOTFOUND, "cache root from $HF_HUB_CACHE", NULL);
    expect_fail("a/b/c", HR_ENOTFOUND, "not a Hugging Face id", NULL);

    /* a ref pointing at a missing snapshot */
    make_repo(hub, "org--broken", NULL, "x1");
    snprintf(p, sizeof p, "%s/models--org--broken/refs", hub);
    mkdirs(p);
    fmt(want, p, "main");
    touch(want, "zzz");
    expect_fail("org/broken", HR_ENOTFOUND, "snapshot missing", NULL);

    /* no refs, one snapshot: used; two snapshots: ambiguous */
    make_repo(hub, "solo--one", NULL, "h1");
    snprintf(want, sizeof want, "%s/models--solo--one/snapshots/h1", hub);
    expect_ok("solo/one", want);
    make_repo(hub, "solo--one", NULL, "h2");
    expect_fail("solo/one", HR_ENOTFOUND, "no refs/main and 2 snapshots", NULL);

    /* ids without an org */
    make_repo(hub, "gpt2", "main", "c0ffee");
    snprintf(want, sizeof want, "%s/models--gpt2/snapshots/c0ffee", hub);
    expect_ok("gpt2", want);

    /* GGUF-only snapshot resolves to its single .gguf */
    snprintf(p, sizeof p, "%s/models--q--gguf/snapshots/h9", hub);
    mkdirs(p);
    fmt(want, p, "model-Q4_1.gguf");
    touch(want, "GGUF");
    expect_ok("q/gguf", want);

    /* precedence: $HF_HOME/hub when HF_HUB_CACHE is unset, then $HOME */
    unsetenv("HF_HUB_CACHE");
    char hub2[1024];
    fmt(hub2, hfhome, "hub");
    make_repo(hub2, "org--model", "main", "fromhfhome");
    snprintf(want, sizeof want, "%s/models--org--model/snapshots/fromhfhome", hub2);
    expect_ok("org/model", want);
    unsetenv("HF_HOME");
    char xdg[1024];
    fmt(xdg, g_root, "xdg");
    setenv("XDG_CACHE_HOME", xdg, 1);
    snprintf(hub2, sizeof hub2, "%s/huggingface/hub", xdg);
    make_repo(hub2, "org--model", "main", "fromxdg");
    snprintf(want, sizeof want, "%s/models--org--model/snapshots/fromxdg", hub2);
    expect_ok("org/model", want);
    unsetenv("XDG_CACHE_HOME");
    snprintf(hub2, sizeof hub2, "%s/.cache/huggingface/hub", home);
    make_repo(hub2, "org--model", "main", "fromhome");
    snprintf(want, sizeof want, "%s/models--org--model/snapshots/fromhome", hub2);
    expect_ok("org/model", want);
    expect_fail("org/absent", HR_ENOTFOUND, hub2, "no $HF_HUB_CACHE or $HF_HOME");

    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_root);
    return test_report("io/test_model_path");
}
