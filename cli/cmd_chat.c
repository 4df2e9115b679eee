/* cmd_chat.c - `meshllm chat MODEL.gguf`: an interactive chat in the terminal.
 *
 * Each turn renders the whole conversation with the model's chat template, reuses the KV
 * cache for the prefix that is unchanged since the last turn, and streams the reply.
 * When the context is full, the oldest turns (never the system prompt) are dropped.
 * Commands: /clear forgets the conversation, /exit (or Ctrl-D) quits.
 */
#include <stdio.h>

#include "cli/cli.h"
#include "cli/cli_opts.h"
#include "cli/cli_split.h"
#include "core/err.h"
#include "engine/chat.h"
#include "engine/gen.h"
#include "engine/model.h"
#include "engine/quant.h"
#include "engine/sampler.h"
#include "engine/tok.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { CHAT_MAX_MSGS = 1024 };

struct chat_state {
    struct model *m;
    struct model_ctx *c;
    struct sampler *s;
    struct sampler_params sp;   /* the user's sampling options */
    uint64_t seed0;             /* the seed of turn 0 (drawn from the OS if not given) */
    int n_turns;
    const struct tok *t;
    struct chat_setup tmpl;     /* the template family, EOS text, default system prompt */
    struct chat_msg msgs[CHAT_MAX_MSGS];
    char *owned[CHAT_MAX_MSGS]; /* message texts we allocated */
    int n_msgs;
    bool has_system;
    int32_t *cached;            /* tokens in sequence 0 of the KV cache */
    int n_cached;
    int32_t *ids;               /* scratch: the rendered conversation */
    int n_ctx;
    const char *stops[CLI_MAX_STOPS + 8];
    int n_stops;
    struct sched *sched;        /* a split model: turns run on its route's scheduler */
    char *reply;                /* the reply being streamed */
    size_t reply_len, reply_cap;
    bool tty;
};

static void chat_usage(FILE *f)
{
    fprintf(f, "usage: meshllm chat MODEL.gguf [options]\n\n"
               "Chat with the model in the terminal, using its chat template.\n"
               "Type a message and press Enter; end a line with \\ to continue it.\n"
               "/clear forgets the conversation; /exit or Ctrl-D quits.\n\n"
               "  -m, --model PATH       the model (or give it as the first argument)\n"
               "      --system TEXT      system prompt\n"
               "      --chat-template T  render with T instead of the model's own template:\n"
               "                         a .jinja file, a built-in Jinja template (");
    for (int i = 0; chat_builtin_names[i]; i++) fprintf(f, "%s%s", i ? ", " : "", chat_builtin_names[i]);
    fprintf(f, ")\n                         or a family:");
    for (int t = CHAT_TMPL_UNKNOWN + 1; t < CHAT_TMPL_COUNT_; t++)
        fprintf(f, " %s", chat_tmpl_name((enum chat_tmpl)t));
    fprintf(f, "\n");
    cli_gen_opts_help(f);
    cli_mesh_opts_help(f);
}

static int add_msg(struct chat_state *st, const char *role, const char *text)
{
    if (st->n_msgs >= CHAT_MAX_MSGS) return MESH_EFULL;
    char *copy = strdup(text);
    if (!copy) return MESH_ENOMEM;
    st->owned[st->n_msgs] = copy;
    st->msgs[st->n_msgs].role = role;
    st->msgs[st->n_msgs].content = copy;
    st->n_msgs++;
    return 0;
}

/* Drops the oldest user+assistant pair after the system prompt. */
static bool drop_oldest_turn(struct chat_state *st)
{
    int first = st->has_system ? 1 : 0;
    if (st->n_msgs - first < 3) return false; /* keep at least the current question */
    int n_drop = 2;
    for (int i = first; i < first + n_drop; i++) free(st->owned[i]);
    memmove(&st->msgs[first], &st->msgs[first + n_drop], (size_t)(st->n_msgs - first - n_drop) * sizeof st->msgs[0]);
    memmove(&st->owned[first], &st->owned[first + n_drop], (size_t)(st->n_msgs - first - n_drop) * sizeof st->owned[0]);
    st->n_msgs -= n_drop;
    return true;
}

/* Ctrl-C stops the reply being generated (the conversation stays); at the prompt it quits. */
static volatile sig_atomic_t g_interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

static int emit_reply(void *user, const char *text, int len)
{
    struct chat_state *st = user;
    if (g_interrupted) return 1;
    fwrite(text, 1, (size_t)len, stdout);
    fflush(stdout);
    if (st->reply_len + (size_t)len + 1 > st->reply_cap) {
        size_t cap = (st->reply_len + (size_t)len + 1) * 2;
        char *nb = realloc(st->reply, cap);
        if (!nb) return 1;
        st->reply = nb;
        st->reply_cap = cap;
    }
    memcpy(st->reply + st->reply_len, text, (size_t)len);
    st->reply_len += (size_t)len;
    st->reply[st->reply_len] = 0;
    return 0;
}

