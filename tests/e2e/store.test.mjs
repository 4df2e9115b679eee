// store.test.mjs - the official `ollama` npm client against `meshllm serve`'s model store:
// list, pull with progress (from the test's local HTTP server), show, delete.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ollama } from 'ollama';

const ollama = new Ollama({ host: process.env.MESHLLM_URL });
const src = process.env.MESHLLM_PULL_URL;
const sha = process.env.MESHLLM_PULL_SHA;

test('pull streams progress, list shows the model with its digest', async () => {
  const seen = [];
  for await (const p of await ollama.pull({ model: src, stream: true })) seen.push(p);
  assert.equal(seen[0].status, 'pulling manifest');
  const dl = seen.filter((p) => p.digest);
  assert.ok(dl.length >= 1);
  assert.equal(dl.at(-1).digest, `sha256:${sha}`);
  assert.equal(dl.at(-1).total, 1185376);
  assert.equal(seen.at(-1).status, 'success');
  const { models } = await ollama.list();
  const m = models.find((x) => x.name === 'e2e:latest');
  assert.ok(m, JSON.stringify(models));
  assert.equal(m.digest, `sha256:${sha}`);
  assert.equal(m.size, 1185376);
});

test('show describes it', async () => {
  const s = await ollama.show({ model: 'e2e' });
  assert.equal(s.details.format, 'gguf');
  assert.equal(s.details.family, 'llama');
});

test('delete removes it; deleting again is a 404 with an Ollama error', async () => {
  await ollama.delete({ model: 'e2e' });
  const { models } = await ollama.list();
  assert.ok(!models.find((x) => x.name === 'e2e:latest'));
  await assert.rejects(ollama.delete({ model: 'e2e' }), (e) => e.status_code === 404 && /not in the store/.test(e.error));
});
