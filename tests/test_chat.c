/* test_chat.c - engine/chat: family detection from real tokenizer.chat_template texts and
 * the exact prompt text of each family, as the official Jinja templates render it
 * (cross-checked with llama.cpp's tests/test-chat-template.cpp expected outputs). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "engine/chat.h"
#include "engine/gguf.h"
#include "engine/tok.h"
#include "tests/util/test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- real templates (data; long ones are excerpts that keep the distinctive parts) -- */

/* teknium/OpenHermes-2.5-Mistral-7B */
static const char T_CHATML[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";
/* Qwen/Qwen2-7B-Instruct */
static const char T_QWEN2[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
/* Qwen/Qwen2.5-7B-Instruct (excerpt: the system-prompt part, all three occurrences) */
static const char T_QWEN25[] =
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == "
    "'system' %}\n        {{- messages[0]['content'] }}\n    {%- else %}\n        {{- 'You are "
    "Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n"
    "{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- '<|im_start|>system"
    "\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n        {{- "
    "'<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n";

/* mistralai/Mistral-7B-Instruct-v0.2 (old, no system prompt) */
static const char T_LLAMA2[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}";
/* meta-llama/Llama-2-13b-chat-hf */
static const char T_LLAMA2_SYS[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages "
    "%}{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception("
    "'Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\\\n' + "
    "system_message + '\\\\n<</SYS>>\\\\n\\\\n' + message['content'] %}{% else %}{% set content "
    "= message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + "
    "'[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
/* meta-llama/Meta-Llama-3-8B-Instruct */
static const char T_LLAMA3[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>"
    "assistant<|end_header_id|>\\n\\n' }}{% endif %}";
/* meta-llama/Llama-3.1-8B-Instruct (excerpt: system header and message loop) */
static const char T_LLAMA31[] =
    "{{- bos_token }}\n{%- if not date_string is defined %}\n    {%- set date_string = \"26 Jul "
    "2024\" %}\n{%- endif %}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n{{- \"Today Date: \" + date_string + "
    "\"\\n\\n\" }}\n{{- system_message }}\n{{- \"<|eot_id|>\" }}\n{%- for message in messages %}"
    "\n        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ "
    "message['content'] | trim + '<|eot_id|>' }}\n{%- endfor %}\n{%- if add_generation_prompt %}"
    "\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n";
/* mistralai 'v1' template with a system prompt (Mistral-7B-Instruct-v0.2, later revision) */
static const char T_MISTRAL_V1[] =
    "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]"
    "['content'] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set "
    "loop_messages = messages %}\n{%- endif %}\n\n{{- bos_token }}\n{%- for message in "
    "loop_messages %}\n    {%- if message['role'] == 'user' %}\n        {%- if loop.first and "
    "system_message is defined %}\n            {{- ' [INST] ' + system_message + '\\n\\n' + "
    "message['content'] + ' [/INST]' }}\n        {%- else %}\n            {{- ' [INST] ' + "
    "message['content'] + ' [/INST]' }}\n        {%- endif %}\n    {%- elif message['role'] == "
    "'assistant' %}\n        {{- ' ' + message['content'] + eos_token}}\n    {%- endif %}\n"
    "{%- endfor %}\n";
/* mistralai/Mistral-7B-Instruct-v0.3 (excerpt) */
static const char T_MISTRAL_V3[] =
    "{%- for message in loop_messages %}\n    {%- if message[\"role\"] == \"user\" %}\n"
    "        {%- if tools is not none and (message == user_messages[-1]) %}\n"
    "            {{- \"[AVAILABLE_TOOLS] [\" }}\n            {{- \"[/AVAILABLE_TOOLS]\" }}\n"
    "            {%- endif %}\n        {%- if loop.last and system_message is defined %}\n"
    "            {{- \"[INST] \" + system_message + \"\\n\\n\" + message[\"content\"] + "
    "\"[/INST]\" }}\n        {%- else %}\n            {{- \"[INST] \" + message[\"content\"] + "
    "\"[/INST]\" }}\n        {%- endif %}\n    {%- elif message[\"role\"] == \"assistant\" %}\n"
    "        {{- \" \" + message[\"content\"]|trim + eos_token}}\n    {%- endif %}\n{%- endfor %}";
/* mistralai/Mistral-Nemo-Instruct-2407 (excerpt) */
static const char T_MISTRAL_TEKKEN[] =
    "{%- for message in loop_messages %}\n    {%- if message[\"role\"] == \"user\" %}\n"
    "        {%- if tools is not none and (message == user_messages[-1]) %}\n"
    "            {{- \"[AVAILABLE_TOOLS][\" }}\n            {{- \"[/AVAILABLE_TOOLS]\" }}\n"
    "            {%- endif %}\n        {%- if loop.last and system_message is defined %}\n"
    "            {{- \"[INST]\" + system_message + \"\\n\\n\" + message[\"content\"] + "
    "\"[/INST]\" }}\n        {%- else %}\n            {{- \"[INST]\" + message[\"content\"] + "
    "\"[/INST]\" }}\n        {%- endif %}\n    {%- elif message[\"role\"] == \"assistant\" %}\n"
    "        {{- message[\"content\"] + eos_token}}\n    {%- endif %}\n{%- endfor %}";
/* mistralai/Mistral-Large-Instruct-2411 ('v7') */
static const char T_MISTRAL_V7[] =
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + '[/INST]' }}{% elif message['role'] == 'system' %}"
    "{{ '[SYSTEM_PROMPT] ' + message['content'] + '[/SYSTEM_PROMPT]' }}{% elif message['role'] "
    "== 'assistant' %}{{ ' ' + message['content'] + eos_token }}{% else %}{{ raise_exception("
    "'Only user, system and assistant roles are supported!') }}{% endif %}{% endfor %}";
/* microsoft/Phi-3.5-mini-instruct */
static const char T_PHI3[] =
    "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}";
/* microsoft/phi-4 */
static const char T_PHI4[] =
    "{% for message in messages %}{% if (message['role'] == 'system') %}{{'<|im_start|>system"
    "<|im_sep|>' + message['content'] + '<|im_end|>'}}{% elif (message['role'] == 'user') %}"
    "{{'<|im_start|>user<|im_sep|>' + message['content'] + '<|im_end|><|im_start|>assistant"
    "<|im_sep|>'}}{% elif (message['role'] == 'assistant') %}{{message['content'] + "
    "'<|im_end|>'}}{% endif %}{% endfor %}";
/* HuggingFaceH4/zephyr-7b-beta and TinyLlama/TinyLlama-1.1B-Chat-v1.0 */
static const char T_ZEPHYR[] =
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + "
    "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ "
    "'<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == "
    "'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
    "{% endfor %}";
/* stabilityai/stablelm-2-zephyr-1_6b */
static const char T_STABLELM_ZEPHYR[] =
    "{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] "
    "+ '<|endoftext|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}"
    "{% endif %}";
/* google/gemma-2-2b-it */
static const char T_GEMMA[] =
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
    "supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}"
    "{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";
/* eachadea/vicuna-13b-1.1 and deepseek-coder: families we do not render */
static const char T_VICUNA[] =
    "{%- for message in messages %}{%- if message['role'] == 'system' -%}{{- '' + "
    "message['content'] + '\n\n' -}}{%- else -%}{%- if message['role'] == 'user' -%}{{-'USER: ' "
    "+ message['content'] + '\n'-}}{%- else -%}{{-'ASSISTANT: ' + message['content'] + '</s>\n' "
    "-}}{%- endif -%}{%- endif -%}{%- endfor -%}{%- if add_generation_prompt -%}"
    "{{-'ASSISTANT:'-}}{%- endif -%}";
static const char T_DEEPSEEK[] =
    "{%- for message in messages %}{%- if message['role'] == 'user' %}{{'### Instruction:\\n' "
    "+ message['content'] + '\\n'}}{%- else %}{{'### Response:\\n' + message['content'] + "
    "'\\n<|EOT|>\\n'}}{%- endif %}{%- endfor %}";

static void test_chat_detect_real_templates(void **state)
{
    (void)state;
    const struct {
        const char *tmpl;
        enum chat_tmpl want;
    } cases[] = {
        {T_CHATML, CHAT_TMPL_CHATML},
        {T_QWEN2, CHAT_TMPL_CHATML},
        {T_QWEN25, CHAT_TMPL_CHATML},
        {T_LLAMA2, CHAT_TMPL_LLAMA2},
        {T_LLAMA2_SYS, CHAT_TMPL_LLAMA2_SYS},
        {T_LLAMA3, CHAT_TMPL_LLAMA3},
        {T_LLAMA31, CHAT_TMPL_LLAMA31},
        {T_MISTRAL_V1, CHAT_TMPL_MISTRAL_V1},
        {T_MISTRAL_V3, CHAT_TMPL_MISTRAL_V3},
        {T_MISTRAL_TEKKEN, CHAT_TMPL_MISTRAL_V3_TEKKEN},
        {T_MISTRAL_V7, CHAT_TMPL_MISTRAL_V7},
        {T_PHI3, CHAT_TMPL_PHI3},
        {T_PHI4, CHAT_TMPL_PHI4},
        {T_ZEPHYR, CHAT_TMPL_ZEPHYR},
        {T_STABLELM_ZEPHYR, CHAT_TMPL_ZEPHYR},
        {T_GEMMA, CHAT_TMPL_GEMMA},
        {T_VICUNA, CHAT_TMPL_UNKNOWN},
        {T_DEEPSEEK, CHAT_TMPL_UNKNOWN},
        {"", CHAT_TMPL_UNKNOWN},
        {NULL, CHAT_TMPL_UNKNOWN},
        {"llama3", CHAT_TMPL_LLAMA3}, /* a family name is accepted as the template */
        {"mistral", CHAT_TMPL_LLAMA2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum chat_tmpl got = chat_tmpl_detect(cases[i].tmpl);
        if (got != cases[i].want)
            fail_msg("case %zu: detected %s, expected %s", i, chat_tmpl_name(got),
                     chat_tmpl_name(cases[i].want));
    }
}

/* llama.cpp's test conversation: system, then alternating turns, with an assistant
 * reply padded by spaces to show which families trim. */
static const struct chat_msg g_conv[] = {
    {"system", "You are a helpful assistant"},
    {"user", "Hello"},
    {"assistant", "Hi there"},
    {"user", "Who are you"},
    {"assistant", "   I am an assistant   "},
    {"user", "Another question"},
};
static const size_t g_n_conv = sizeof g_conv / sizeof g_conv[0];

static void expect_render(enum chat_tmpl t, const char *want)
{
    char *got = NULL;
    int rc = chat_tmpl_apply(t, g_conv, g_n_conv, true, &got);
    if (rc) fail_msg("%s: rc %d", chat_tmpl_name(t), rc);
    if (strcmp(got, want)) fail_msg("%s:\n got: [%s]\nwant: [%s]", chat_tmpl_name(t), got, want);
    free(got);
}

static void test_chat_render_chatml_family(void **state)
{
    (void)state;
    expect_render(CHAT_TMPL_CHATML,
                  "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\n"
                  "Hello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\n"
                  "Who are you<|im_end|>\n<|im_start|>assistant\n   I am an assistant   "
                  "<|im_end|>\n<|im_start|>user\nAnother question<|im_end|>\n"
                  "<|im_start|>assistant\n");
    expect_render(CHAT_TMPL_PHI4,
                  "<|im_start|>system<|im_sep|>You are a helpful assistant<|im_end|>"
                  "<|im_start|>user<|im_sep|>Hello<|im_end|><|im_start|>assistant<|im_sep|>"
                  "Hi there<|im_end|><|im_start|>user<|im_sep|>Who are you<|im_end|>"
                  "<|im_start|>assistant<|im_sep|>   I am an assistant   <|im_end|>"
                  "<|im_start|>user<|im_sep|>Another question<|im_end|>"
                  "<|im_start|>assistant<|im_sep|>");
}

static void test_chat_render_llama_family(void **state)
{
    (void)state;
    /* The old Mistral template refuses a system role; llama.cpp's merge. */
    expect_render(CHAT_TMPL_LLAMA2,
                  "[INST] You are a helpful assistant\nHello [/INST]Hi there</s>[INST] Who are "
                  "you [/INST]   I am an assistant   </s>[INST] Another question [/INST]");
    /* Meta's template with bos_token "<s>", minus the leading BOS. */
    expect_render(CHAT_TMPL_LLAMA2_SYS,
                  "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST] Hi "
                  "there </s><s>[INST] Who are you [/INST] I am an assistant </s><s>[INST] "
                  "Another question [/INST]");
    expect_render(CHAT_TMPL_LLAMA3,
                  "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant"
                  "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void test_chat_render_llama31_date_header(void **state)
{
    (void)state;
    expect_render(CHAT_TMPL_LLAMA31,
                  "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December "
                  "2023\nToday Date: 26 Jul 2024\n\nYou are a helpful assistant<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n");
    /* No system message: the header turn is still there, empty after the date. */
    char *out;
    struct chat_opts o = {.add_generation_prompt = true, .date_string = "01 Jan 2026"};
    assert_int_equal(chat_tmpl_render(CHAT_TMPL_LLAMA31, g_conv + 1, 1, &o, &out), 0);
    assert_string_equal(out, "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge "
                             "Date: December 2023\nToday Date: 01 Jan 2026\n\n<|eot_id|>"
                             "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
                             "<|start_header_id|>assistant<|end_header_id|>\n\n");
    free(out);
}

static void test_chat_render_mistral_family(void **state)
{
    (void)state;
    expect_render(CHAT_TMPL_MISTRAL_V1,
                  " [INST] You are a helpful assistant\n\nHello [/INST] Hi there</s> [INST] Who "
                  "are you [/INST]    I am an assistant   </s> [INST] Another question [/INST]");
    /* v3 and v3-tekken put the system prompt in the last user turn. */
    expect_render(CHAT_TMPL_MISTRAL_V3,
                  "[INST] Hello[/INST] Hi there</s>[INST] Who are you[/INST] I am an assistant"
                  "</s>[INST] You are a helpful assistant\n\nAnother question[/INST]");
    expect_render(CHAT_TMPL_MISTRAL_V3_TEKKEN,
                  "[INST]Hello[/INST]Hi there</s>[INST]Who are you[/INST]   I am an assistant   "
                  "</s>[INST]You are a helpful assistant\n\nAnother question[/INST]");
    expect_render(CHAT_TMPL_MISTRAL_V7,
                  "[SYSTEM_PROMPT] You are a helpful assistant[/SYSTEM_PROMPT][INST] Hello"
                  "[/INST] Hi there</s>[INST] Who are you[/INST]    I am an assistant   </s>"
                  "[INST] Another question[/INST]");
}

static void test_chat_render_phi3_zephyr_gemma(void **state)
{
    (void)state;
    expect_render(CHAT_TMPL_PHI3,
                  "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n"
                  "<|assistant|>\nHi there<|end|>\n<|user|>\nWho are you<|end|>\n<|assistant|>\n"
                  "   I am an assistant   <|end|>\n<|user|>\nAnother question<|end|>\n"
                  "<|assistant|>\n");
    /* zephyr-7b-beta / TinyLlama with eos_token "</s>" (trim_blocks keeps the "\n" after
     * each {{ }}). */
    expect_render(CHAT_TMPL_ZEPHYR,
                  "<|system|>\nYou are a helpful assistant</s>\n<|user|>\nHello</s>\n"
                  "<|assistant|>\nHi there</s>\n<|user|>\nWho are you</s>\n<|assistant|>\n"
                  "   I am an assistant   </s>\n<|user|>\nAnother question</s>\n<|assistant|>\n");
    /* System merged into the first user turn; assistant -> model; trimmed. */
    expect_render(CHAT_TMPL_GEMMA,
                  "<start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n"
                  "<start_of_turn>model\nHi there<end_of_turn>\n<start_of_turn>user\nWho are you"
                  "<end_of_turn>\n<start_of_turn>model\nI am an assistant<end_of_turn>\n"
                  "<start_of_turn>user\nAnother question<end_of_turn>\n<start_of_turn>model\n");
}

static void test_chat_render_options_and_edges(void **state)
{
    (void)state;
    char *out = NULL;
    const struct chat_msg two[] = {{"user", "Hi"}, {"assistant", "Yo"}};
    /* No generation prompt: the history only. */
    assert_int_equal(chat_tmpl_apply(CHAT_TMPL_CHATML, two, 2, false, &out), 0);
    assert_string_equal(out,
                        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n");
    free(out);
    /* The model's own EOS piece for zephyr (StableLM). */
    assert_int_equal(chat_tmpl_apply_eos(CHAT_TMPL_ZEPHYR, two, 1, true, "<|endoftext|>", &out), 0);
    assert_string_equal(out, "<|user|>\nHi<|endoftext|>\n<|assistant|>\n");
    free(out);
    /* llama-2 without a system message: BOS text only between turns. */
    assert_int_equal(chat_tmpl_apply(CHAT_TMPL_LLAMA2_SYS, g_conv + 1, 3, true, &out), 0);
    assert_string_equal(out, "[INST] Hello [/INST] Hi there </s><s>[INST] Who are you [/INST]");
    free(out);
    /* Phi-3.5 skips an empty system message; gemma drops an empty one. */
    const struct chat_msg empty_sys[] = {{"system", ""}, {"user", "Q"}};
    assert_int_equal(chat_tmpl_apply(CHAT_TMPL_PHI3, empty_sys, 2, true, &out), 0);
    assert_string_equal(out, "<|user|>\nQ<|end|>\n<|assistant|>\n");
    free(out);
    assert_int_equal(chat_tmpl_apply(CHAT_TMPL_GEMMA, empty_sys, 2, true, &out), 0);
    assert_string_equal(out, "<start_of_turn>user\nQ<end_of_turn>\n<start_of_turn>model\n");
    free(out);
    /* Empty conversation. */
    assert_int_equal(chat_tmpl_apply(CHAT_TMPL_LLAMA3, NULL, 0, false, &out), 0);
    assert_string_equal(out, "");
    free(out);
    /* Errors: unknown role, NULL content, no family. */
    const struct chat_msg bad_role[] = {{"user", "a"}, {"tool", "b"}};
    out = (char *)1;
    assert_int_equal(chat_tmpl_apply(CHAT_TMPL_CHATML, bad_role, 2, true, &out), MESH_EINVAL);
    assert_null(out);
    const struct chat_msg null_content[] = {{"user", NULL}};
    assert_int_equal(chat_tmpl_apply(CHAT_TMPL_CHATML, null_content, 1, true, &out), MESH_EINVAL);
    const struct chat_msg null_role[] = {{NULL, "x"}};
    assert_int_equal(chat_tmpl_apply(CHAT_TMPL_CHATML, null_role, 1, true, &out), MESH_EINVAL);
    assert_int_equal(chat_tmpl_apply(CHAT_TMPL_UNKNOWN, two, 2, true, &out), MESH_EINVAL);
    assert_int_equal(chat_tmpl_apply((enum chat_tmpl)999, two, 2, true, &out), MESH_EINVAL);
}

static void test_chat_names_round_trip(void **state)
{
    (void)state;
    for (int t = CHAT_TMPL_UNKNOWN + 1; t < CHAT_TMPL_COUNT_; t++)
        assert_int_equal(chat_tmpl_from_name(chat_tmpl_name((enum chat_tmpl)t)), t);
    assert_int_equal(chat_tmpl_from_name("nope"), CHAT_TMPL_UNKNOWN);
    assert_int_equal(chat_tmpl_from_name(NULL), CHAT_TMPL_UNKNOWN);
    assert_string_equal(chat_tmpl_name((enum chat_tmpl)-1), "unknown");
    assert_int_equal(chat_tmpl_fallback(), CHAT_TMPL_CHATML);
}

static void test_chat_select_override_detect_fallback(void **state)
{
    (void)state;
    enum chat_tmpl t;
    assert_int_equal(chat_tmpl_select(T_GEMMA, NULL, &t), 0);
    assert_int_equal(t, CHAT_TMPL_GEMMA);
    assert_int_equal(chat_tmpl_select(T_GEMMA, "llama3", &t), 0);
    assert_int_equal(t, CHAT_TMPL_LLAMA3);
    assert_int_equal(chat_tmpl_select(T_VICUNA, NULL, &t), 0);
    assert_int_equal(t, CHAT_TMPL_CHATML);
    assert_int_equal(chat_tmpl_select(NULL, NULL, &t), 0);
    assert_int_equal(t, CHAT_TMPL_CHATML);
    assert_int_equal(chat_tmpl_select(T_GEMMA, "jinja2", &t), MESH_EINVAL);
    assert_int_equal(t, CHAT_TMPL_CHATML);
}

static void test_chat_default_system_prompt(void **state)
{
    (void)state;
    char buf[128];
    const char *qwen25 = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
    assert_int_equal(chat_tmpl_default_system(T_QWEN25, buf, sizeof buf), (int)strlen(qwen25));
    assert_string_equal(buf, qwen25);
    assert_int_equal(chat_tmpl_default_system(T_QWEN2, buf, sizeof buf), 27);
    assert_string_equal(buf, "You are a helpful assistant");
    assert_int_equal(chat_tmpl_default_system(T_CHATML, buf, sizeof buf), 0);
    assert_string_equal(buf, "");
    assert_int_equal(chat_tmpl_default_system(NULL, buf, sizeof buf), 0);
    assert_int_equal(chat_tmpl_default_system(T_QWEN2, buf, 10), MESH_ERANGE);
    /* escapes decoded; an unterminated literal is not one */
    assert_int_equal(chat_tmpl_default_system("'<|im_start|>system\\nA\\'s\\tb<|im_end|>'", buf,
                                              sizeof buf), 5);
    assert_string_equal(buf, "A's\tb");
    assert_int_equal(chat_tmpl_default_system("<|im_start|>system\\nabc", buf, sizeof buf), 0);

    /* Rendering: the default goes first only when the conversation has no system turn. */
    char *out;
    struct chat_opts o = {.add_generation_prompt = true, .default_system = "Be brief."};
    assert_int_equal(chat_tmpl_render(CHAT_TMPL_CHATML, g_conv + 1, 1, &o, &out), 0);
    assert_string_equal(out, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello"
                             "<|im_end|>\n<|im_start|>assistant\n");
    free(out);
    assert_int_equal(chat_tmpl_render(CHAT_TMPL_CHATML, g_conv, 2, &o, &out), 0);
    assert_string_equal(out, "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
                             "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n");
    free(out);
    assert_int_equal(chat_tmpl_render(CHAT_TMPL_CHATML, NULL, 0, &o, &out), 0);
    assert_string_equal(out, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>assistant\n");
    free(out);
    assert_int_equal(chat_tmpl_render(CHAT_TMPL_CHATML, g_conv, 2, NULL, &out), MESH_EINVAL);
}

static bool stops_have(enum chat_tmpl t, const char *s)
{
    for (const char *const *p = chat_tmpl_stops(t); *p; p++)
        if (!strcmp(*p, s)) return true;
    return false;
}

static void test_chat_stops_per_family(void **state)
{
    (void)state;
    assert_true(stops_have(CHAT_TMPL_CHATML, "<|im_end|>"));
    assert_true(stops_have(CHAT_TMPL_PHI4, "<|im_end|>"));
    assert_true(stops_have(CHAT_TMPL_LLAMA2, "</s>"));
    assert_true(stops_have(CHAT_TMPL_LLAMA2_SYS, "</s>"));
    assert_true(stops_have(CHAT_TMPL_LLAMA3, "<|eot_id|>"));
    assert_true(stops_have(CHAT_TMPL_MISTRAL_V1, "</s>"));
    assert_true(stops_have(CHAT_TMPL_MISTRAL_V7, "</s>"));
    assert_true(stops_have(CHAT_TMPL_PHI3, "<|end|>"));
    assert_true(stops_have(CHAT_TMPL_ZEPHYR, "</s>"));
    assert_true(stops_have(CHAT_TMPL_GEMMA, "<end_of_turn>"));
    assert_false(stops_have(CHAT_TMPL_GEMMA, "</s>"));
    assert_null(chat_tmpl_stops(CHAT_TMPL_UNKNOWN)[0]);
}

/* chat_setup (what `chat` and `serve` both use) carries the detected family, the template's
 * default system prompt and the tokenizer's EOS text into every render. */
static void test_chat_setup_for_a_model(void **state)
{
    (void)state;
    struct chat_setup cs;
    struct chat_msg user = {"user", "Hi"};
    char *out = NULL;
    assert_int_equal(chat_setup_init(&cs, T_QWEN2, NULL, NULL), 0);
    assert_int_equal(cs.tmpl, CHAT_TMPL_CHATML);
    assert_int_equal(chat_setup_render(&cs, &user, 1, true, &out), 0);
    assert_string_equal(out, "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
                             "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    free(out);
    chat_setup_free(&cs);
    /* the EOS text comes from the model's tokenizer (stories260K's GGUF: "</s>") */
    struct gguf *g = NULL;
    struct tok *t = NULL;
    char err[256];
    assert_int_equal(gguf_open(test_model_path("stories260K.gguf"), &g, err, sizeof err), 0);
    assert_int_equal(tok_load(g, &t, err, sizeof err), 0);
    assert_int_equal(chat_setup_init(&cs, T_LLAMA2_SYS, t, NULL), 0);
    char piece[64];
    int n = tok_piece(t, tok_eos(t), true, piece, sizeof piece - 1);
    assert_true(n > 0);
    piece[n] = 0;
    assert_string_equal(cs.eos_text, piece);
    struct chat_msg conv[3] = {{"user", "Hi"}, {"assistant", "Hello"}, {"user", "More"}};
    assert_int_equal(chat_setup_render(&cs, conv, 3, true, &out), 0);
    char want[96];
    snprintf(want, sizeof want, "Hello %s", piece);
    assert_non_null(strstr(out, want));
    free(out);
    chat_setup_free(&cs);
    /* an override wins; an unknown one is refused */
    assert_int_equal(chat_setup_init(&cs, T_QWEN2, t, "gemma"), 0);
    assert_int_equal(cs.tmpl, CHAT_TMPL_GEMMA);
    chat_setup_free(&cs);
    assert_int_equal(chat_setup_init(&cs, T_QWEN2, t, "no-such-family"), MESH_EINVAL);
    chat_setup_free(&cs);
    tok_free(t);
    gguf_close(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_detect_real_templates),
        cmocka_unit_test(test_chat_render_chatml_family),
        cmocka_unit_test(test_chat_render_llama_family),
        cmocka_unit_test(test_chat_render_llama31_date_header),
        cmocka_unit_test(test_chat_render_mistral_family),
        cmocka_unit_test(test_chat_render_phi3_zephyr_gemma),
        cmocka_unit_test(test_chat_render_options_and_edges),
        cmocka_unit_test(test_chat_names_round_trip),
        cmocka_unit_test(test_chat_select_override_detect_fallback),
        cmocka_unit_test(test_chat_default_system_prompt),
        cmocka_unit_test(test_chat_stops_per_family),
        cmocka_unit_test(test_chat_setup_for_a_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
