// openai.test.mjs - the official `openai` npm client against a running `meshllm serve`.
// Env: MESHLLM_URL (base URL), MESHLLM_KEY (the server's --api-key), MESHLLM_BIN and
// MESHLLM_MODEL_PATH (to compare with `meshllm run`), MESHLLM_BROKEN (name of a model that
// fails to load). Checks chat (plain, streaming), completions, models, embeddings, logprobs,
// stop, seed, every error status and shape, 8 concurrent streams vs the same prompts alone,
// and an Ollama NDJSON stream.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import OpenAI from 'openai';

const URL = process.env.MESHLLM_URL;
const KEY = process.env.MESHLLM_KEY;
const MODEL = 'stories260K';
const client = new OpenAI({ baseURL: URL + '/v1', apiKey: KEY, maxRetries: 0, timeout: 60000 });

async function streamText(params) {
  const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  let text = '', finish = null, usage = null, chunks = 0, roleSeen = false;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    const c = chunk.choices[0];
    if (!c) continue;
    chunks++;
    if (c.delta.role === 'assistant') roleSeen = true;
    if (c.delta.content) text += c.delta.content;
    if (c.finish_reason) finish = c.finish_reason;
  }
  return { text, finish, usage, chunks, roleSeen };
}

function expectApiError(err, status, code) {
  assert.ok(err instanceof OpenAI.APIError, 'an APIError: ' + err);
  assert.equal(err.status, status);
  assert.equal(typeof err.error.message, 'string');
  assert.ok(err.error.message.length > 0);
  assert.equal(typeof err.error.type, 'string');
  assert.ok('param' in err.error && 'code' in err.error, 'error object has param and code');
  if (code !== undefined) assert.equal(err.code, code);
}

async function rejects(promise, status, code) {
  try {
    await promise;
  } catch (err) {
    expectApiError(err, status, code);
    return err;
  }
  assert.fail('expected HTTP ' + status);
}

const story = [{ role: 'user', content: 'Once upon a time' }];

test('models list and retrieve', async () => {
  const list = await client.models.list();
  const ids = list.data.map((m) => m.id);
  assert.ok(ids.includes(MODEL), ids.join(','));
  for (const e of list.data) {
    assert.equal(e.meshllm.local, true, 'a model loaded here: ' + JSON.stringify(e));
    assert.ok(Array.isArray(e.meshllm.where));
  }
  const m = await client.models.retrieve(MODEL);
  assert.equal(m.id, MODEL);
  assert.equal(m.object, 'model');
  assert.equal(m.meshllm.local, true);
  await rejects(client.models.retrieve('no-such-model'), 404, 'model_not_found');
});

test('chat completion: plain and streaming agree (greedy)', async () => {
  const params = { model: MODEL, messages: story, max_tokens: 24, temperature: 0 };
  const r = await client.chat.completions.create(params);
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  const text = r.choices[0].message.content;
  assert.ok(text.length > 0);
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.prompt_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  const s = await streamText(params);
  assert.equal(s.text, text);
  assert.equal(s.finish, r.choices[0].finish_reason);
  assert.ok(s.roleSeen);
  assert.ok(s.chunks >= 3, 'streamed in several chunks: ' + s.chunks);
  // the same prompt again: the slot's cache serves all of it but the last token
  const { prompt_tokens_details: sd, ...su } = s.usage, { prompt_tokens_details: rd, ...ru } = r.usage;
  assert.deepEqual(su, ru);
  assert.equal(rd.cached_tokens, 0);
  assert.equal(sd.cached_tokens, s.usage.prompt_tokens - 1);
  // max_completion_tokens is the newer name of the same limit
  const r2 = await client.chat.completions.create({ model: MODEL, messages: story, max_completion_tokens: 5, temperature: 0 });
  assert.equal(r2.usage.completion_tokens, 5);
  assert.equal(r2.choices[0].finish_reason, 'length');
});

