// grammar.test.mjs - structured output through the official `openai` npm client and the
// `ollama` client against a running `meshllm serve` (stories260K): beta.chat.completions.parse
// with zodResponseFormat must parse (nested object, enum, array bounds, optional field),
// json_object gives an object, a streamed json_schema reply parses once joined, a bad schema
// is a 400 the SDK raises with the reason, and Ollama's format (schema) parses too.
// Env: MESHLLM_URL, MESHLLM_OLLAMA_URL.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { zodResponseFormat } from 'openai/helpers/zod';
import { z } from 'zod';
import { Ollama } from 'ollama';

const URL = process.env.MESHLLM_URL;
const MODEL = 'stories260K';
const client = new OpenAI({ baseURL: URL + '/v1', apiKey: 'none', maxRetries: 0, timeout: 60000 });

const Pet = z.object({
  name: z.string().max(12),
  kind: z.enum(['cat', 'dog', 'bird']),
  age: z.number().int(),
  friends: z.array(z.object({ name: z.string().max(8), close: z.boolean() })).max(2),
  note: z.string().max(10).nullable(),
});

test('zodResponseFormat: parse() succeeds on every seed', async () => {
  for (let seed = 1; seed <= 4; seed++) {
    const r = await client.beta.chat.completions.parse({
      model: MODEL,
      messages: [{ role: 'user', content: 'Describe a pet.' }],
      response_format: zodResponseFormat(Pet, 'pet'),
      temperature: 1,
      seed,
      max_tokens: 600,
    });
    const pet = r.choices[0].message.parsed;
    assert.ok(pet, `seed ${seed}: nothing parsed from ${r.choices[0].message.content}`);
    assert.deepEqual(Pet.parse(pet), pet);
    assert.ok(['cat', 'dog', 'bird'].includes(pet.kind));
    assert.equal(r.choices[0].finish_reason, 'stop');
  }
});

test('json_object: the reply is one JSON object', async () => {
  const r = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: 'A JSON object please.' }],
    response_format: { type: 'json_object' },
    temperature: 0.8,
    seed: 3,
    max_tokens: 400,
  });
  const text = r.choices[0].message.content;
  if (r.choices[0].finish_reason === 'stop') {
    const v = JSON.parse(text);
    assert.equal(typeof v, 'object');
    assert.ok(!Array.isArray(v) && v !== null);
  } else {
    assert.match(text, /^\{/); // cut by max_tokens: still the start of an object
  }
});

test('json_schema streamed: the joined deltas parse', async () => {
  const stream = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: 'List.' }],
    response_format: {
      type: 'json_schema',
      json_schema: { name: 'l', strict: true, schema: { type: 'array', items: { type: 'integer' }, minItems: 1, maxItems: 5 } },
    },
    stream: true,
    seed: 9,
    max_tokens: 300,
  });
  let text = '';
  for await (const c of stream) text += c.choices[0]?.delta?.content ?? '';
  const a = JSON.parse(text);
  assert.ok(Array.isArray(a) && a.length >= 1 && a.length <= 5 && a.every(Number.isInteger));
});

test('a bad schema is a 400 naming the problem', async () => {
  await assert.rejects(
    client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'x' }],
      response_format: { type: 'json_schema', json_schema: { name: 'b', schema: { type: 'string', pattern: 'a+' } } },
    }),
    (e) => e.status === 400 && /pattern/.test(e.message),
  );
});

test('ollama format: a schema object constrains /api/chat', async () => {
  const ollama = new Ollama({ host: process.env.MESHLLM_OLLAMA_URL });
  const schema = { type: 'object', properties: { ok: { type: 'boolean' }, n: { type: 'integer' } }, required: ['ok', 'n'] };
  const r = await ollama.chat({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], format: schema, options: { seed: 5, num_predict: 200 } });
  const v = JSON.parse(r.message.content);
  assert.equal(typeof v.ok, 'boolean');
  assert.ok(Number.isInteger(v.n));
  await assert.rejects(ollama.generate({ model: MODEL, prompt: 'x', format: { type: 'nope' } }), (e) => /nope/.test(e.message));
});