/* Renders msgs[0..n_msgs) with the template and tokenizes it into st->ids. Returns the
 * token count if it leaves reserve tokens of the context free, MESH_EFULL if not, or
 * another negative code. */
static int render_msgs(struct chat_state *st, const struct chat_msg *msgs, int n_msgs,
                       int reserve)
{
    char *text = NULL;
    int rc = chat_setup_render(&st->tmpl, msgs, (size_t)n_msgs, true, &text);
    if (rc < 0) return rc;
    int n = 0;
    rc = tok_encode(st->t, text, strlen(text), true, true, st->ids, st->n_ctx, &n);
    free(text);
    if (rc < 0 && rc != MESH_ERANGE) return rc;
    if (rc == 0 && n + reserve <= st->n_ctx) return n;
    return MESH_EFULL;
}

/* Renders and tokenizes the conversation into st->ids; drops old turns until the prompt
 * leaves room for a reply. A message that would not fit even alone (after the system
 * prompt) gets MESH_EFULL before any turn is dropped, so the history survives it.
 * Returns the token count or a negative code. */
static int render(struct chat_state *st, int reserve)
{
    int n = render_msgs(st, st->msgs, st->n_msgs, reserve);
    if (n != MESH_EFULL) return n;
    struct chat_msg alone[2];
    int n_alone = 0;
    if (st->has_system) alone[n_alone++] = st->msgs[0];
    alone[n_alone++] = st->msgs[st->n_msgs - 1];
    n = render_msgs(st, alone, n_alone, reserve);
    if (n < 0) return n;
    for (;;) {
        if (!drop_oldest_turn(st)) return MESH_EFULL;
        fprintf(stderr, "meshllm: context full: forgetting the oldest turn\n");
        n = render_msgs(st, st->msgs, st->n_msgs, reserve);
        if (n != MESH_EFULL) return n;
    }
}

static int emit_sched(void *user, const char *text, size_t len, const int32_t *ids, int n_ids)
{
    (void)ids;
    (void)n_ids;
    return len ? emit_reply(user, text, (int)len) : g_interrupted;
}

/* A turn on a split model's scheduler (cli_split.h): it reuses the slot's cached prefix
 * itself; the seed of turn k is seed + k as in chat_turn. */
static int chat_turn_sched(struct chat_state *st, const struct cli_gen_opts *o, int n)
{
    struct sched_gen_params gp;
    sched_gen_params_default(&gp);
    gp.sp = st->sp;
    gp.sp.seed = st->seed0 + (uint64_t)st->n_turns;
    if (gp.sp.seed == SAMPLER_SEED_RANDOM) gp.sp.seed = 0;
    gp.max_tokens = o->n_predict > 0 ? o->n_predict : st->n_ctx - n;
    for (int i = 0; i < st->n_stops && gp.n_stop < SCHED_MAX_STOP; i++)
        gp.stop[gp.n_stop++] = st->stops[i];
    gp.strip_leading_space = true;
    st->n_turns++;
    st->reply_len = 0;
    if (st->reply) st->reply[0] = 0;
    struct cli_sched_result res;
    int rc = cli_sched_generate(st->sched, st->ids, n, &gp, emit_sched, st, &res);
    if (rc < 0) return rc;
    if (!strcmp(res.finish, "error")) {
        fputc('\n', stdout);
        cli_fail("chat: generation failed: a stage of the route failed and no member "
                 "replaces it");
        return MESH_EIO;
    }
    fputc('\n', stdout);
    if (o->verbose) {
        double gen_ms = res.t_first_ms ? res.t_end_ms - res.t_first_ms : 0;
        fprintf(stderr, "meshllm: %d prompt tokens, %d generated, %.1f tok/s\n", n, res.n_gen,
                gen_ms > 0 && res.n_gen > 1 ? (res.n_gen - 1) * 1000.0 / gen_ms : 0.0);
    }
    return add_msg(st, "assistant", st->reply ? st->reply : "");
}

