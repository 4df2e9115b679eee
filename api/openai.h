/* openai.h - OpenAI API request parsing/validation and response building (JSON via cJSON).
 *
 * Follows the OpenAI API reference for /v1/chat/completions, /v1/completions and
 * /v1/embeddings: field names, defaults (temperature 1, top_p 1, n 1, no max_tokens) and the
 * error object {"error":{"message","type","param","code"}}. Parsing does no I/O and knows
 * nothing of models or tokenizers, so it can be fuzzed alone (tests/fuzz/fuzz_openai.c).
 * Not supported (refused with 400): n > 1, tools/function calling, audio, images in content.
 * Thread rule: pure functions; structs belong to the caller.
 */
#ifndef MESH_API_OPENAI_H
#define MESH_API_OPENAI_H

#include "node/req.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define API_MAX_STOP 4       /* OpenAI allows up to 4 stop sequences */
#define API_MAX_TOP_LOGPROBS 20
#define API_MODEL_NAME_CAP 256

enum api_kind {
    API_KIND_CHAT = 1,       /* messages -> chat template */
    API_KIND_COMPLETION = 2, /* raw prompt */
    API_KIND_EMBEDDING = 3,  /* input string(s) */
};

/* An error as the API returns it. status is the HTTP status; type/code are static strings. */
struct api_error {
    int status;
    char message[320];
    const char *type;  /* "invalid_request_error", "server_error", ... */
    char param[64];    /* offending field or "" (JSON null) */
    const char *code;  /* NULL = JSON null */
    int retry_after_s; /* 429/503: the Retry-After header's seconds; 0 = the server's default */
};

struct api_msg {
    char *role;    /* "system", "user", "assistant", "tool" ("developer" -> "system") */
    char *content; /* text; array-of-parts content is joined ("" for a call-only turn) */
    char *tool_calls_json; /* assistant: its tool calls as an OpenAI JSON array, or NULL */
    char *tool_call_id;    /* tool: the call this result answers, or NULL */
    char *name;            /* tool: the function's name, or NULL */
};

/* tool_choice (OpenAI): what the model may do with the request's tools. */
enum api_tool_choice {
    API_TOOLS_AUTO = 0, /* call or answer, as the model decides (the default with tools) */
    API_TOOLS_NONE,     /* answer only (tools are not given to the model) */
    API_TOOLS_REQUIRED, /* at least one call */
    API_TOOLS_NAMED,    /* a call of tool_choice_name */
};

/* One tool call of a reply (api_gen_out.calls). */
struct api_tool_call {
    const char *id;        /* "call_..." */
    const char *name;
    const char *arguments; /* a JSON object as text */
};

/* A generation request after validation. Strings are malloc'd and owned by the struct. */
#define API_MAX_CHOICES 16
struct api_gen_req {
    enum api_kind kind;
    char model[API_MODEL_NAME_CAP];
    struct api_msg *msgs; /* chat: [n_msgs] */
    int n_msgs;
    char *prompt;         /* completion: the prompt text */
    char **inputs;        /* embedding: [n_inputs] texts */
    int n_inputs;
    bool stream;
    int n_choices;        /* n: completions to generate (1..API_MAX_CHOICES; 0 = 1) */
    bool include_usage;   /* stream_options.include_usage */
    int max_tokens;       /* -1 = until end of generation or context */
    float temperature;    /* 0..2, default 1 */
    float top_p;          /* 0..1, default 1 */
    float presence_penalty, frequency_penalty; /* -2..2, default 0 */
    int top_k;            /* 0 = off (OpenAI has no top_k; Ollama's default is 40) */
    float min_p;          /* 0 = off */
    float repeat_penalty; /* 1 = off */
    bool has_seed;
    uint64_t seed;
    char *stop[API_MAX_STOP];
    int n_stop;
    bool logprobs;        /* return per-token logprobs */
    int top_logprobs;     /* 0..20 alternatives per token */
    bool json_mode;       /* response_format {"type":"json_object"} */
    char *grammar;        /* GBNF from response_format, json_schema, grammar or format; or NULL */
    bool echo;            /* completions: echo the prompt (refused if true with stream) */
    bool raw;             /* ollama generate: do not apply the template */
    bool embed_legacy;    /* ollama /api/embeddings ("prompt" in, {"embedding":[...]} out) */
    char *tools_json;     /* the tools as a compact JSON array of {"type":"function",...}, or NULL */
    int n_tools;
    enum api_tool_choice tool_choice;
    char tool_choice_name[65];
    bool parallel_tool_calls; /* several calls in one turn (default true) */
    bool load_only;       /* ollama: no prompt / no messages: load the model, generate nothing */
    char *system;         /* ollama generate: system prompt, or NULL */
    enum node_route route; /* "meshllm":{"route":...} or X-Meshllm-Route; DEFAULT if neither */
    unsigned given;       /* API_GIVEN_* bits: sampling fields the request set itself */
};