test('completions equal `meshllm run` greedy output', async () => {
  const prompt = 'Once upon a time';
  const r = await client.completions.create({ model: MODEL, prompt, max_tokens: 20, temperature: 0 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.usage.completion_tokens, 20);
  const cli = execFileSync(process.env.MESHLLM_BIN, ['run', process.env.MESHLLM_MODEL_PATH, prompt, '-n', '20', '--temp', '0'], { encoding: 'utf8' });
  assert.equal(r.choices[0].text, cli);
  // streaming completions carry the same text
  const stream = await client.completions.create({ model: MODEL, prompt, max_tokens: 20, temperature: 0, stream: true });
  let text = '';
  for await (const c of stream) text += c.choices[0]?.text ?? '';
  assert.equal(text, cli);
  // default max_tokens of the completions API is 16
  const d = await client.completions.create({ model: MODEL, prompt, temperature: 0 });
  assert.ok(d.usage.completion_tokens <= 16);
});

test('stop sequences, seed, penalties, json_object accepted', async () => {
  const base = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 30, temperature: 0 });
  const full = base.choices[0].text;
  const word = full.trim().split(/\s+/)[2];
  const cut = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 30, temperature: 0, stop: [word] });
  assert.equal(cut.choices[0].finish_reason, 'stop');
  assert.equal(cut.choices[0].text, full.slice(0, full.indexOf(word)));
  const a = await client.chat.completions.create({ model: MODEL, messages: story, max_tokens: 20, temperature: 1, seed: 42 });
  const b = await client.chat.completions.create({ model: MODEL, messages: story, max_tokens: 20, temperature: 1, seed: 42 });
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
  const p = await client.chat.completions.create({
    model: MODEL, messages: story, max_tokens: 10, presence_penalty: 1.5, frequency_penalty: 1, top_p: 0.9, response_format: { type: 'json_object' },
  });
  assert.equal(p.usage.completion_tokens > 0, true);
});

test('logprobs and top_logprobs', async () => {
  const r = await client.chat.completions.create({ model: MODEL, messages: story, max_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 3 });
  const lp = r.choices[0].logprobs.content;
  assert.equal(lp.length, r.usage.completion_tokens);
  for (const t of lp) {
    assert.ok(t.logprob <= 0);
    assert.equal(t.top_logprobs.length, 3);
    // greedy: the chosen token is the most likely one
    assert.ok(Math.abs(t.logprob - t.top_logprobs[0].logprob) < 1e-6);
    assert.ok(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob);
    assert.ok(Array.isArray(t.bytes));
  }
  assert.equal(lp.map((t) => t.token).join('').trim(), r.choices[0].message.content.trim());
});

test('embeddings: normalised, deterministic, distinct', async () => {
  const r = await client.embeddings.create({ model: MODEL, input: ['The cat sat.', 'A dog ran far away.', 'The cat sat.'] });
  assert.equal(r.data.length, 3);
  const v = r.data.map((d) => d.embedding);
  assert.equal(v[0].length, 64);
  for (const e of v) {
    const n = Math.sqrt(e.reduce((s, x) => s + x * x, 0));
    assert.ok(Math.abs(n - 1) < 1e-4, 'unit norm ' + n);
  }
  assert.deepEqual(v[0], v[2]);
  assert.notDeepEqual(v[0], v[1]);
  assert.ok(r.usage.prompt_tokens > 0);
  const f = await client.embeddings.create({ model: MODEL, input: 'The cat sat.', encoding_format: 'float' });
  for (let i = 0; i < 64; i++) assert.ok(Math.abs(f.data[0].embedding[i] - v[0][i]) < 1e-6);
});

