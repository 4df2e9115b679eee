/* test_api_http_guard.c - the HTTP server's security boundary and limits over raw loopback
 * sockets, with the server in-process on an ephemeral 127.0.0.1 port (stories260K): Host and
 * Origin checks, CORS, Content-Type, ambiguous lengths, half-closed clients, a stream nobody
 * reads, a trickled request, the per-address limit and the refusal counters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api/api_internal.h"
#include "node/registry.h"
#include "node/router.h"
#include "node/sched.h"
#include "tests/util/test_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STALL_MS 1000 /* a reader that reads nothing is cut after this */
#define DEADLINE_MS 800
#define PER_ADDRESS 4

static struct registry *reg;
static struct router *rt;
static struct http_server *srv;
static int port;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int setup(void **state)
{
    (void)state;
    struct sched_params sp;
    sched_params_default(&sp);
    sp.n_slots = 4;
    sp.n_threads = 1;
    char err[256];
    if (registry_new(&sp, &reg) || registry_add(reg, test_model_path("stories260K.gguf"), err,
                                                sizeof err) ||
        registry_load_wait(reg))
        return -1;
    struct router_config cfg = {.reg = reg};
    if (router_new(&cfg, &rt)) return -1;
    static const char *const hosts[] = {"node.lan"};
    static const char *const origins[] = {"http://app.example"};
    struct http_opts o = {
        .host = "127.0.0.1",
        .ollama_port = -1,
        .allowed_hosts = hosts,
        .n_allowed_hosts = 1,
        .cors_origins = origins,
        .n_cors_origins = 1,
        .max_conn_per_address = PER_ADDRESS,
        .request_deadline_ms = DEADLINE_MS,
        .stream_stall_ms = STALL_MS,
        .sndbuf_bytes = 4096, /* else loopback's send buffer grows to megabytes */
    };
    if (http_server_start(rt, &o, &srv, err, sizeof err)) return -1;
    port = http_server_port(srv);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    http_server_stop(srv);
    router_free(rt);
    registry_free(reg);
    return 0;
}

static int connect_lo(int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* Reads into out[cap] until the server closes, wait_ms pass, or a whole response with a
 * Content-Length is in. Returns the bytes read (NUL-terminated). */
static size_t read_reply(int fd, char *out, size_t cap, int wait_ms)
{
    size_t n = 0;
    int64_t end = now_ms() + wait_ms;
    while (n + 1 < cap) {
        int left = (int)(end - now_ms());
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, left) <= 0) break;
        ssize_t k = recv(fd, out + n, cap - 1 - n, 0);
        if (k <= 0) break;
        n += (size_t)k;
        out[n] = 0;
        const char *body = strstr(out, "\r\n\r\n");
        const char *cl = strcasestr(out, "\r\nContent-Length: ");
        if (body && cl && cl < body && (size_t)(out + n - (body + 4)) >= strtoul(cl + 18, NULL, 10))
            break;
    }
    out[n] = 0;
    return n;
}

/* Sends req on a new connection (half-closing it when asked) and returns the reply. */
static char *exchange(const char *req, bool half_close)
{
    static char buf[65536];
    int fd = connect_lo(0);
    assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    if (half_close) shutdown(fd, SHUT_WR);
    read_reply(fd, buf, sizeof buf, 10000);
    close(fd);
    return buf;
}

static char *post(const char *path, const char *headers, const char *body)
{
    static char req[8192];
    snprintf(req, sizeof req,
             "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Length: %zu\r\n\r\n%s", path,
             headers, strlen(body), body);
    return exchange(req, false);
}

static const char CHAT[] =
    "{\"model\":\"stories260K\",\"messages\":[{\"role\":\"user\",\"content\":\"Once\"}],"
    "\"max_tokens\":8,\"temperature\":0}";
static const char JSON_CT[] = "Content-Type: application/json\r\n";

static unsigned long long refused(enum api_refusal r)
{
    return (unsigned long long)atomic_load(&srv->n_refused[r]);
}

