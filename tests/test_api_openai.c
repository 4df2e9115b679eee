/* test_api_openai.c - api/openai.c and api/ollama.c: request validation (defaults, ranges,
 * error status/param), error JSON shape, response and chunk objects, UTF-8 cleaning. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api/api_internal.h"
#include "api/openai.h"
#include "core/err.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse(enum api_kind k, const char *body, struct api_gen_req *r, struct api_error *e)
{
    return api_openai_parse(k, body, strlen(body), r, e);
}

/* Expects a 400 naming param. */
static void expect_bad(enum api_kind k, const char *body, const char *param)
{
    struct api_gen_req r;
    struct api_error e;
    int rc = parse(k, body, &r, &e);
    if (rc != MESH_EINVAL) fail_msg("accepted: %s", body);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.type, "invalid_request_error");
    assert_string_equal(e.param, param);
    assert_true(strlen(e.message) > 0);
    assert_null(r.msgs);
}

static void test_api_openai_chat_defaults(void **state)
{
    (void)state;
    struct api_gen_req r;
    struct api_error e;
    assert_int_equal(parse(API_KIND_CHAT,
                           "{\"model\":\"m\",\"messages\":[{\"role\":\"developer\",\"content\":\"be "
                           "nice\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a"
                           "\"},{\"type\":\"text\",\"text\":\"b\"}]},{\"role\":\"assistant\","
                           "\"content\":null}],\"future_field\":{}}",
                           &r, &e),
                     0);
    assert_string_equal(r.model, "m");
    assert_int_equal(r.n_msgs, 3);
    assert_string_equal(r.msgs[0].role, "system");
    assert_string_equal(r.msgs[1].content, "ab");
    assert_string_equal(r.msgs[2].content, "");
    assert_false(r.stream);
    assert_int_equal(r.max_tokens, -1);
    assert_true(r.temperature == 1.0f && r.top_p == 1.0f);
    assert_true(r.repeat_penalty == 1.0f && r.top_k == 0 && r.min_p == 0);
    assert_false(r.has_seed);
    assert_int_equal(r.n_stop, 0);
    assert_false(r.logprobs);
    api_gen_req_free(&r);
}

static void test_api_openai_chat_fields(void **state)
{
    (void)state;
    struct api_gen_req r;
    struct api_error e;
    assert_int_equal(parse(API_KIND_CHAT,
                           "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                           "\"stream\":true,\"stream_options\":{\"include_usage\":true},"
                           "\"max_tokens\":5,\"max_completion_tokens\":7,\"temperature\":0,"
                           "\"top_p\":0.5,\"seed\":42,\"stop\":[\"a\",\"\",\"b\"],"
                           "\"presence_penalty\":-2,\"frequency_penalty\":2,\"n\":1,"
                           "\"logprobs\":true,\"top_logprobs\":20,"
                           "\"response_format\":{\"type\":\"json_object\"}}",
                           &r, &e),
                     0);
    assert_true(r.stream && r.include_usage);
    assert_int_equal(r.max_tokens, 7);
    assert_true(r.temperature == 0.0f && r.top_p == 0.5f);
    assert_true(r.has_seed);
    assert_int_equal(r.seed, 42);
    assert_int_equal(r.n_stop, 2);
    assert_string_equal(r.stop[1], "b");
    assert_true(r.presence_penalty == -2.0f && r.frequency_penalty == 2.0f);
    assert_true(r.logprobs);
    assert_int_equal(r.top_logprobs, 20);
    assert_true(r.json_mode);
    api_gen_req_free(&r);
    assert_int_equal(parse(API_KIND_CHAT,
                           "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                           "\"stop\":\"END\"}",
                           &r, &e),
                     0);
    assert_int_equal(r.n_stop, 1);
    assert_string_equal(r.stop[0], "END");
    api_gen_req_free(&r);
    /* some clients always send top_logprobs 0 */
    assert_int_equal(parse(API_KIND_CHAT,
                           "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                           "\"top_logprobs\":0,\"stream_options\":null,\"tools\":[]}",
                           &r, &e),
                     0);
    assert_false(r.logprobs);
    api_gen_req_free(&r);
}

#define MSG_ONE "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]"
/* serve --temp/--top-k/...: the server's defaults fill only what the request left out, and
 * a request without "model" goes to the server's default model (model ""). */