test('errors: status and OpenAI error shape', async () => {
  // 401: wrong key, and no key
  const bad = new OpenAI({ baseURL: URL + '/v1', apiKey: 'wrong', maxRetries: 0 });
  await rejects(bad.chat.completions.create({ model: MODEL, messages: story }), 401, 'invalid_api_key');
  // 404: unknown model
  await rejects(client.chat.completions.create({ model: 'gpt-4o', messages: story }), 404, 'model_not_found');
  // 400: bad fields
  let e = await rejects(client.chat.completions.create({ model: MODEL, messages: story, temperature: 5 }), 400);
  assert.equal(e.param, 'temperature');
  e = await rejects(client.chat.completions.create({ model: MODEL, messages: [] }), 400);
  assert.equal(e.param, 'messages');
  e = await rejects(client.chat.completions.create({ model: MODEL, messages: story, n: 17 }), 400);
  assert.equal(e.param, 'n');
  e = await rejects(client.chat.completions.create({ model: MODEL, messages: [{ role: 'wizard', content: 'x' }] }), 400);
  await rejects(client.chat.completions.create({ model: MODEL, messages: story, stop: ['a', 'b', 'c', 'd', 'e'] }), 400);
  await rejects(client.chat.completions.create({ model: MODEL, messages: story, top_logprobs: 3 }), 400);
  await rejects(client.completions.create({ model: MODEL }), 400);
  // 400: malformed JSON (the SDK cannot send that: raw fetch)
  const res = await fetch(URL + '/v1/chat/completions', {
    method: 'POST', headers: { Authorization: 'Bearer ' + KEY, 'Content-Type': 'application/json' }, body: '{"model": "x", ',
  });
  assert.equal(res.status, 400);
  const body = await res.json();
  assert.equal(typeof body.error.message, 'string');
  assert.equal(body.error.type, 'invalid_request_error');
  // 413: longer than the context
  const long = 'Once upon a time there was a cat. '.repeat(400);
  await rejects(client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: long }] }), 413, 'context_length_exceeded');
  await rejects(client.completions.create({ model: MODEL, prompt: 'Hi', max_tokens: 100000 }), 413, 'context_length_exceeded');
  // 503: a model that failed to load
  if (process.env.MESHLLM_BROKEN)
    await rejects(client.chat.completions.create({ model: process.env.MESHLLM_BROKEN, messages: story }), 503, 'model_unavailable');
  // unknown path: 404 in the same shape
  const nf = await fetch(URL + '/v1/nothing', { headers: { Authorization: 'Bearer ' + KEY } });
  assert.equal(nf.status, 404);
  assert.ok((await nf.json()).error);
});

test('8 concurrent streams each equal the same prompt run alone (greedy)', async () => {
  const prompts = ['Once upon a time', 'The little dog', 'Lily and Tom went', 'One day, a bird',
    'The sun was', 'Sam had a red ball', 'There was a big tree', 'Mom said'];
  const params = (p) => ({ model: MODEL, messages: [{ role: 'user', content: p }], max_tokens: 48, temperature: 0 });
  const alone = [];
  for (const p of prompts) alone.push((await streamText(params(p))).text);
  const together = await Promise.all(prompts.map((p) => streamText(params(p))));
  for (let i = 0; i < prompts.length; i++) assert.equal(together[i].text, alone[i], 'prompt ' + i);
  assert.ok(new Set(alone).size > 4, 'outputs differ between prompts');
});