static void test_api_http_guard_half_close_gets_reply(void **state)
{
    (void)state;
    int other = connect_lo(0); /* the bug needed another connection open */
    char req[1024];
    snprintf(req, sizeof req,
             "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Length: %zu\r\n"
             "\r\n%s",
             JSON_CT, strlen(CHAT), CHAT);
    for (int i = 0; i < 3; i++) {
        char *r = exchange(req, true);
        assert_non_null(strstr(r, "HTTP/1.1 200 OK"));
        assert_non_null(strstr(r, "\"chat.completion\""));
    }
    close(other);
}

static void test_api_http_guard_ambiguous_length_400(void **state)
{
    (void)state;
    unsigned long long before = refused(API_REFUSED_BAD_LENGTH);
    char req[1024];
    snprintf(req, sizeof req,
             "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Length: %zu\r\n"
             "Content-Length: 5\r\n\r\n%s",
             JSON_CT, strlen(CHAT), CHAT);
    assert_non_null(strstr(exchange(req, false), "HTTP/1.1 400"));
    snprintf(req, sizeof req,
             "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n%sTransfer-Encoding: "
             "chunked\r\nContent-Length: 3\r\n\r\n%zx\r\n%s\r\n0\r\n\r\n",
             JSON_CT, strlen(CHAT), CHAT);
    char *r = exchange(req, false);
    assert_non_null(strstr(r, "HTTP/1.1 400"));
    assert_non_null(strstr(r, "bad_request_framing"));
    assert_int_equal(refused(API_REFUSED_BAD_LENGTH), before + 2);
}

static void test_api_http_guard_host(void **state)
{
    (void)state;
    unsigned long long before = refused(API_REFUSED_HOST);
    char *r = exchange("GET /v1/models HTTP/1.1\r\nHost: evil.example\r\n\r\n", false);
    assert_non_null(strstr(r, "HTTP/1.1 403"));
    assert_non_null(strstr(r, "--allowed-host"));
    assert_int_equal(refused(API_REFUSED_HOST), before + 1);
    assert_non_null(strstr(exchange("GET /v1/models HTTP/1.1\r\nHost: node.lan:9337\r\n\r\n", false),
                           "HTTP/1.1 200"));
    assert_non_null(strstr(exchange("GET /health HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", false),
                           "HTTP/1.1 200"));
    assert_non_null(strstr(exchange("GET /health HTTP/1.1\r\nHost: app.localhost\r\n\r\n", false),
                           "HTTP/1.1 200"));
}

static void test_api_http_guard_cross_site_post_refused(void **state)
{
    (void)state;
    unsigned long long gen_before = atomic_load(&srv->n_gen_req);
    char *r = post("/v1/chat/completions",
                   "Origin: http://evil.example\r\nContent-Type: text/plain\r\n", CHAT);
    assert_non_null(strstr(r, "HTTP/1.1 403"));
    assert_null(strstr(r, "Access-Control-Allow-Origin"));
    r = post("/v1/chat/completions", "Content-Type: text/plain\r\n", CHAT); /* no Origin */
    assert_non_null(strstr(r, "HTTP/1.1 415"));
    r = post("/api/generate", "", "{\"model\":\"stories260K\",\"prompt\":\"x\"}");
    assert_non_null(strstr(r, "HTTP/1.1 415"));
    assert_int_equal(atomic_load(&srv->n_gen_req), gen_before); /* nothing generated */
    r = post("/v1/chat/completions", "Content-Type: application/json; charset=utf-8\r\n", CHAT);
    assert_non_null(strstr(r, "HTTP/1.1 200"));
}