static void test_api_openai_server_defaults(void **state)
{
    (void)state;
    struct api_gen_req r;
    struct api_error e;
    struct api_sampling_defaults d;
    api_sampling_defaults_init(&d);
    assert_int_equal(parse(API_KIND_CHAT, "{" MSG_ONE ",\"temperature\":0.5,\"top_k\":7}", &r, &e), 0);
    assert_string_equal(r.model, "");
    assert_int_equal(r.given, API_GIVEN_TEMPERATURE | API_GIVEN_TOP_K);
    api_sampling_defaults_apply(&d, &r); /* nothing set: nothing changes */
    assert_true(r.temperature == 0.5f && r.top_k == 7 && r.top_p == 1.0f && r.max_tokens == -1);
    d.temperature = 0.2f;
    d.top_k = 40;
    d.top_p = 0.9f;
    d.min_p = 0.05f;
    d.repeat_penalty = 1.1f;
    d.max_tokens = 16;
    api_sampling_defaults_apply(&d, &r);
    assert_true(r.temperature == 0.5f && r.top_k == 7);      /* the request's own */
    assert_true(r.top_p == 0.9f && r.min_p == 0.05f && r.repeat_penalty == 1.1f);
    assert_int_equal(r.max_tokens, 16);
    api_gen_req_free(&r);
    assert_int_equal(parse(API_KIND_COMPLETION,
                           "{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":3,\"top_p\":1,"
                           "\"min_p\":0,\"repeat_penalty\":1}",
                           &r, &e),
                     0);
    api_sampling_defaults_apply(&d, &r);
    assert_true(r.temperature == 0.2f && r.top_k == 40); /* left out: the server's */
    assert_true(r.top_p == 1.0f && r.min_p == 0.0f && r.repeat_penalty == 1.0f);
    assert_int_equal(r.max_tokens, 3);
    api_gen_req_free(&r);
}

static void test_api_openai_rejects_bad_fields(void **state)
{
    (void)state;
    const enum api_kind C = API_KIND_CHAT;
#define MSG "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]"
    expect_bad(C, "", "");
    expect_bad(C, "{", "");
    expect_bad(C, "[1,2]", "");
    expect_bad(C, "{\"messages\":[]}", "messages"); /* model may be left out */
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"top_k\":-1}", "top_k");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"min_p\":2}", "min_p");
    expect_bad(C, "{\"model\":7," MSG "}", "model");
    expect_bad(C, "{\"model\":\"m\"}", "messages");
    expect_bad(C, "{\"model\":\"m\",\"messages\":[]}", "messages");
    expect_bad(C, "{\"model\":\"m\",\"messages\":{}}", "messages");
    expect_bad(C, "{\"model\":\"m\",\"messages\":[1]}", "messages[0].role");
    expect_bad(C, "{\"model\":\"m\",\"messages\":[{\"role\":\"x\",\"content\":\"y\"}]}", "messages[0].role");
    expect_bad(C, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages[0].content");
    expect_bad(C, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
               "messages[0].content");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"temperature\":2.5}", "temperature");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"temperature\":\"hot\"}", "temperature");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"top_p\":-0.1}", "top_p");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"presence_penalty\":3}", "presence_penalty");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"frequency_penalty\":-3}", "frequency_penalty");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"max_tokens\":0}", "max_tokens");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"max_tokens\":1.5}", "max_tokens");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"max_completion_tokens\":-1}", "max_completion_tokens");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"n\":17}", "n");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"n\":0}", "n");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"n\":2,\"stream\":true}", "n");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"seed\":0.5}", "seed");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"stop\":[1]}", "stop");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"stream\":\"yes\"}", "stream");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"stream_options\":{\"include_usage\":true}}", "stream_options");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"top_logprobs\":2}", "top_logprobs");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"logprobs\":true,\"top_logprobs\":21}", "top_logprobs");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"response_format\":{\"type\":\"xml\"}}", "response_format.type");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"tools\":[{\"type\":\"function\"}]}", "tools[0]");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"tools\":{}}", "tools");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"tools\":[{\"type\":\"function\",\"function\":"
                  "{\"name\":\"a b\"}}]}", "tools[0]");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"tools\":[{\"function\":{\"name\":\"f\"}},"
                  "{\"function\":{\"name\":\"f\"}}]}", "tools[1]");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"tools\":[{\"function\":{\"name\":\"f\","
                  "\"parameters\":[]}}]}", "tools[0]");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"tool_choice\":\"required\"}", "tool_choice");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"tools\":[{\"function\":{\"name\":\"f\"}}],"
                  "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"g\"}}}", "tool_choice");
    expect_bad(C, "{\"model\":\"m\"," MSG ",\"tool_choice\":\"always\"}", "tool_choice");
    expect_bad(API_KIND_COMPLETION, "{\"model\":\"m\"}", "prompt");
    expect_bad(API_KIND_COMPLETION, "{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}", "prompt");
    expect_bad(API_KIND_COMPLETION, "{\"model\":\"m\",\"prompt\":[1,2]}", "prompt");
    expect_bad(API_KIND_COMPLETION, "{\"model\":\"m\",\"prompt\":\"a\",\"logprobs\":6}", "logprobs");
    expect_bad(API_KIND_COMPLETION, "{\"model\":\"m\",\"prompt\":\"a\",\"best_of\":2}", "best_of");
    expect_bad(API_KIND_COMPLETION, "{\"model\":\"m\",\"prompt\":\"a\",\"echo\":true,\"stream\":true}", "echo");
    expect_bad(API_KIND_EMBEDDING, "{\"model\":\"m\"}", "input");
    expect_bad(API_KIND_EMBEDDING, "{\"model\":\"m\",\"input\":[]}", "input");
    expect_bad(API_KIND_EMBEDDING, "{\"model\":\"m\",\"input\":\"\"}", "input");
    expect_bad(API_KIND_EMBEDDING, "{\"model\":\"m\",\"input\":[[1,2]]}", "input");
    expect_bad(API_KIND_EMBEDDING, "{\"model\":\"m\",\"input\":\"a\",\"encoding_format\":\"hex\"}", "encoding_format");