static int chat_turn(struct chat_state *st, const struct cli_gen_opts *o)
{
    int reserve = o->n_predict > 0 ? o->n_predict : st->n_ctx / 4;
    if (reserve > st->n_ctx / 2) reserve = st->n_ctx / 2;
    int n = render(st, reserve);
    if (n < 0) return n;
    if (st->sched) return chat_turn_sched(st, o, n);
    /* Reuse the cache for the prefix that did not change. */
    int same = 0;
    while (same < n && same < st->n_cached && st->ids[same] == st->cached[same]) same++;
    if (same == n) same = n - 1; /* the last prompt token must be decoded to get logits */
    model_kv_seq_truncate(st->c, 0, same);
    st->n_cached = same;
    /* A fresh penalty window over this prompt, and the next turn's random stream: turn k
     * draws with seed + k, so replies vary from turn to turn yet replay for a given seed
     * (sampler_reset would restart the same stream every turn). */
    if (st->n_turns > 0) {
        struct sampler_params sp = st->sp;
        sp.seed = st->seed0 + (uint64_t)st->n_turns;
        if (sp.seed == SAMPLER_SEED_RANDOM) sp.seed = 0;
        struct sampler *ns = NULL;
        int src = sampler_new(&sp, model_hparams(st->m)->n_vocab, &ns);
        if (src < 0) return src;
        sampler_free(st->s);
        st->s = ns;
    }
    st->n_turns++;
    for (int i = 0; i < n; i++) sampler_accept(st->s, st->ids[i]);
    st->reply_len = 0;
    if (st->reply) st->reply[0] = 0;
    struct gen_opts go = {.n_predict = o->n_predict > 0 ? o->n_predict : st->n_ctx - n,
                          .stops = st->stops, .n_stops = st->n_stops,
                          .strip_leading_space = true};
    struct gen_result res;
    int32_t *gen_ids = st->cached + n;
    memcpy(st->cached + same, st->ids + same, (size_t)(n - same) * sizeof(int32_t));
    int rc = gen_run(st->c, st->s, st->t, st->ids + same, n - same, &go, emit_reply, st, gen_ids,
                     st->n_ctx - n, &res);
    if (rc < 0) return rc;
    /* Sequence 0 now holds the prompt and every generated token but a final EOG. */
    st->n_cached = model_kv_seq_len(st->c, 0);
    fputc('\n', stdout);
    if (o->verbose)
        fprintf(stderr, "meshllm: %d new prompt tokens (%d reused from the cache), %d generated, %.1f tok/s\n",
                n - same, same, res.n_gen, res.gen_ms > 0 ? res.n_gen * 1000.0 / res.gen_ms : 0.0);
    return add_msg(st, "assistant", st->reply ? st->reply : "");
}