static void test_api_http_guard_cors(void **state)
{
    (void)state;
    char *r = exchange("OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       "Origin: http://app.example\r\nAccess-Control-Request-Method: POST\r\n\r\n",
                       false);
    assert_non_null(strstr(r, "HTTP/1.1 204"));
    assert_non_null(strstr(r, "Access-Control-Allow-Origin: http://app.example"));
    assert_non_null(strstr(r, "Vary: Origin"));
    assert_non_null(strstr(r, "Authorization, Content-Type"));
    assert_non_null(strstr(r, "X-Meshllm-Route"));
    r = post("/v1/chat/completions", "Origin: http://app.example\r\nContent-Type: application/json\r\n",
             CHAT);
    assert_non_null(strstr(r, "HTTP/1.1 200"));
    assert_non_null(strstr(r, "Access-Control-Allow-Origin: http://app.example"));
    /* the console: same origin */
    r = post("/v1/chat/completions", "Origin: http://127.0.0.1\r\nContent-Type: application/json\r\n",
             CHAT);
    assert_non_null(strstr(r, "HTTP/1.1 200"));
}

/* meshllm_generated_tokens_total summed over the models in /metrics */
static long long generated_tokens(void)
{
    char *r = exchange("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", false);
    long long sum = 0;
    for (const char *p = r; (p = strstr(p, "\nmeshllm_generated_tokens_total")); p++) {
        const char *v = strchr(p + 1, ' ');
        if (v) sum += strtoll(v + 1, NULL, 10);
    }
    return sum;
}

static void test_api_http_guard_stream_reader_bounded(void **state)
{
    (void)state;
    unsigned long long before = refused(API_REFUSED_SLOW_READER);
    long long gen0 = generated_tokens();
    /* greedy stories260K never ends this story before its context: 2000 tokens, each event
     * with 5 logprobs ~1 KB, far more than the sockets hold */
    static const char body[] =
        "{\"model\":\"stories260K\",\"prompt\":\"Once upon a time\",\"max_tokens\":2000,"
        "\"stream\":true,\"logprobs\":5,\"temperature\":0}";
    char req[1024];
    snprintf(req, sizeof req,
             "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Length: %zu\r\n\r\n%s",
             JSON_CT, strlen(body), body);
    int fd = connect_lo(2048);
    assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    /* the client reads nothing: the scheduler pauses the request, then the stall cuts it */
    for (int i = 0; i < 200 && refused(API_REFUSED_SLOW_READER) == before; i++) usleep(50000);
    assert_int_equal(refused(API_REFUSED_SLOW_READER), before + 1);
    long long gen = generated_tokens() - gen0;
    /* paused at SCHED_PAUSE_TOKENS untaken, plus what the stream buffer took in its last
     * take (at most as many again) and what the sockets held before they filled; without
     * the pause the model runs to 2000 long before the stall deadline */
    if (gen < SCHED_PAUSE_TOKENS || gen >= 2 * SCHED_PAUSE_TOKENS + 200)
        fail_msg("%lld tokens generated for a client that never read", gen);
    /* the connection was closed after what the sockets held */
    static char buf[1 << 20];
    read_reply(fd, buf, sizeof buf, 3000);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 2000), 1);
    assert_true(recv(fd, buf, sizeof buf, 0) <= 0);
    close(fd);
    /* the slot is free again: a reading client is served */
    assert_non_null(strstr(post("/v1/completions", JSON_CT,
                                "{\"model\":\"stories260K\",\"prompt\":\"x\",\"max_tokens\":4}"),
                           "HTTP/1.1 200"));
}

static void test_api_http_guard_trickle_cut_at_deadline(void **state)
{
    (void)state;
    unsigned long long before = refused(API_REFUSED_SLOW_REQUEST);
    int fd = connect_lo(0);
    static const char req[] = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaa";
    int64_t t0 = now_ms();
    bool closed = false;
    for (size_t i = 0; i < sizeof req - 1 && !closed; i++) {
        if (send(fd, req + i, 1, MSG_NOSIGNAL) != 1) closed = true;
        char b;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) > 0 && recv(fd, &b, 1, MSG_DONTWAIT) <= 0) closed = true;
    }
    int64_t dt = now_ms() - t0;
    assert_true(closed);
    assert_true(dt >= DEADLINE_MS && dt < DEADLINE_MS + 2000);
    assert_int_equal(refused(API_REFUSED_SLOW_REQUEST), before + 1);
    close(fd);
}