#undef MSG
}

static void test_api_openai_completion_and_embedding(void **state)
{
    (void)state;
    struct api_gen_req r;
    struct api_error e;
    assert_int_equal(parse(API_KIND_COMPLETION,
                           "{\"model\":\"m\",\"prompt\":[\"Once\"],\"logprobs\":2,\"echo\":true}", &r, &e),
                     0);
    assert_string_equal(r.prompt, "Once");
    assert_int_equal(r.max_tokens, 16); /* the completions API's default */
    assert_true(r.logprobs);
    assert_int_equal(r.top_logprobs, 2);
    assert_true(r.echo);
    api_gen_req_free(&r);
    assert_int_equal(parse(API_KIND_EMBEDDING,
                           "{\"model\":\"m\",\"input\":[\"a\",\"b\"],\"encoding_format\":\"base64\"}",
                           &r, &e),
                     0);
    assert_int_equal(r.n_inputs, 2);
    assert_string_equal(r.inputs[1], "b");
    assert_true(r.echo); /* base64 output */
    api_gen_req_free(&r);
}

static void test_api_openai_error_json_shape(void **state)
{
    (void)state;
    struct api_error e;
    api_error_set(&e, 404, "invalid_request_error", "model_not_found", NULL, "no %s", "model");
    char *s = api_error_json(&e);
    cJSON *j = cJSON_Parse(s);
    cJSON *o = cJSON_GetObjectItem(j, "error");
    assert_string_equal(cJSON_GetObjectItem(o, "message")->valuestring, "no model");
    assert_string_equal(cJSON_GetObjectItem(o, "type")->valuestring, "invalid_request_error");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "param")));
    assert_string_equal(cJSON_GetObjectItem(o, "code")->valuestring, "model_not_found");
    cJSON_Delete(j);
    free(s);
    api_error_set(&e, 400, "invalid_request_error", NULL, "temperature", "x");
    s = api_error_json(&e);
    j = cJSON_Parse(s);
    o = cJSON_GetObjectItem(j, "error");
    assert_string_equal(cJSON_GetObjectItem(o, "param")->valuestring, "temperature");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "code")));
    cJSON_Delete(j);
    free(s);
}

static void test_api_openai_response_objects(void **state)
{
    (void)state;
    struct api_lp_token lp[2];
    memset(lp, 0, sizeof lp);
    lp[0].tok = (struct api_lp_entry){" Hi", 3, -0.5f};
    lp[0].n_top = 2;
    lp[0].top[0] = (struct api_lp_entry){" Hi", 3, -0.5f};
    lp[0].top[1] = (struct api_lp_entry){" Yo", 3, -1.5f};
    lp[1].tok = (struct api_lp_entry){"\xE2\x82", 2, -0.1f}; /* half a character */
    struct api_gen_out o = {.id = "chatcmpl-1", .created = 7, .model = "m", .text = "a\xFF" "b",
                            .len = 3, .finish_reason = "stop", .n_prompt = 4, .n_completion = 2,
                            .lps = lp, .n_lps = 2};
    char *s = api_openai_response_json(API_KIND_CHAT, &o);
    cJSON *j = cJSON_Parse(s);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring, "chat.completion");
    cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    cJSON *m = cJSON_GetObjectItem(c, "message");
    assert_string_equal(cJSON_GetObjectItem(m, "role")->valuestring, "assistant");
    assert_string_equal(cJSON_GetObjectItem(m, "content")->valuestring, "a\xEF\xBF\xBD" "b");
    assert_string_equal(cJSON_GetObjectItem(c, "finish_reason")->valuestring, "stop");
    cJSON *content = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "logprobs"), "content");
    assert_int_equal(cJSON_GetArraySize(content), 2);
    cJSON *t0 = cJSON_GetArrayItem(content, 0);
    assert_string_equal(cJSON_GetObjectItem(t0, "token")->valuestring, " Hi");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(t0, "top_logprobs")), 2);
    cJSON *t1 = cJSON_GetArrayItem(content, 1);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(t1, "bytes")), 2);
    assert_int_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(t1, "bytes"), 0)->valueint, 0xE2);
    cJSON *u = cJSON_GetObjectItem(j, "usage");
    assert_int_equal(cJSON_GetObjectItem(u, "total_tokens")->valueint, 6);
    cJSON_Delete(j);
    free(s);

    /* completions: text + the legacy logprobs layout */
    s = api_openai_response_json(API_KIND_COMPLETION, &o);
    j = cJSON_Parse(s);
    c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring, "text_completion");
    assert_non_null(cJSON_GetObjectItem(c, "text"));
    cJSON *l = cJSON_GetObjectItem(c, "logprobs");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(l, "tokens")), 2);
    assert_int_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(l, "text_offset"), 1)->valueint, 3);
    cJSON_Delete(j);
    free(s);

    /* stream chunks: first carries the role; the usage chunk has no choices */
    o.lps = NULL;
    o.finish_reason = NULL;
    s = api_openai_chunk_json(API_KIND_CHAT, &o, true, false);
    j = cJSON_Parse(s);
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring, "chat.completion.chunk");
    c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(c, "delta"), "role")->valuestring, "assistant");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(c, "finish_reason")));
    cJSON_Delete(j);
    free(s);
    s = api_openai_chunk_json(API_KIND_CHAT, &o, false, true);
    j = cJSON_Parse(s);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "choices")), 0);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "prompt_tokens")->valueint, 4);
    cJSON_Delete(j);
    free(s);
}

