/* main.c - the meshllm program: a table of subcommands (see cli.h). */
#include "cli/cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#ifndef MESHLLM_VERSION
#define MESHLLM_VERSION "0.1.0"
#endif

static int cmd_version(int argc, char **argv);

static const struct cli_cmd g_cmds[] = {
    {"run", "generate text from a prompt", cmd_run},
    {"chat", "chat with a model in the terminal", cmd_chat},
    {"bench", "measure prompt and generation speed", cmd_bench},
    {"serve", "serve the OpenAI/Ollama API and the web console", cmd_serve},
    {"id", "print this node's peer ID (creates its key on first use)", cmd_id},
    {"peers", "list the peers of a running 'serve --p2p' node", cmd_peers},
    {"mesh", "create this node's private mesh, or show its membership", cmd_mesh},
    {"invite", "print a token that lets another device join the mesh", cmd_invite},
    {"join", "join the mesh of an invite token (its inviter must be running)", cmd_join},
    {"status", "show a running node: its mesh, its peers and where each model runs", cmd_status},
    {"route", "show the stages a running node would use for a split model", cmd_route},
    {"revoke", "remove a peer (and those it invited) from the mesh (owner only)", cmd_revoke},
    {"version", "print the version", cmd_version},
    {"pull", "download a GGUF model into the model store (https:// or hf:OWNER/REPO/FILE)", cmd_pull},
    {"list", "list the models in the model store", cmd_list},
    {"show", "show a store model: its record, metadata and chat template", cmd_show},
    {"rm", "remove models from the model store", cmd_rm},
    {"info", "show a model file's metadata and tensors", cmd_info},
    {"perplexity", "measure a model's perplexity on a text (and KL divergence from a base)", cmd_perplexity},
    {"quantize", "convert a model to another weight type (Q4_K_M, Q8_0, ...)", cmd_quantize},
    {"template", "render a chat template (.jinja or a model's) with a JSON conversation", cmd_template},
    {"tokenize", "print the token ids of standard input", cmd_tokenize},
    {"detokenize", "print the text of token ids from standard input", cmd_detokenize},
};

static const int g_n_cmds = (int)(sizeof g_cmds / sizeof g_cmds[0]);

void cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("meshllm: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("meshllm %s\n", MESHLLM_VERSION);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: meshllm COMMAND [ARGS...]\n\n"
               "Private AI on the devices you own.\n\ncommands:\n");
    for (int i = 0; i < g_n_cmds; i++) fprintf(f, "  %-12s %s\n", g_cmds[i].name, g_cmds[i].summary);
    fprintf(f, "\nRun 'meshllm COMMAND --help' for the options of a command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) return cmd_version(0, NULL);
    for (int i = 0; i < g_n_cmds; i++)
        if (!strcmp(argv[1], g_cmds[i].name)) return g_cmds[i].run(argc - 1, argv + 1);
    cli_fail("unknown command '%s' (try 'meshllm --help')", argv[1]);
    return 2;
}
