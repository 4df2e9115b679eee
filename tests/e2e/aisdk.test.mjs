// aisdk.test.mjs - the Vercel AI SDK (`ai` with `@ai-sdk/openai-compatible`) against
// `meshllm serve` (stories260K): generateText, streamText (the same greedy text),
// generateObject in the provider's default tool mode (a forced function call) and in json
// mode with structured outputs (response_format json_schema), and embed. Env: MESHLLM_URL.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { embed, generateObject, generateText, streamText } from 'ai';
import { z } from 'zod';

const meshllm = createOpenAICompatible({ name: 'meshllm', baseURL: process.env.MESHLLM_URL + '/v1' });
const model = meshllm('stories260K');
const Pet = z.object({ name: z.string().max(10), kind: z.enum(['cat', 'dog']), age: z.number().int() });

test('generateText and streamText give the same greedy text', async () => {
  const a = await generateText({ model, prompt: 'Tell me a story', maxTokens: 12, temperature: 0 });
  assert.ok(a.text.length > 0);
  assert.equal(a.usage.completionTokens, 12);
  assert.equal(a.finishReason, 'length');
  const s = streamText({ model, prompt: 'Tell me a story', maxTokens: 12, temperature: 0 });
  let text = '', parts = 0;
  for await (const t of s.textStream) { text += t; parts++; }
  assert.equal(text, a.text);
  assert.ok(parts >= 1);
});

test('generateObject: tool mode (a forced call) and json mode with structured outputs', async () => {
  for (let seed = 1; seed <= 3; seed++) {
    const r = await generateObject({ model, schema: Pet, prompt: 'Describe a pet.', seed, maxTokens: 120 });
    assert.ok(Pet.safeParse(r.object).success, JSON.stringify(r.object));
  }
  const strict = meshllm.chatModel('stories260K', {}, { supportsStructuredOutputs: true });
  const r = await generateObject({ model: strict, schema: Pet, mode: 'json', prompt: 'Describe a pet.', seed: 7, maxTokens: 120 });
  assert.ok(Pet.safeParse(r.object).success, JSON.stringify(r.object));
});

test('embed', async () => {
  const { embedding } = await embed({ model: meshllm.textEmbeddingModel('stories260K'), value: 'hello' });
  assert.equal(embedding.length, 64);
});