static void test_api_ollama_parse_and_chunks(void **state)
{
    (void)state;
    struct api_gen_req r;
    struct api_error e;
    const char *body = "{\"model\":\"m:latest\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                       "\"options\":{\"temperature\":0,\"num_predict\":9,\"seed\":3,\"stop\":[\"x\"],"
                       "\"top_k\":5},\"format\":\"json\"}";
    assert_int_equal(api_ollama_parse(API_KIND_CHAT, body, strlen(body), &r, &e), 0);
    assert_true(r.stream); /* Ollama streams by default */
    assert_true(r.temperature == 0.0f);
    assert_int_equal(r.max_tokens, 9);
    assert_int_equal(r.seed, 3);
    assert_int_equal(r.top_k, 5);
    assert_int_equal(r.n_stop, 1);
    assert_true(r.json_mode);
    api_gen_req_free(&r);
    body = "{\"model\":\"m\",\"prompt\":\"p\",\"system\":\"s\",\"raw\":true,\"stream\":false}";
    assert_int_equal(api_ollama_parse(API_KIND_COMPLETION, body, strlen(body), &r, &e), 0);
    assert_false(r.stream);
    assert_true(r.raw);
    assert_string_equal(r.system, "s");
    assert_true(r.temperature == 0.8f && r.top_k == 40); /* Ollama's defaults */
    api_gen_req_free(&r);
    body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"options\":{\"top_p\":2}}";
    assert_int_equal(api_ollama_parse(API_KIND_CHAT, body, strlen(body), &r, &e), MESH_EINVAL);
    assert_int_equal(e.status, 400);
    body = "{\"model\":\"m\"}"; /* Ollama's preload idiom: load, generate nothing */
    assert_int_equal(api_ollama_parse(API_KIND_CHAT, body, strlen(body), &r, &e), 0);
    assert_true(r.load_only);
    api_gen_req_free(&r);
    assert_int_equal(api_ollama_parse(API_KIND_COMPLETION, body, strlen(body), &r, &e), 0);
    assert_true(r.load_only);
    api_gen_req_free(&r);
    body = "{\"messages\":[]}";
    assert_int_equal(api_ollama_parse(API_KIND_CHAT, body, strlen(body), &r, &e), MESH_EINVAL);
    body = "{\"model\":\"m\",\"messages\":{}}";
    assert_int_equal(api_ollama_parse(API_KIND_CHAT, body, strlen(body), &r, &e), MESH_EINVAL);
    char *ld = api_ollama_load_json(API_KIND_COMPLETION, "m");
    assert_non_null(strstr(ld, "\"response\":\"\",\"done\":true,\"done_reason\":\"load\""));
    free(ld);

    char *line = api_ollama_chunk(API_KIND_CHAT, "m", "abc", 3, true, "stop", 2, 3, 0.5);
    size_t n = strlen(line);
    assert_int_equal(line[n - 1], '\n');
    cJSON *j = cJSON_Parse(line);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "message"), "content")->valuestring, "abc");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "done")));
    assert_int_equal(cJSON_GetObjectItem(j, "eval_count")->valueint, 3);
    assert_int_equal(cJSON_GetObjectItem(j, "prompt_eval_count")->valueint, 2);
    cJSON_Delete(j);
    free(line);
}