static void test_api_http_guard_per_address_limit(void **state)
{
    (void)state;
    unsigned long long before = refused(API_REFUSED_PER_ADDRESS);
    int fds[PER_ADDRESS];
    for (int i = 0; i < PER_ADDRESS; i++) fds[i] = connect_lo(0);
    usleep(100000); /* let MHD accept them */
    int extra = connect_lo(0);
    char b[64];
    struct pollfd p = {.fd = extra, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 2000), 1);
    assert_true(recv(extra, b, sizeof b, 0) <= 0); /* closed without a word */
    close(extra);
    assert_int_equal(refused(API_REFUSED_PER_ADDRESS), before + 1);
    for (int i = 0; i < PER_ADDRESS; i++) close(fds[i]);
    usleep(300000);
    assert_non_null(strstr(exchange("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", false),
                           "HTTP/1.1 200"));
}

static void test_api_http_guard_metrics_show_refusals(void **state)
{
    (void)state;
    char *r = exchange("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", false);
    assert_non_null(strstr(r, "# TYPE meshllm_http_refused_total counter"));
    static const char *const reasons[] = {"host",        "origin",       "content_type",
                                          "bad_length",  "per_address",  "slow_request",
                                          "slow_reader"};
    for (size_t i = 0; i < sizeof reasons / sizeof *reasons; i++) {
        char want[96];
        snprintf(want, sizeof want, "meshllm_http_refused_total{reason=\"%s\"} ", reasons[i]);
        assert_non_null(strstr(r, want));
    }
}

static void test_api_http_guard_rules(void **state)
{
    (void)state;
    struct api_guard g;
    static const char *const hosts[] = {"*.corp.example"};
    static const char *const origins[] = {"http://localhost:*"};
    assert_int_equal(api_guard_init(&g, "127.0.0.1", hosts, 1, origins, 1), 0);
    assert_true(api_guard_host_ok(&g, "localhost:9337"));
    assert_true(api_guard_host_ok(&g, "a.corp.example"));
    assert_false(api_guard_host_ok(&g, "corp.example.evil"));
    assert_false(api_guard_host_ok(&g, "192.168.1.5"));
    assert_int_equal(api_guard_origin(&g, "http://localhost:5173", "127.0.0.1:1"), API_ORIGIN_CORS);
    assert_int_equal(api_guard_origin(&g, "null", "127.0.0.1:1"), API_ORIGIN_REFUSED);
    assert_int_equal(api_guard_origin(&g, "http://127.0.0.1:1", "127.0.0.1:1"), API_ORIGIN_SAME);
    assert_int_equal(api_guard_origin(&g, NULL, "x"), API_ORIGIN_NONE);
    assert_int_equal(api_guard_init(&g, "0.0.0.0", NULL, 0, NULL, 0), 0);
    assert_true(api_guard_host_ok(&g, "anything.example"));
    /* bound to every address, only the exact same origin counts */
    assert_int_equal(api_guard_origin(&g, "http://localhost:3000", "10.0.0.2:9337"),
                     API_ORIGIN_REFUSED);
    assert_true(api_guard_json_type("Application/JSON ; charset=utf-8"));
    assert_false(api_guard_json_type("application/jsonx"));
    assert_false(api_guard_json_type("text/plain"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api_http_guard_rules),
        cmocka_unit_test(test_api_http_guard_half_close_gets_reply),
        cmocka_unit_test(test_api_http_guard_ambiguous_length_400),
        cmocka_unit_test(test_api_http_guard_host),
        cmocka_unit_test(test_api_http_guard_cross_site_post_refused),
        cmocka_unit_test(test_api_http_guard_cors),
        cmocka_unit_test(test_api_http_guard_stream_reader_bounded),
        cmocka_unit_test(test_api_http_guard_trickle_cut_at_deadline),
        cmocka_unit_test(test_api_http_guard_per_address_limit),
        cmocka_unit_test(test_api_http_guard_metrics_show_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
