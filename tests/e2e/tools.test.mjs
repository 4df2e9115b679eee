// tools.test.mjs - tool calls through the official `openai` npm client and the `ollama`
// client against `meshllm serve` (stories260K, which has no template of its own: tools are
// described in Hermes' wording and calls parsed from <tool_call> blocks). A forced function
// (tool_choice named or required) must come back as a call whose arguments parse and fit
// the function's schema, streamed or not; the call's result goes back as a role "tool"
// message; tool_choice none leaves the tools out. Env: MESHLLM_URL, MESHLLM_OLLAMA_URL.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { Ollama } from 'ollama';

const client = new OpenAI({ baseURL: process.env.MESHLLM_URL + '/v1', apiKey: 'none', maxRetries: 0, timeout: 60000 });
const MODEL = 'stories260K';
const tools = [
  { type: 'function', function: { name: 'get_weather', description: 'Weather now',
    parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 12 }, unit: { enum: ['C', 'F'] } }, required: ['city', 'unit'] } } },
  { type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: {} } } },
];
const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];

function checkWeather(call) {
  assert.equal(call.type, 'function');
  assert.match(call.id, /^call_/);
  assert.equal(call.function.name, 'get_weather');
  const args = JSON.parse(call.function.arguments);
  assert.deepEqual(Object.keys(args).sort(), ['city', 'unit']);
  assert.ok(typeof args.city === 'string' && args.city.length <= 12);
  assert.ok(['C', 'F'].includes(args.unit));
}

test('a named function is always called, with arguments that fit its schema', async () => {
  for (let seed = 1; seed <= 4; seed++) {
    const r = await client.chat.completions.create({ model: MODEL, messages, tools, seed, max_tokens: 120,
      tool_choice: { type: 'function', function: { name: 'get_weather' } } });
    const c = r.choices[0];
    assert.equal(c.finish_reason, 'tool_calls');
    assert.equal(c.message.tool_calls.length, 1);
    checkWeather(c.message.tool_calls[0]);
  }
});

test('required: one of the tools; streamed calls arrive as tool_calls deltas', async () => {
  const r = await client.chat.completions.create({ model: MODEL, messages, tools, seed: 2, max_tokens: 120, tool_choice: 'required' });
  assert.equal(r.choices[0].finish_reason, 'tool_calls');
  assert.ok(['get_weather', 'get_time'].includes(r.choices[0].message.tool_calls[0].function.name));
  const stream = await client.chat.completions.create({ model: MODEL, messages, tools, seed: 3, max_tokens: 120, stream: true,
    tool_choice: { type: 'function', function: { name: 'get_weather' } } });
  const calls = [];
  let finish = null;
  for await (const chunk of stream) {
    const ch = chunk.choices[0];
    for (const d of ch?.delta?.tool_calls ?? []) {
      calls[d.index] ??= { id: '', type: 'function', function: { name: '', arguments: '' } };
      if (d.id) calls[d.index].id = d.id;
      if (d.function?.name) calls[d.index].function.name += d.function.name;
      if (d.function?.arguments) calls[d.index].function.arguments += d.function.arguments;
    }
    if (ch?.finish_reason) finish = ch.finish_reason;
  }
  assert.equal(finish, 'tool_calls');
  assert.equal(calls.length, 1);
  checkWeather(calls[0]);
});

test('the result goes back as a tool message; tool_choice none answers in text', async () => {
  const first = await client.chat.completions.create({ model: MODEL, messages, tools, seed: 5, max_tokens: 120,
    tool_choice: { type: 'function', function: { name: 'get_weather' } } });
  const call = first.choices[0].message.tool_calls[0];
  const r = await client.chat.completions.create({ model: MODEL, tools, max_tokens: 8, tool_choice: 'none', messages: [
    ...messages, first.choices[0].message, { role: 'tool', tool_call_id: call.id, content: '18 C and sunny' }] });
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.equal(r.choices[0].message.tool_calls, undefined);
  await assert.rejects(client.chat.completions.create({ model: MODEL, messages, tool_choice: 'required' }),
    (e) => e.status === 400 && e.param === 'tool_choice');
  await assert.rejects(client.chat.completions.create({ model: MODEL, messages, tools: [{ type: 'function', function: { name: 'bad name' } }] }),
    (e) => e.status === 400 && /tools\[0\]/.test(e.param));
});

test('ollama: chat with tools returns message.tool_calls with object arguments', async () => {
  const ollama = new Ollama({ host: process.env.MESHLLM_OLLAMA_URL });
  const r = await ollama.chat({ model: MODEL, messages, tools, tool_choice: 'required', options: { seed: 4, num_predict: 120 } });
  assert.equal(r.message.tool_calls.length, 1);
  const f = r.message.tool_calls[0].function;
  assert.ok(['get_weather', 'get_time'].includes(f.name));
  assert.equal(typeof f.arguments, 'object');
  const back = await ollama.chat({ model: MODEL, tools, options: { num_predict: 4 }, messages: [
    ...messages, r.message, { role: 'tool', content: '18 C' }] });
  assert.equal(typeof back.message.content, 'string');
});