test('route: meshllm.route in the body or X-Meshllm-Route; unknown values 400', async () => {
  // the SDK sends extra body fields as they are
  const r = await client.chat.completions.create({ model: MODEL, messages: story, max_tokens: 4, temperature: 0, meshllm: { route: 'local' } });
  assert.ok(r.choices[0].message.content.length > 0);
  assert.equal(r.meshllm.ran_on, 'local');
  const c = await client.completions.create({ model: MODEL, prompt: 'Once', max_tokens: 4, meshllm: { route: 'mesh' } });
  assert.equal(c.usage.completion_tokens, 4);
  let e = await rejects(client.chat.completions.create({ model: MODEL, messages: story, meshllm: { route: 'anywhere' } }), 400);
  assert.equal(e.param, 'meshllm.route');
  assert.equal(e.type, 'invalid_request_error');
  assert.match(e.message, /'local'.*'own'.*'mesh'/);
  e = await rejects(client.completions.create({ model: MODEL, prompt: 'Once', meshllm: 'local' }), 400);
  assert.equal(e.param, 'meshllm');
  const post = (path, body, route) => fetch(URL + path, { method: 'POST', body: JSON.stringify(body),
    headers: { Authorization: 'Bearer ' + KEY, 'Content-Type': 'application/json', ...(route ? { 'X-Meshllm-Route': route } : {}) } });
  const chat = { model: MODEL, messages: story, max_tokens: 4, temperature: 0 };
  let res = await post('/v1/chat/completions', chat, 'own');
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-meshllm-ran-on'), 'local');
  res = await post('/v1/chat/completions', chat, 'sideways');
  assert.equal(res.status, 400);
  let j = await res.json();
  assert.equal(j.error.param, 'meshllm.route');
  assert.match(j.error.message, /X-Meshllm-Route/);
  // the body wins over the header
  res = await post('/v1/chat/completions', { ...chat, meshllm: { route: 'local' } }, 'sideways');
  assert.equal(res.status, 200);
  // Ollama routes take both too
  const gen = { model: MODEL, prompt: 'Once', stream: false, options: { num_predict: 4 } };
  res = await post('/api/generate', { ...gen, meshllm: { route: 'local' } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-meshllm-ran-on'), 'local');
  res = await post('/api/chat', { model: MODEL, messages: story, stream: false, meshllm: { route: 'nope' } });
  assert.equal(res.status, 400);
  // Ollama's error shape: {"error": "message"} (its clients show the string)
  assert.match((await res.json()).error, /unknown route 'nope'/);
  res = await post('/api/chat', { model: 'no-such-model', messages: story, stream: false });
  assert.equal(res.status, 404);
  assert.equal(typeof (await res.json()).error, 'string');
  res = await post('/api/generate', gen, 'nope');
  assert.equal(res.status, 400);
  res = await post('/api/generate', gen, 'mesh');
  assert.equal(res.status, 200);
});

test('n > 1: several choices, each its own generation; seeded choices repeat', async () => {
  const params = { model: MODEL, messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 10, n: 3, seed: 11 };
  const a = await client.chat.completions.create(params);
  assert.deepEqual(a.choices.map((c) => c.index), [0, 1, 2]);
  assert.equal(a.usage.completion_tokens, 30);
  const texts = a.choices.map((c) => c.message.content);
  assert.ok(new Set(texts).size >= 2, 'the choices differ: ' + JSON.stringify(texts));
  const b = await client.chat.completions.create(params);
  assert.deepEqual(b.choices.map((c) => c.message.content), texts);
  const greedy = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 6, temperature: 0, n: 2 });
  assert.equal(greedy.choices.length, 2);
  assert.equal(greedy.choices[0].text, greedy.choices[1].text);
  await assert.rejects(client.chat.completions.create({ ...params, stream: true }), (e) => { expectApiError(e, 400); return e.param === 'n'; });
});

test('responses API: create, streamed events, the same greedy text as chat', async () => {
  const input = [{ role: 'user', content: [{ type: 'input_text', text: 'Tell me a story' }] }];
  const r = await client.responses.create({ model: MODEL, instructions: 'You tell stories.', input, max_output_tokens: 12, temperature: 0 });
  assert.equal(r.object, 'response');
  assert.match(r.id, /^resp_/);
  assert.equal(r.status, 'incomplete');
  assert.equal(r.incomplete_details.reason, 'max_output_tokens');
  assert.equal(r.usage.output_tokens, 12);
  assert.ok(r.output_text.length > 0, 'output_text (the SDK joins the output items)');
  const chat = await client.chat.completions.create({ model: MODEL, max_tokens: 12, temperature: 0,
    messages: [{ role: 'system', content: 'You tell stories.' }, { role: 'user', content: 'Tell me a story' }] });
  assert.equal(r.output_text, chat.choices[0].message.content);

  const stream = await client.responses.create({ model: MODEL, input: 'Tell me a story', max_output_tokens: 12, temperature: 0, stream: true });
  const types = [];
  let deltas = '', final = null, last = -1;
  for await (const ev of stream) {
    types.push(ev.type);
    assert.equal(ev.sequence_number, last + 1);
    last = ev.sequence_number;
    if (ev.type === 'response.output_text.delta') deltas += ev.delta;
    if (ev.type === 'response.incomplete' || ev.type === 'response.completed') final = ev.response;
  }
  assert.deepEqual(types.slice(0, 4), ['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added']);
  assert.deepEqual(types.slice(-4), ['response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.incomplete']);
  assert.ok(types.filter((t) => t === 'response.output_text.delta').length >= 2);
  assert.equal(final.output[0].content[0].text, deltas);
  const plain = await client.responses.create({ model: MODEL, input: 'Tell me a story', max_output_tokens: 12, temperature: 0 });
  assert.equal(plain.output_text, deltas);

  await assert.rejects(client.responses.create({ model: MODEL, input: 'Hi', previous_response_id: r.id }),
    (e) => { expectApiError(e, 400); return /whole conversation/.test(e.error.message); });
  await assert.rejects(client.responses.create({ model: MODEL, input: [{ type: 'input_image', role: 'user' }] }),
    (e) => { expectApiError(e, 400); return true; });
});

