/* cmd_models.c - the model store from the command line: `meshllm list`, `meshllm show
 * NAME`, `meshllm rm NAME...` (node/modelstore.h; layout in docs/MODELS.md). show prints
 * the store's record then what `meshllm info` prints of the file (metadata, tensor types,
 * chat template). */
#include "cli/cli.h"

#include "core/err.h"
#include "node/modelstore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int help_or_misuse(const char *cmd, int argc, char **argv, const char *use,
                          int min_args, int max_args, bool *json)
{
    int n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(use, stdout);
            return -1;
        }
        if (json && !strcmp(argv[i], "--json")) {
            *json = true;
            continue;
        }
        if (argv[i][0] == '-') {
            cli_fail("%s: unknown option '%s' (try --help)", cmd, argv[i]);
            return 2;
        }
        n++;
    }
    if (n < min_args || n > max_args) {
        fputs(use, stderr);
        return 2;
    }
    return 0;
}

static void when_str(int64_t t, char *out, size_t cap)
{
    struct tm tm;
    time_t tt = (time_t)t;
    localtime_r(&tt, &tm);
    strftime(out, cap, "%Y-%m-%d %H:%M", &tm);
}

int cmd_list(int argc, char **argv)
{
    static const char use[] =
        "usage: meshllm list [--json]\n\n"
        "Lists the models in the store ($MESHLLM_MODELS, else ~/.meshllm/models): name,\n"
        "content ID (first 12 hex digits), size and when it was added.\n\n"
        "options:\n  --json       the manifests as a JSON array\n  -h, --help   this help\n";
    bool json = false;
    int rc = help_or_misuse("list", argc, argv, use, 0, 0, &json);
    if (rc) return rc < 0 ? 0 : rc;
    struct modelstore_manifest *v;
    int n;
    rc = modelstore_list(modelstore_dir(), &v, &n);
    if (rc) {
        cli_fail("list: cannot read %s: %s", modelstore_dir(), err_str(rc));
        return 1;
    }
    if (json) {
        printf("[");
        for (int i = 0; i < n; i++) {
            char *j = modelstore_manifest_json(&v[i]);
            printf("%s%s", i ? "," : "", j ? j : "null");
            free(j);
        }
        printf("]\n");
    } else {
        printf("%-40s %-12s %10s  %s\n", "NAME", "ID", "SIZE", "ADDED");
        for (int i = 0; i < n; i++) {
            char full[200], when[32];
            modelstore_full_name(&v[i], full, sizeof full);
            when_str(v[i].added, when, sizeof when);
            printf("%-40s %-12.12s %7.1f MB  %s\n", full, v[i].content_id,
                   (double)v[i].size / 1e6, when);
        }
    }
    free(v);
    return 0;
}

int cmd_show(int argc, char **argv)
{
    static const char use[] =
        "usage: meshllm show NAME[:TAG] [--kv]\n\n"
        "Prints a store model's record (source, size, SHA-256, content ID) and its\n"
        "metadata: architecture, hyper-parameters, tensor types, tokenizer, chat template.\n\n"
        "options:\n  --kv         also every metadata key\n  -h, --help   this help\n";
    bool kv = false;
    const char *name = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--kv")) kv = true;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(use, stdout);
            return 0;
        } else if (argv[i][0] == '-') {
            cli_fail("show: unknown option '%s' (try --help)", argv[i]);
            return 2;
        } else if (!name) name = argv[i];
        else {
            fputs(use, stderr);
            return 2;
        }
    }
    if (!name) {
        fputs(use, stderr);
        return 2;
    }
    struct modelstore_manifest m;
    char blob[4096], err[1024];
    if (modelstore_get(modelstore_dir(), name, &m, blob, sizeof blob, err, sizeof err)) {
        cli_fail("show: %s", err);
        return 1;
    }
    char when[32];
    when_str(m.added, when, sizeof when);
    printf("model:           %s:%s\nsource:          %s\nsize:            %llu bytes\n"
           "sha256:          %s\ncontent ID:      %s (BEP 52, %u-byte pieces)\n"
           "added:           %s\n",
           m.name, m.tag, m.source[0] ? m.source : "(unknown)", (unsigned long long)m.size,
           m.sha256, m.content_id, m.piece_len, when);
    fflush(stdout);
    char *iv[4] = {"info", blob, "--no-tensors", kv ? "--kv" : NULL};
    return cmd_info(kv ? 4 : 3, iv);
}

int cmd_rm(int argc, char **argv)
{
    static const char use[] =
        "usage: meshllm rm NAME[:TAG]...\n\n"
        "Removes models from the store; a file no other name uses is deleted.\n\n"
        "options:\n  -h, --help   this help\n";
    int rc = help_or_misuse("rm", argc, argv, use, 1, 1000, NULL);
    if (rc) return rc < 0 ? 0 : rc;
    int status = 0;
    for (int i = 1; i < argc; i++) {
        char err[1024];
        if (modelstore_remove(modelstore_dir(), argv[i], err, sizeof err)) {
            cli_fail("rm: %s", err);
            status = 1;
        } else {
            printf("deleted '%s'\n", argv[i]);
        }
    }
    return status;
}
