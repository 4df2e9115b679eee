/* fuzz_openai.c - request-body parsing of the API: every input is parsed as an OpenAI chat,
 * completion and embedding request, as an Ollama chat, generate, embed and embeddings
 * request and as a Responses API request; accepted
 * requests are turned into response objects and rejected ones into error JSON, so the
 * builders and the UTF-8 cleaning see the same hostile bytes. The input also serves as the
 * Authorization / x-api-key header values checked against an API key. */
#include "api/api_internal.h"
#include "api/openai.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void use(const struct api_gen_req *r)
{
    const char *text = "";
    size_t len = 0;
    if (r->n_msgs > 0) text = r->msgs[r->n_msgs - 1].content;
    else if (r->prompt) text = r->prompt;
    else if (r->n_inputs > 0) text = r->inputs[0];
    len = strlen(text);
    struct api_lp_token lp;
    memset(&lp, 0, sizeof lp);
    lp.tok = (struct api_lp_entry){text, len < 8 ? len : 8, -1.0f};
    lp.n_top = 1;
    lp.top[0] = lp.tok;
    struct api_gen_out o = {.id = "x", .created = 1, .model = r->model, .text = text, .len = len,
                            .finish_reason = r->n_stop ? r->stop[0] : NULL, .lps = &lp, .n_lps = 1};
    free(api_openai_response_json(r->kind == API_KIND_CHAT ? API_KIND_CHAT : API_KIND_COMPLETION, &o));
    free(api_openai_chunk_json(API_KIND_CHAT, &o, true, false));
    free(api_ollama_chunk(r->kind, r->model, text, len, true, "stop", 1, 2, 0.1));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const enum api_kind kinds[3] = {API_KIND_CHAT, API_KIND_COMPLETION, API_KIND_EMBEDDING};
    struct api_gen_req r;
    struct api_error e;
    for (int k = 0; k < 8; k++) {
        const char *b = (const char *)data;
        int rc = k < 3   ? api_openai_parse(kinds[k], b, size, &r, &e)
                 : k < 6 ? api_ollama_parse(kinds[k - 3], b, size, &r, &e)
                 : k == 6 ? api_ollama_parse_ex(API_KIND_EMBEDDING, true, b, size, &r, &e)
                          : api_responses_parse(b, size, &r, &e);
        if (rc == 0 && k == 7) { /* the Responses API's answer and events from it */
            const char *t = r.msgs[r.n_msgs - 1].content;
            struct api_resp_out o = {.id = "resp_x", .model = r.model, .text = t, .len = strlen(t)};
            int seq = 0;
            free(api_responses_json(&o));
            for (int st = API_RESP_BEGIN; st <= API_RESP_END; st++)
                free(api_responses_events(&o, (enum api_resp_stage)st, &seq));
        }
        if (rc == 0) {
            use(&r);
            api_gen_req_free(&r);
        } else {
            free(api_error_json(&e));
        }
    }
    /* header values: the input split at its first NUL, as two C strings */
    char *h = malloc(size + 2);
    if (!h) return 0;
    memcpy(h, data, size);
    h[size] = 0;
    h[size + 1] = 0;
    const char *second = h + strlen(h) + 1;
    if (second > h + size) second = h + size;
    api_key_matches("secret-key", h, second);
    api_key_matches("secret-key", NULL, h);
    api_key_matches("", h, NULL);
    free(h);
    return 0;
}