static void test_api_openai_meshllm_route(void **state)
{
    (void)state;
    struct api_gen_req r;
    struct api_error e;
#define MSG "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]"
    /* absent: the node's default */
    assert_int_equal(parse(API_KIND_CHAT, "{\"model\":\"m\"," MSG "}", &r, &e), 0);
    assert_int_equal(r.route, NODE_ROUTE_DEFAULT);
    api_gen_req_free(&r);
    assert_int_equal(parse(API_KIND_CHAT, "{\"model\":\"m\"," MSG ",\"meshllm\":{\"route\":\"local\"}}",
                           &r, &e),
                     0);
    assert_int_equal(r.route, NODE_ROUTE_LOCAL);
    /* the body wins over the header; a bad header is not even looked at then */
    assert_int_equal(api_route_header("mesh", &r, &e), 0);
    assert_int_equal(r.route, NODE_ROUTE_LOCAL);
    assert_int_equal(api_route_header("bogus", &r, &e), 0);
    api_gen_req_free(&r);
    assert_int_equal(parse(API_KIND_COMPLETION, "{\"model\":\"m\",\"prompt\":\"p\",\"meshllm\":{\"route\":"
                           "\"mesh\"}}", &r, &e),
                     0);
    assert_int_equal(r.route, NODE_ROUTE_MESH);
    api_gen_req_free(&r);
    assert_int_equal(parse(API_KIND_CHAT, "{\"model\":\"m\"," MSG ",\"meshllm\":{\"route\":null}}", &r, &e), 0);
    assert_int_equal(r.route, NODE_ROUTE_DEFAULT);
    /* no route in the body: the header decides */
    assert_int_equal(api_route_header(NULL, &r, &e), 0);
    assert_int_equal(r.route, NODE_ROUTE_DEFAULT);
    assert_int_equal(api_route_header("own", &r, &e), 0);
    assert_int_equal(r.route, NODE_ROUTE_OWN);
    r.route = NODE_ROUTE_DEFAULT;
    assert_int_equal(api_route_header("default", &r, &e), MESH_EINVAL);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.type, "invalid_request_error");
    assert_string_equal(e.param, "meshllm.route");
    assert_non_null(strstr(e.message, "X-Meshllm-Route"));
    assert_non_null(strstr(e.message, "'local'"));
    assert_non_null(strstr(e.message, "'own'"));
    assert_non_null(strstr(e.message, "'mesh'"));
    api_gen_req_free(&r);
    /* bad values: 400 naming the field and the allowed values */
    expect_bad(API_KIND_CHAT, "{\"model\":\"m\"," MSG ",\"meshllm\":{\"route\":\"everywhere\"}}",
               "meshllm.route");
    expect_bad(API_KIND_CHAT, "{\"model\":\"m\"," MSG ",\"meshllm\":{\"route\":\"Local\"}}", "meshllm.route");
    expect_bad(API_KIND_CHAT, "{\"model\":\"m\"," MSG ",\"meshllm\":{\"route\":3}}", "meshllm.route");
    expect_bad(API_KIND_COMPLETION, "{\"model\":\"m\",\"prompt\":\"p\",\"meshllm\":\"local\"}", "meshllm");
    assert_int_equal(parse(API_KIND_CHAT, "{\"model\":\"m\"," MSG ",\"meshllm\":{\"route\":\"x\"}}", &r, &e),
                     MESH_EINVAL);
    assert_non_null(strstr(e.message, "'local'"));
    /* Ollama bodies take the same object */
    const char *body = "{\"model\":\"m\"," MSG ",\"meshllm\":{\"route\":\"own\"}}";
    assert_int_equal(api_ollama_parse(API_KIND_CHAT, body, strlen(body), &r, &e), 0);
    assert_int_equal(r.route, NODE_ROUTE_OWN);
    api_gen_req_free(&r);
    body = "{\"model\":\"m\",\"prompt\":\"p\",\"meshllm\":{\"route\":\"nowhere\"}}";
    assert_int_equal(api_ollama_parse(API_KIND_COMPLETION, body, strlen(body), &r, &e), MESH_EINVAL);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.param, "meshllm.route");
#undef MSG
}

/* A local ready model, a local one that failed, and one only mesh peers serve. */
static int models_fixture(struct router_model ms[3])
{
    memset(ms, 0, 3 * sizeof *ms);
    snprintf(ms[0].name, sizeof ms[0].name, "here");
    ms[0].is_local = true;
    ms[0].state = ROUTER_READY;
    ms[0].created = 1700000000;
    ms[0].file_bytes = 1234;
    ms[0].n_where = 1;
    snprintf(ms[0].where[0], sizeof ms[0].where[0], "12D3KooWAlsoHere");
    snprintf(ms[1].name, sizeof ms[1].name, "broken");
    ms[1].is_local = true;
    ms[1].state = ROUTER_FAILED;
    snprintf(ms[2].name, sizeof ms[2].name, "far");
    ms[2].is_local = false;
    ms[2].file_bytes = 0; /* unknown */
    snprintf(ms[2].digest, sizeof ms[2].digest, "abcd");
    snprintf(ms[2].quant, sizeof ms[2].quant, "Q4_0");
    ms[2].n_where = 2;
    snprintf(ms[2].where[0], sizeof ms[2].where[0], "12D3KooWPeerOne");
    memset(ms[2].where[1], 'x', sizeof ms[2].where[1]); /* not NUL-terminated: cut at 64 */
    return 3;
}