/* Reads one message (lines ending in '\' continue). NULL at EOF. */
static char *read_message(bool tty)
{
    size_t cap = 256, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    if (tty) fputs("> ", stderr);
    for (;;) {
        int ch = fgetc(stdin);
        if (ch == EOF) {
            if (n == 0) {
                free(buf);
                return NULL;
            }
            break;
        }
        if (ch == '\n') {
            if (n > 0 && buf[n - 1] == '\\') {
                buf[n - 1] = '\n';
                if (tty) fputs(". ", stderr);
                continue;
            }
            break;
        }
        if (n + 2 > cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
        buf[n++] = (char)ch;
    }
    buf[n] = 0;
    return buf;
}

int cmd_chat(int argc, char **argv)
{
    struct cli_gen_opts o;
    cli_gen_opts_default(&o);
    const char *model_path = NULL, *system = NULL, *tmpl_name = NULL;
    struct cli_mesh_opts mo;
    cli_mesh_opts_default(&mo);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r = cli_gen_opts_parse(&o, argc, argv, &i);
        if (r == 0) r = cli_mesh_opts_parse(&mo, "chat", argc, argv, &i);
        if (r == 2) return 2;
        if (r == 1) continue;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            chat_usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && i + 1 < argc) {
            if (model_path) {
                cli_fail("chat: give one model");
                return 2;
            }
            model_path = argv[++i];
        } else if ((!strcmp(a, "--system") || !strcmp(a, "--chat-template")) && i + 1 < argc) {
            if (a[2] == 's') system = argv[++i];
            else tmpl_name = argv[++i];
        } else if (a[0] == '-') {
            cli_fail("chat: unknown option or missing value '%s' (see 'meshllm chat --help')", a);
            return 2;
        } else if (!model_path) {
            model_path = a;
        } else {
            cli_fail("chat: unexpected argument '%s'", a);
            return 2;
        }
    }
    if (!model_path) {
        chat_usage(stderr);
        return 2;
    }
    struct chat_state st;
    memset(&st, 0, sizeof st);
    st.tty = isatty(STDIN_FILENO);
    int status = 1;
    if (o.spec.draft_path || (o.spec.has_mode && o.spec.mode != SPEC_OFF)) {
        cli_fail("chat: speculative decoding (--spec, --draft) is for run and serve only");
        return 2;
    }
    if (mo.accept_stages) {
        cli_fail("chat: --accept-stages is for serve (a node that stays up for others)");
        return 2;
    }
    if (mo.auto_split && !mo.has_layers && !mo.mesh_fit) {
        cli_fail("chat: --auto-split needs --layers or --mesh (which layers stay here)");
        return 2;
    }
    quant_init();
    struct cli_split cs;
    bool is_split = false;
    struct sched_params spp;
    sched_params_default(&spp);
    spp.n_slots = 1;
    spp.queue_cap = 1;
    spp.n_ctx = o.n_ctx;
    spp.n_threads = o.n_threads;
    spp.k_type = o.k_type;
    spp.v_type = o.v_type;
    if (o.n_batch) spp.n_batch = o.n_batch;
    if ((status = cli_split_open(&cs, "chat", model_path, &mo, &spp, o.verbose, &is_split)))
        return status;
    status = 1;
    if (is_split) {
        struct sched_stats ss;
        st.sched = cs.e->sched;
        st.m = cs.e->model;
        sched_stats(st.sched, &ss);
        st.n_ctx = ss.n_ctx;
    } else {
        if (cli_load_model(model_path, &o, 1, &st.m, &st.c) < 0) goto done;
        st.n_ctx = model_ctx_n_ctx(st.c);
    }
    st.t = model_tok(st.m);
    /* Render as the model's own template does: its EOS text between turns (llama-2,
     * mistral, zephyr) and the default system prompt it inserts (Qwen2). */
    if (chat_setup_init(&st.tmpl, model_chat_template(st.m), st.t, tmpl_name) < 0) {
        status = 2; /* chat_setup_init said which names exist, or why the file failed */
        goto done;
    }
    for (int i = 0; i < o.n_stops; i++) st.stops[st.n_stops++] = o.stops[i];
    for (const char *const *sp = chat_tmpl_stops(st.tmpl.tmpl); sp && *sp && st.n_stops < CLI_MAX_STOPS + 8; sp++)
        st.stops[st.n_stops++] = *sp;
    st.cached = malloc((size_t)st.n_ctx * sizeof(int32_t));
    st.ids = malloc((size_t)st.n_ctx * sizeof(int32_t));
    if (!st.cached || !st.ids) {
        cli_fail("chat: out of memory");
        goto done;
    }
    if (sampler_new(&o.sp, model_hparams(st.m)->n_vocab, &st.s) < 0) {
        cli_fail("chat: invalid sampling parameters");
        status = 2;
        goto done;
    }
    st.sp = o.sp;
    st.seed0 = sampler_seed(st.s);
    if (system && add_msg(&st, "system", system) == 0) st.has_system = true;
    char tdesc[200];
    if (st.tty)
        fprintf(stderr, "meshllm: chatting with %s (template %s, context %d). /exit to quit.\n",
                model_path, chat_setup_describe(&st.tmpl, tdesc, sizeof tdesc), st.n_ctx);
    /* no SA_RESTART: a Ctrl-C at the prompt interrupts the read, which then quits */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    for (;;) {
        g_interrupted = 0;
        char *line = read_message(st.tty);
        if (!line) break;
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) {
            free(line);
            break;
        }
        if (!strcmp(line, "/clear")) {
            free(line);
            for (int i = st.has_system ? 1 : 0; i < st.n_msgs; i++) free(st.owned[i]);
            st.n_msgs = st.has_system ? 1 : 0;
            continue;
        }
        if (!line[0]) {
            free(line);
            continue;
        }
        /* Room for this message and its reply in the message table. */
        if (st.n_msgs + 2 > CHAT_MAX_MSGS) drop_oldest_turn(&st);
        int rc = add_msg(&st, "user", line);
        free(line);
        if (rc < 0) {
            cli_fail("chat: %s", err_str(rc));
            goto done;
        }
        rc = chat_turn(&st, &o);
        if (rc == MESH_EFULL) { /* render() kept the history; forget only this message */
            fprintf(stderr, "meshllm: that message does not fit the context of %d tokens; "
                            "use /clear or a larger --ctx\n", st.n_ctx);
            st.n_msgs--;
            free(st.owned[st.n_msgs]);
            continue;
        }
        if (rc < 0) {
            cli_fail("chat: %s", err_str(rc));
            goto done;
        }
    }
    status = 0;
done:
    chat_setup_free(&st.tmpl);
    for (int i = 0; i < st.n_msgs; i++) free(st.owned[i]);
    free(st.reply);
    free(st.cached);
    free(st.ids);
    sampler_free(st.s);
    model_ctx_free(st.c);
    if (is_split) cli_split_close(&cs);
    else model_free(st.m);
    return status;
}
