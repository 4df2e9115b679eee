/* cmd_tokenize.c - `meshllm tokenize MODEL.gguf [--raw]` and `meshllm detokenize MODEL.gguf`.
 *
 * Both read only the GGUF metadata and build the tokenizer (engine/tok), so vocab-only
 * files work. tokenize reads all of stdin as exact bytes and prints the ids on one line,
 * space-separated; without --raw it tokenizes as `run` does (BOS etc. per the model,
 * special-token texts such as <|im_start|> parsed). detokenize reads whitespace-separated
 * ids and writes the exact bytes of their pieces, so `tokenize --raw | detokenize` gives
 * back the input (the SentencePiece dummy-prefix space is removed).
 */
#include "cli/cli.h"

#include "core/err.h"
#include "engine/gguf.h"
#include "engine/tok.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void tokenize_usage(FILE *f)
{
    fprintf(f, "usage: meshllm tokenize MODEL.gguf [--raw] < TEXT\n\n"
               "Reads all of standard input as bytes and prints its token ids on one line.\n\n"
               "options:\n"
               "  --raw        no BOS/EOS and no special-token parsing (text only)\n"
               "  -h, --help   this help\n");
}

static void detokenize_usage(FILE *f)
{
    fprintf(f, "usage: meshllm detokenize MODEL.gguf [--special] [--keep-space] < IDS\n\n"
               "Reads whitespace-separated token ids and writes their text, byte for byte.\n\n"
               "options:\n"
               "  --special      also write control tokens (<s>, <|im_end|>, ...) as text\n"
               "  --keep-space   keep the leading space SentencePiece models add\n"
               "  -h, --help     this help\n");
}

/* Reads all of stdin into a malloc'd buffer (NUL-terminated, not counted in *len). */
static char *read_stdin(size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) break;
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, stdin);
        n += r;
        if (r == 0) {
            if (ferror(stdin)) break;
            buf[n] = '\0';
            *len = n;
            return buf;
        }
    }
    free(buf);
    return NULL;
}

static int load_tok(const char *path, struct tok **t)
{
    struct gguf *g = NULL;
    char err[512] = "";
    int rc = gguf_open(path, &g, err, sizeof err);
    if (rc) {
        cli_fail("%s: %s", path, err[0] ? err : err_str(rc));
        return 1;
    }
    rc = tok_load(g, t, err, sizeof err);
    gguf_close(g);
    if (rc) {
        cli_fail("%s: tokenizer: %s", path, err[0] ? err : err_str(rc));
        return 1;
    }
    return 0;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *path = NULL;
    bool raw = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            tokenize_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--raw")) {
            raw = true;
        } else if (argv[i][0] == '-' || path) {
            cli_fail("tokenize: unexpected argument '%s'", argv[i]);
            tokenize_usage(stderr);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        tokenize_usage(stderr);
        return 2;
    }
    struct tok *t = NULL;
    if (load_tok(path, &t)) return 1;
    size_t len = 0;
    int32_t *ids = NULL;
    int status = 1, n = 0;
    char *text = read_stdin(&len);
    if (!text) {
        cli_fail("tokenize: cannot read standard input: %s", strerror(errno));
        goto done;
    }
    int cap = len < (size_t)1 << 28 ? (int)len + 8 : 0, rc = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        free(ids);
        ids = malloc(((size_t)cap + 1) * sizeof *ids);
        if (!ids) {
            cli_fail("tokenize: out of memory");
            goto done;
        }
        rc = tok_encode(t, text, len, !raw, !raw, ids, cap, &n);
        if (rc != MESH_ERANGE || n <= cap) break;
        cap = n;
    }
    if (rc) {
        cli_fail("tokenize: %s", err_str(rc));
        goto done;
    }
    for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    status = fflush(stdout) ? 1 : 0;
    if (status) cli_fail("tokenize: cannot write the output");
done:
    free(ids);
    free(text);
    tok_free(t);
    return status;
}

int cmd_detokenize(int argc, char **argv)
{
    const char *path = NULL;
    bool special = false, keep_space = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            detokenize_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--special")) {
            special = true;
        } else if (!strcmp(argv[i], "--keep-space")) {
            keep_space = true;
        } else if (argv[i][0] == '-' || path) {
            cli_fail("detokenize: unexpected argument '%s'", argv[i]);
            detokenize_usage(stderr);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        detokenize_usage(stderr);
        return 2;
    }
    struct tok *t = NULL;
    if (load_tok(path, &t)) return 1;
    size_t len = 0, n = 0;
    int32_t *ids = NULL;
    char *out = NULL;
    int status = 1;
    char *text = read_stdin(&len);
    if (!text) {
        cli_fail("detokenize: cannot read standard input: %s", strerror(errno));
        goto done;
    }
    ids = malloc((len / 2 + 1) * sizeof *ids); /* each id takes a digit and a separator */
    if (!ids) {
        cli_fail("detokenize: out of memory");
        goto done;
    }
    for (char *p = text + strspn(text, " \t\r\n"); *p; p += strspn(p, " \t\r\n")) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        size_t tl = strcspn(p, " \t\r\n");
        if (end != p + tl || errno || v < 0 || v >= tok_n_vocab(t)) {
            cli_fail("detokenize: '%.*s' is not a token id of this model (0..%d)",
                     (int)(tl > 40 ? 40 : tl), p, tok_n_vocab(t) - 1);
            goto done;
        }
        ids[n++] = (int32_t)v;
        p = end;
    }
    int need = tok_decode(t, ids, (int)n, !keep_space, special, NULL, 0);
    if (need < 0) {
        cli_fail("detokenize: %s", err_str(need));
        goto done;
    }
    out = malloc((size_t)need + 1);
    if (!out) {
        cli_fail("detokenize: out of memory");
        goto done;
    }
    tok_decode(t, ids, (int)n, !keep_space, special, out, (size_t)need + 1);
    if (fwrite(out, 1, (size_t)need, stdout) != (size_t)need || fflush(stdout)) {
        cli_fail("detokenize: cannot write the output");
        goto done;
    }
    status = 0;
done:
    free(out);
    free(ids);
    free(text);
    tok_free(t);
    return status;
}