/* Sampling fields a request may leave to the server's defaults (api_gen_req.given). */
#define API_GIVEN_TEMPERATURE (1u << 0)
#define API_GIVEN_TOP_P (1u << 1)
#define API_GIVEN_TOP_K (1u << 2)
#define API_GIVEN_MIN_P (1u << 3)
#define API_GIVEN_REPEAT_PENALTY (1u << 4)
#define API_GIVEN_MAX_TOKENS (1u << 5)

/* The server's sampling defaults (serve --temp, --top-p, --top-k, --min-p, --repeat-penalty,
 * -n: llama-server's flags), applied to the OpenAI routes' requests that leave the field
 * out. A negative value = not set (the API's own default stays). */
struct api_sampling_defaults {
    float temperature, top_p, min_p, repeat_penalty;
    int top_k, max_tokens;
};
void api_sampling_defaults_init(struct api_sampling_defaults *d); /* all unset */
void api_sampling_defaults_apply(const struct api_sampling_defaults *d, struct api_gen_req *r);

/* Parses and validates a request body of len bytes (not NUL-terminated) for kind.
 * On success fills *out (zeroed first; free with api_gen_req_free) and returns 0.
 * On failure returns MESH_EINVAL (or MESH_ENOMEM) with *err filled (status 400, param set). */
int api_openai_parse(enum api_kind kind, const char *body, size_t len, struct api_gen_req *out,
                     struct api_error *err);
void api_gen_req_free(struct api_gen_req *r);
/* The body's tools, tool_choice and parallel_tool_calls (OpenAI's shapes; Ollama's tools
 * are the same objects) into r: tools_json keeps the validated tools (not with
 * tool_choice none). 0, or MESH_EINVAL / MESH_ENOMEM with *err (400 naming the field). */
struct cJSON;
int api_tools_parse(const struct cJSON *root, struct api_gen_req *r, struct api_error *err);

/* Reads the body's "meshllm" extension object, {"route":"local"|"own"|"mesh"} (OpenAI and
 * Ollama bodies alike), into *route; an absent or null object or route leaves *route as it
 * is. Returns 0, or MESH_EINVAL with *err filled (400, param "meshllm" or "meshllm.route"). */
struct cJSON;
int api_meshllm_parse(const struct cJSON *root, enum node_route *route, struct api_error *err);
/* Applies an X-Meshllm-Route header value (NULL = no header) to r: only when the body named
 * no route (the body wins). Returns 0, or MESH_EINVAL with *err filled (400, param
 * "meshllm.route") for a value other than local, own or mesh. */
int api_route_header(const char *value, struct api_gen_req *r, struct api_error *err);

/* Fills e (retry_after_s 0) and returns MESH_EINVAL; message formatted like printf. */
int api_error_set(struct api_error *e, int status, const char *type, const char *code,
                  const char *param, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* The OpenAI error body as a malloc'd JSON string (NULL on out of memory). */
char *api_error_json(const struct api_error *e);

/* One alternative of a token for logprobs. text is the token's bytes (len bytes). */
struct api_lp_entry {
    const char *text;
    size_t len;
    float logprob;
};
struct api_lp_token {
    struct api_lp_entry tok;
    int n_top;
    struct api_lp_entry top[API_MAX_TOP_LOGPROBS];
};

/* What a finished or partial generation produced, for the builders below. */
struct api_gen_out {
    const char *id;            /* "chatcmpl-..." / "cmpl-..." */
    int64_t created;           /* unix seconds */
    const char *model;
    const char *text;          /* text of this response or chunk (len bytes) */
    size_t len;
    const char *finish_reason; /* "stop", "length" or NULL (still running) */
    int n_prompt, n_completion;
    int n_cached; /* prompt tokens reused from a slot's cache (usage.prompt_tokens_details) */
    const struct api_lp_token *lps; /* [n_lps] or NULL when logprobs were not asked for */
    int n_lps;
    const struct api_tool_call *calls; /* [n_calls]: the reply's tool calls (chat) */
    int n_calls;
    int call_index0; /* chunks: index of calls[0] among the turn's calls */
    /* optional: where the request ran ("local" or peer IDs); adds "meshllm":{"ran_on":...}
     * to the whole response and to the chunk carrying finish_reason; NULL adds nothing */
    const char *ran_on;
};

/* Whole response object (chat.completion / text_completion) as malloc'd JSON. */
char *api_openai_response_json(enum api_kind kind, const struct api_gen_out *o);
/* One SSE data object (chat.completion.chunk / text_completion). is_first adds the
 * assistant role delta for chat. usage_only builds the final usage chunk (empty choices). */
char *api_openai_chunk_json(enum api_kind kind, const struct api_gen_out *o, bool is_first,
                            bool usage_only);

#endif
