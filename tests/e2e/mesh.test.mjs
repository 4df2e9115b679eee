// mesh.test.mjs - the official `openai` npm client against a lite node (no model) of a
// private mesh: every answer comes from a peer that holds the model, says which, and
// survives the serving peer being killed mid-stream.
// Env (tests/mesh_delegate.test.sh sets them): MESHLLM_URL (the lite node A), MESHLLM_PEERS
// (JSON {peer id: {pid, url}} of the serving nodes B and C), MESHLLM_BIN, MESHLLM_MODEL_PATH.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import OpenAI from 'openai';

const URL = process.env.MESHLLM_URL;
const PEERS = JSON.parse(process.env.MESHLLM_PEERS);
const MODEL = 'stories260K';
const client = new OpenAI({ baseURL: URL + '/v1', apiKey: 'unused', maxRetries: 0, timeout: 120000 });

function run(prompt, n) {
  return execFileSync(process.env.MESHLLM_BIN, ['run', process.env.MESHLLM_MODEL_PATH, prompt, '-n', String(n), '--temp', '0'],
    { encoding: 'utf8' });
}

async function counters(url) {
  const r = await fetch(url + '/node/peers');
  return (await r.json()).mesh.stats;
}

test('the lite node lists the mesh model with the peers that serve it', async () => {
  const list = await client.models.list();
  const m = list.data.find((x) => x.id === MODEL);
  assert.ok(m, 'models: ' + list.data.map((x) => x.id).join(','));
  const where = m.meshllm?.where ?? [];
  assert.deepEqual([...where].sort(), Object.keys(PEERS).sort());
});

test('a structured-output request delegated to a peer stays constrained', async () => {
  // A has no model: the JSON can only come out valid if the grammar travelled to the peer
  const schema = { type: 'object', properties: { name: { type: 'string', maxLength: 10 }, n: { type: 'integer' } },
    required: ['name', 'n'], additionalProperties: false };
  for (const seed of [1, 2]) {
    const { data: r, response } = await client.chat.completions.create({
      model: MODEL, messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 300, temperature: 1, seed,
      response_format: { type: 'json_schema', json_schema: { name: 'x', strict: true, schema } },
    }).withResponse();
    assert.ok(response.headers.get('x-meshllm-ran-on') in PEERS);
    const v = JSON.parse(r.choices[0].message.content);
    assert.deepEqual(Object.keys(v), ['name', 'n']);
    assert.ok(Number.isInteger(v.n) && typeof v.name === 'string' && v.name.length <= 10, JSON.stringify(v));
  }
});

test('chat is answered by a peer, which the answer names', async () => {
  const params = { model: MODEL, messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 24, temperature: 0 };
  const { data: r, response } = await client.chat.completions.create(params).withResponse();
  const ranOn = response.headers.get('x-meshllm-ran-on');
  assert.ok(ranOn in PEERS, 'X-Meshllm-Ran-On: ' + ranOn);
  assert.equal(r.meshllm?.ran_on, ranOn);
  assert.equal(r.usage.completion_tokens, 24);
  // the same request straight to the peer that served it: the same text
  const direct = new OpenAI({ baseURL: PEERS[ranOn].url + '/v1', apiKey: 'unused', maxRetries: 0 });
  const d = await direct.chat.completions.create(params);
  assert.equal(r.choices[0].message.content, d.choices[0].message.content);
  // streaming through the mesh gives the same text
  const stream = await client.chat.completions.create({ ...params, stream: true });
  let text = '', last = null;
  for await (const c of stream) {
    text += c.choices[0]?.delta?.content ?? '';
    if (c.choices[0]?.finish_reason) last = c;
  }
  assert.equal(text, r.choices[0].message.content);
  assert.ok(last.meshllm?.ran_on in PEERS, 'last chunk names the node: ' + JSON.stringify(last));
});

test('per-request route local on the lite node: 404, and no peer sees an infer stream', async () => {
  const before = await Promise.all(Object.values(PEERS).map((p) => counters(p.url)));
  const r = await fetch(URL + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-meshllm-route': 'local' },
    body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }),
  });
  assert.equal(r.status, 404);
  const body = await r.json();
  assert.equal(body.error.code, 'model_not_found');
  const after = await Promise.all(Object.values(PEERS).map((p) => counters(p.url)));
  for (let i = 0; i < before.length; i++) assert.equal(after[i].infer_opened, before[i].infer_opened);
});

test('the serving peer killed mid-stream: the stream completes from the other, text unchanged', async () => {
  const prompt = 'Once upon a time';
  const n = 300;
  const want = run(prompt, n);
  const { data: stream, response } = await client.completions
    .create({ model: MODEL, prompt, max_tokens: n, temperature: 0, stream: true, stream_options: { include_usage: true } })
    .withResponse();
  const first = response.headers.get('x-meshllm-ran-on');
  assert.ok(first in PEERS, 'X-Meshllm-Ran-On: ' + first);
  let text = '', killed = false, usage = null, ranOn = null, pieces = 0;
  for await (const c of stream) {
    if (c.usage) usage = c.usage;
    const t = c.choices[0]?.text ?? '';
    if (t) pieces++;
    text += t;
    if (c.meshllm?.ran_on) ranOn = c.meshllm.ran_on;
    if (!killed && pieces >= 20) {
      process.kill(PEERS[first].pid, 'SIGKILL');
      killed = true;
    }
  }
  assert.ok(killed, 'the stream ended before 20 pieces');
  assert.equal(text, want);
  assert.equal(usage.completion_tokens, n);
  const nodes = ranOn.split(',');
  assert.equal(nodes.length, 2, 'ran on: ' + ranOn);
  assert.equal(nodes[0], first);
  assert.ok(nodes[1] in PEERS && nodes[1] !== first);
});