static void test_api_openai_models_local_and_mesh(void **state)
{
    (void)state;
    struct router_model ms[3];
    int n = models_fixture(ms);
    char *s = api_models_json(ms, n);
    cJSON *j = cJSON_Parse(s);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring, "list");
    cJSON *data = cJSON_GetObjectItem(j, "data");
    assert_int_equal(cJSON_GetArraySize(data), 2); /* the failed model is not listed */
    cJSON *a = cJSON_GetArrayItem(data, 0), *b = cJSON_GetArrayItem(data, 1);
    assert_string_equal(cJSON_GetObjectItem(a, "id")->valuestring, "here");
    assert_string_equal(cJSON_GetObjectItem(a, "object")->valuestring, "model");
    assert_int_equal(cJSON_GetObjectItem(a, "created")->valuedouble, 1700000000);
    assert_string_equal(cJSON_GetObjectItem(a, "owned_by")->valuestring, "meshllm");
    cJSON *ma = cJSON_GetObjectItem(a, "meshllm");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(ma, "local")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(ma, "where")), 1);
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(ma, "where"), 0)->valuestring,
                        "12D3KooWAlsoHere");
    assert_string_equal(cJSON_GetObjectItem(b, "id")->valuestring, "far");
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(b, "created")));
    cJSON *mb = cJSON_GetObjectItem(b, "meshllm");
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(mb, "local")));
    cJSON *w = cJSON_GetObjectItem(mb, "where");
    assert_int_equal(cJSON_GetArraySize(w), 2);
    assert_string_equal(cJSON_GetArrayItem(w, 0)->valuestring, "12D3KooWPeerOne");
    assert_int_equal(strlen(cJSON_GetArrayItem(w, 1)->valuestring), 64);
    cJSON_Delete(j);
    free(s);
    /* GET /v1/models/{id}: one object, the same fields */
    s = api_model_json(&ms[2]);
    j = cJSON_Parse(s);
    assert_string_equal(cJSON_GetObjectItem(j, "id")->valuestring, "far");
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "meshllm"), "local")));
    cJSON_Delete(j);
    free(s);
}

static void test_api_ollama_tags_local_and_mesh(void **state)
{
    (void)state;
    struct router_model ms[3];
    int n = models_fixture(ms);
    char *s = api_ollama_tags_json(ms, n);
    cJSON *j = cJSON_Parse(s);
    assert_non_null(j);
    cJSON *arr = cJSON_GetObjectItem(j, "models");
    assert_int_equal(cJSON_GetArraySize(arr), 2);
    cJSON *a = cJSON_GetArrayItem(arr, 0), *b = cJSON_GetArrayItem(arr, 1);
    assert_string_equal(cJSON_GetObjectItem(a, "name")->valuestring, "here:latest");
    assert_int_equal(cJSON_GetObjectItem(a, "size")->valuedouble, 1234);
    assert_string_equal(cJSON_GetObjectItem(a, "modified_at")->valuestring, "2023-11-14T22:13:20Z");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(a, "meshllm"), "local")));
    assert_string_equal(cJSON_GetObjectItem(b, "name")->valuestring, "far:latest");
    assert_string_equal(cJSON_GetObjectItem(b, "model")->valuestring, "far:latest");
    assert_null(cJSON_GetObjectItem(b, "size"));        /* unknown: not said */
    assert_null(cJSON_GetObjectItem(b, "modified_at")); /* no 1970 dates */
    assert_string_equal(cJSON_GetObjectItem(b, "digest")->valuestring, "abcd");
    cJSON *d = cJSON_GetObjectItem(b, "details");
    assert_string_equal(cJSON_GetObjectItem(d, "format")->valuestring, "gguf");
    assert_string_equal(cJSON_GetObjectItem(d, "quantization_level")->valuestring, "Q4_0");
    cJSON *mb = cJSON_GetObjectItem(b, "meshllm");
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(mb, "local")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(mb, "where")), 2);
    cJSON_Delete(j);
    free(s);
    ms[2].file_bytes = 99; /* known: said */
    s = api_ollama_tags_json(ms, n);
    j = cJSON_Parse(s);
    b = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "models"), 1);
    assert_int_equal(cJSON_GetObjectItem(b, "size")->valuedouble, 99);
    cJSON_Delete(j);
    free(s);
}

static int parse_responses(const char *body, struct api_gen_req *r, struct api_error *e)
{
    return api_responses_parse(body, strlen(body), r, e);
}

