/* bench_template.c - chat template rendering time of a 50-turn conversation with tools.
 *
 * Usage: bench_template [TEMPLATE_DIR [N_ITERS]]  (defaults: tests/data/templates, 200)
 * For each family template with tools (Qwen 2.5, Llama 3.1, Mistral v3, Hermes 2 Pro,
 * DeepSeek R1) it parses once, then renders the same conversation N times through the
 * path the server uses (chat_setup_render_tools: JSON context, interpreter, BOS strip) and
 * prints the median and 90th percentile per render, the median parse time and the prompt
 * size.
 * The conversation: a system prompt, 3 tools, 50 user/assistant turns where every fifth
 * assistant turn is a tool call answered by a tool message and a reply. Not a test: nothing asserted.
 */
#include "engine/chat.h"
#include "engine/jinja.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

static const char g_tools[] =
    "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": "
    "\"Get the current weather in a city.\", \"parameters\": {\"type\": \"object\", "
    "\"properties\": {\"city\": {\"type\": \"string\", \"description\": \"City name\"}, "
    "\"unit\": {\"type\": \"string\", \"enum\": [\"celsius\", \"fahrenheit\"], \"description\": "
    "\"Unit\"}}, \"required\": [\"city\"]}}}, {\"type\": \"function\", \"function\": {\"name\": "
    "\"web_search\", \"description\": \"Search the web.\", \"parameters\": {\"type\": \"object\", "
    "\"properties\": {\"query\": {\"type\": \"string\", \"description\": \"Query\"}, \"n\": "
    "{\"type\": \"integer\", \"description\": \"Results\"}}, \"required\": [\"query\"]}}}, "
    "{\"type\": \"function\", \"function\": {\"name\": \"get_time\", \"description\": \"Now.\", "
    "\"parameters\": {\"type\": \"object\", \"properties\": {}}}}]";

enum { N_TURNS = 50, N_MSGS = 1 + 2 * N_TURNS + 2 * (N_TURNS / 5) + 1 };

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "tests/data/templates";
    int iters = argc > 2 ? atoi(argv[2]) : 200;
    if (iters < 1) iters = 1;
    static const char *const fams[] = {"qwen2.5", "llama3.1", "mistral-v3", "hermes2pro",
                                       "deepseek-r1"};
    static struct chat_msg msgs[N_MSGS];
    static struct chat_msg_tools mt[N_MSGS];
    static char text[N_MSGS][160];
    size_t n = 0;
    msgs[n++] = (struct chat_msg){"system", "You are a helpful assistant that uses tools when useful."};
    for (int i = 0; i < N_TURNS; i++) {
        snprintf(text[n], sizeof text[n], "Question %d: what is the weather in city number %d, and why?", i, i);
        msgs[n] = (struct chat_msg){"user", text[n]};
        n++;
        if (i % 5 == 4) { /* a tool call and its answer */
            snprintf(text[n], sizeof text[n], "[{\"id\": \"call%05d\", \"type\": \"function\", "
                     "\"function\": {\"name\": \"get_weather\", \"arguments\": "
                     "\"{\\\"city\\\": \\\"City %d\\\"}\"}}]", i, i);
            msgs[n] = (struct chat_msg){"assistant", NULL};
            mt[n].tool_calls_json = text[n];
            n++;
            msgs[n] = (struct chat_msg){"tool", "{\"temperature\": 21, \"sky\": \"clear\"}"};
            mt[n].tool_call_id = "call00004";
            n++;
            msgs[n++] = (struct chat_msg){"assistant", "It is 21 degrees and clear."};
        } else {
            snprintf(text[n], sizeof text[n], "Answer %d: it is sunny with a light breeze, about 20 degrees.", i);
            msgs[n] = (struct chat_msg){"assistant", text[n]};
            n++;
        }
    }
    msgs[n++] = (struct chat_msg){"user", "Thanks. One more: what about tomorrow?"};
    double *t = malloc((size_t)iters * sizeof *t);
    if (!t) return 1;
    printf("%zu messages, 3 tools, %d renders each\n\n", n, iters);
    printf("| template | parse ms | render median ms | p90 ms | prompt bytes |\n|---|---:|---:|---:|---:|\n");
    for (size_t f = 0; f < sizeof fams / sizeof fams[0]; f++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s.jinja", dir, fams[f]);
        char *src = read_file(path);
        if (!src) {
            fprintf(stderr, "bench_template: cannot read %s\n", path);
            return 1;
        }
        int n_parse = iters < 51 ? iters : 51;
        for (int i = 0; i < n_parse; i++) { /* parse time: median of up to 51 */
            double p0 = now_ms();
            struct jinja_tmpl *jt = NULL;
            struct jinja_error je;
            if (jinja_parse(src, strlen(src), &jt, &je)) {
                fprintf(stderr, "bench_template: %s: %d:%d: %s\n", path, je.line, je.col, je.msg);
                return 1;
            }
            t[i] = now_ms() - p0;
            jinja_free(jt);
        }
        qsort(t, (size_t)n_parse, sizeof *t, cmp_d);
        double parse_ms = t[n_parse / 2];
        struct chat_setup s;
        if (chat_setup_init(&s, NULL, NULL, path) || !s.jinja) {
            fprintf(stderr, "bench_template: %s does not set up\n", path);
            return 1;
        }
        size_t bytes = 0;
        int ok = 1;
        for (int i = 0; i < iters; i++) {
            char *out = NULL;
            double t0 = now_ms();
            int rc = chat_setup_render_tools(&s, msgs, mt, n, g_tools, true, &out);
            t[i] = now_ms() - t0;
            if (rc) ok = 0;
            bytes = out ? strlen(out) : 0;
            free(out);
        }
        qsort(t, (size_t)iters, sizeof *t, cmp_d);
        printf("| %s | %.3f | %.3f | %.3f | %zu%s |\n", fams[f], parse_ms, t[iters / 2],
               t[iters * 9 / 10], bytes, ok ? "" : " (render failed)");
        chat_setup_free(&s);
        free(src);
    }
    free(t);
    return 0;
}