test('Ollama: /api/chat NDJSON stream, /api/generate, /api/tags, /api/version', async () => {
  const h = { Authorization: 'Bearer ' + KEY, 'Content-Type': 'application/json' };
  const req = { model: MODEL + ':latest', messages: story, options: { temperature: 0, num_predict: 12 } };
  const res = await fetch(URL + '/api/chat', { method: 'POST', headers: h, body: JSON.stringify(req) });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /ndjson/);
  const lines = (await res.text()).trim().split('\n').map((l) => JSON.parse(l));
  assert.ok(lines.length >= 3);
  const last = lines[lines.length - 1];
  assert.equal(last.done, true);
  assert.equal(last.eval_count, 12);
  for (const l of lines.slice(0, -1)) assert.equal(l.done, false);
  const streamed = lines.map((l) => l.message.content).join('');
  const whole = await (await fetch(URL + '/api/chat', { method: 'POST', headers: h, body: JSON.stringify({ ...req, stream: false }) })).json();
  assert.equal(whole.message.content, streamed);
  assert.equal(whole.done, true);
  const gen = await (await fetch(URL + '/api/generate', { method: 'POST', headers: h,
    body: JSON.stringify({ model: MODEL, prompt: 'Once upon a time', raw: true, stream: false, options: { temperature: 0, num_predict: 20 } }) })).json();
  const cli = execFileSync(process.env.MESHLLM_BIN, ['run', process.env.MESHLLM_MODEL_PATH, 'Once upon a time', '-n', '20', '--temp', '0'], { encoding: 'utf8' });
  assert.equal(gen.response, cli);
  const tags = await (await fetch(URL + '/api/tags', { headers: h })).json();
  const tag = tags.models.find((m) => m.name === MODEL + ':latest');
  assert.ok(tag, JSON.stringify(tags));
  assert.equal(tag.meshllm.local, true);
  assert.ok(tag.size > 0);
  const ver = await (await fetch(URL + '/api/version', { headers: h })).json();
  assert.equal(typeof ver.version, 'string');
  // the same routes on the --ollama-port listener
  const other = process.env.MESHLLM_OLLAMA_URL;
  const g2 = await (await fetch(other + '/api/generate', { method: 'POST', headers: h,
    body: JSON.stringify({ model: MODEL, prompt: 'Once upon a time', raw: true, stream: false, options: { temperature: 0, num_predict: 20 } }) })).json();
  assert.equal(g2.response, cli);
});

test('health and metrics', async () => {
  const h = await fetch(URL + '/health');
  assert.equal(h.status, 200);
  const m = await fetch(URL + '/metrics', { headers: { Authorization: 'Bearer ' + KEY } });
  assert.equal(m.status, 200);
  const text = await m.text();
  assert.match(text, /^# TYPE meshllm_generated_tokens_total counter$/m);
  const gen = text.match(/^meshllm_generated_tokens_total\{model="stories260K"\} (\d+)/m);
  assert.ok(gen && Number(gen[1]) > 100, 'tokens counted');
  assert.match(text, /^meshllm_queue_depth\{model="stories260K"\} 0$/m);
  assert.match(text, /^meshllm_tokens_per_second\{model="stories260K"\} /m);
  assert.equal((await fetch(URL + '/metrics')).status, 401);
});