static void test_api_responses_parse(void **state)
{
    (void)state;
    struct api_gen_req r;
    struct api_error e;
    assert_int_equal(parse_responses("{\"model\":\"m\",\"instructions\":\"Be brief\",\"input\":["
                                     "{\"role\":\"developer\",\"content\":\"d\"},"
                                     "{\"type\":\"message\",\"role\":\"user\",\"content\":["
                                     "{\"type\":\"input_text\",\"text\":\"a\"},"
                                     "{\"type\":\"input_text\",\"text\":\"b\"}]},"
                                     "{\"role\":\"assistant\",\"content\":[{\"type\":"
                                     "\"output_text\",\"text\":\"c\"}]}],"
                                     "\"max_output_tokens\":7,\"temperature\":0.5,\"stream\":true}",
                                     &r, &e),
                     0);
    assert_int_equal(r.kind, API_KIND_CHAT);
    assert_string_equal(r.model, "m");
    assert_int_equal(r.n_msgs, 4);
    assert_string_equal(r.msgs[0].role, "system");
    assert_string_equal(r.msgs[0].content, "Be brief");
    assert_string_equal(r.msgs[1].role, "system");
    assert_string_equal(r.msgs[2].content, "ab");
    assert_string_equal(r.msgs[3].role, "assistant");
    assert_int_equal(r.max_tokens, 7);
    assert_true(r.stream);
    assert_true(r.given & API_GIVEN_TEMPERATURE);
    api_gen_req_free(&r);
    assert_int_equal(parse_responses("{\"input\":\"hi\"}", &r, &e), 0);
    assert_int_equal(r.n_msgs, 1);
    assert_string_equal(r.msgs[0].role, "user");
    assert_int_equal(r.max_tokens, -1);
    api_gen_req_free(&r);
    static const char *const refused[] = {
        "{}", "{\"input\":[]}", "{\"input\":5}", "{\"input\":\"x\",\"previous_response_id\":\"r\"}",
        "{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"}]}",
        "{\"input\":[{\"type\":\"function_call_output\"}]}",
        "{\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_image\"}]}]}",
        "{\"input\":\"x\",\"max_output_tokens\":0}", "{\"input\":\"x\",\"temperature\":3}",
        "{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"yaml\"}}}", "[1]"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        assert_int_not_equal(parse_responses(refused[i], &r, &e), 0);
        assert_int_equal(e.status, 400);
    }
}

/* The event stream of a response that ends by itself: every type in order, numbered. */
static void test_api_responses_events(void **state)
{
    (void)state;
    struct api_resp_out o = {.id = "resp_abc", .created = 5, .model = "m", .text = "", .n_prompt = 3};
    int seq = 0;
    char *begin = api_responses_events(&o, API_RESP_BEGIN, &seq);
    o.text = "Hel";
    o.len = 3;
    char *delta = api_responses_events(&o, API_RESP_DELTA, &seq);
    o.text = "Hello";
    o.len = 5;
    o.n_completion = 2;
    char *end = api_responses_events(&o, API_RESP_END, &seq);
    assert_non_null(begin);
    assert_non_null(delta);
    assert_non_null(end);
    assert_int_equal(seq, 9);
    char all[8192];
    snprintf(all, sizeof all, "%s%s%s", begin, delta, end);
    static const char *const want[] = {"response.created", "response.in_progress",
                                       "response.output_item.added", "response.content_part.added",
                                       "response.output_text.delta", "response.output_text.done",
                                       "response.content_part.done", "response.output_item.done",
                                       "response.completed"};
    const char *p = all;
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        char line[96];
        snprintf(line, sizeof line, "event: %s\ndata: {\"type\":\"%s\",\"sequence_number\":%zu",
                 want[i], want[i], i);
        const char *q = strstr(p, line);
        assert_non_null(q);
        p = q + strlen(line);
    }
    assert_non_null(strstr(end, "\"status\":\"completed\""));
    assert_non_null(strstr(end, "\"text\":\"Hello\""));
    assert_non_null(strstr(end, "\"id\":\"msg_abc\""));
    assert_non_null(strstr(end, "\"output_tokens\":2"));
    assert_non_null(strstr(delta, "\"delta\":\"Hel\""));
    free(begin);
    free(delta);
    free(end);
    o.is_failed = true;
    end = api_responses_events(&o, API_RESP_END, &seq);
    assert_non_null(strstr(end, "event: response.failed\n"));
    assert_null(strstr(end, "response.completed"));
    free(end);
    o.is_failed = false;
    o.is_incomplete = true;
    char *j = api_responses_json(&o);
    cJSON *root = cJSON_Parse(j);
    assert_string_equal(cJSON_GetObjectItem(root, "status")->valuestring, "incomplete");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(root, "incomplete_details"), "reason")->valuestring,
        "max_output_tokens");
    cJSON_Delete(root);
    free(j);
}

/* tools, tool_choice and the messages of a tool round trip. */
static void test_api_openai_tools(void **state)
{
    (void)state;
    struct api_gen_req r;
    struct api_error e;
    const char *body =
        "{\"model\":\"m\",\"messages\":["
        "{\"role\":\"user\",\"content\":\"Weather in Paris?\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\",\"type\":"
        "\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"18C\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "\"description\":\"Now\",\"parameters\":{\"type\":\"object\",\"properties\":"
        "{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}}},"
        "{\"function\":{\"name\":\"get-time\"}}],"
        "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}},"
        "\"parallel_tool_calls\":false}";
    assert_int_equal(api_openai_parse(API_KIND_CHAT, body, strlen(body), &r, &e), 0);
    assert_int_equal(r.n_tools, 2);
    assert_int_equal(r.tool_choice, API_TOOLS_NAMED);
    assert_string_equal(r.tool_choice_name, "get_weather");
    assert_false(r.parallel_tool_calls);
    assert_non_null(strstr(r.tools_json, "\"name\":\"get-time\""));
    assert_non_null(strstr(r.tools_json, "{\"function\":{\"name\":\"get-time\"},\"type\":\"function\"}"));
    assert_string_equal(r.msgs[1].role, "assistant");
    assert_string_equal(r.msgs[1].content, "");
    assert_non_null(strstr(r.msgs[1].tool_calls_json, "\"name\":\"get_weather\""));
    assert_string_equal(r.msgs[2].role, "tool");
    assert_string_equal(r.msgs[2].tool_call_id, "call_1");
    api_gen_req_free(&r);
    /* none: the tools stay away from the model */
    body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
           "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":\"none\"}";
    assert_int_equal(api_openai_parse(API_KIND_CHAT, body, strlen(body), &r, &e), 0);
    assert_null(r.tools_json);
    assert_int_equal(r.tool_choice, API_TOOLS_NONE);
    api_gen_req_free(&r);
    /* the reply's calls: content null, tool_calls, finish_reason tool_calls; chunk indices */
    struct api_tool_call calls[] = {{"call_a", "get_weather", "{\"city\":\"Paris\"}"},
                                    {"call_b", "get-time", "{}"}};
    struct api_gen_out o = {.id = "chatcmpl-1", .created = 1, .model = "m", .text = "", .len = 0,
                            .finish_reason = "tool_calls", .calls = calls, .n_calls = 2};
    char *j = api_openai_response_json(API_KIND_CHAT, &o);
    assert_non_null(strstr(j, "\"content\":null"));
    assert_non_null(strstr(j, "\"tool_calls\":[{\"id\":\"call_a\",\"type\":\"function\",\"function\":"
                              "{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}"));
    assert_non_null(strstr(j, "\"finish_reason\":\"tool_calls\""));
    free(j);
    o.finish_reason = NULL;
    o.n_calls = 1;
    o.calls = &calls[1];
    o.call_index0 = 1;
    j = api_openai_chunk_json(API_KIND_CHAT, &o, false, false);
    assert_non_null(strstr(j, "\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\""));
    assert_null(strstr(j, "\"content\""));
    free(j);
}

static void test_api_openai_key_check(void **state)
{
    (void)state;
    assert_true(api_key_matches("k1", "Bearer k1", NULL));
    assert_true(api_key_matches("k1", "bearer k1", NULL));
    assert_true(api_key_matches("k1", NULL, "k1"));
    assert_true(api_key_matches("k1", "Basic abc", "k1"));
    assert_false(api_key_matches("k1", "Bearer k2", NULL));
    assert_false(api_key_matches("k1", "Bearer k1x", NULL));
    assert_false(api_key_matches("k1x", "Bearer k1", NULL));
    assert_false(api_key_matches("k1", "k1", NULL));
    assert_false(api_key_matches("k1", NULL, NULL));
    assert_false(api_key_matches("k1", "Bearer ", NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api_openai_chat_defaults),
        cmocka_unit_test(test_api_openai_chat_fields),
        cmocka_unit_test(test_api_openai_server_defaults),
        cmocka_unit_test(test_api_openai_rejects_bad_fields),
        cmocka_unit_test(test_api_openai_completion_and_embedding),
        cmocka_unit_test(test_api_openai_error_json_shape),
        cmocka_unit_test(test_api_openai_response_objects),
        cmocka_unit_test(test_api_ollama_parse_and_chunks),
        cmocka_unit_test(test_api_openai_key_check),
        cmocka_unit_test(test_api_responses_parse),
        cmocka_unit_test(test_api_openai_tools),
        cmocka_unit_test(test_api_responses_events),
        cmocka_unit_test(test_api_openai_meshllm_route),
        cmocka_unit_test(test_api_openai_models_local_and_mesh),
        cmocka_unit_test(test_api_ollama_tags_local_and_mesh),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
