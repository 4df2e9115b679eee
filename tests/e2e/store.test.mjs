// store.test.mjs - the official `ollama` npm client against `meshllm serve`'s model store:
// list, pull with progress (from the test's local HTTP server), show, embed, ps, delete.
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
  assert.equal(s.model_info['general.architecture'], 'llama');
  assert.equal(s.model_info['llama.block_count'], 5);
  assert.equal(s.model_info['llama.embedding_length'], 64);
  assert.equal(s.model_info['tokenizer.ggml.tokens'], null); // arrays only when verbose
  const v = await ollama.show({ model: 'e2e', verbose: true });
  assert.equal(v.model_info['tokenizer.ggml.tokens'].length, 512);
  assert.equal(v.model_info['tokenizer.ggml.tokens'][1], '<s>');
});

test('preload, embed (both routes), ps, a readable 404', async () => {
  // a copy, so that the model deleted below is not the one this test loads
  await ollama.copy({ source: 'e2e', destination: 'e2e-embed' });
  // Ollama's preload idiom: no prompt loads the model and answers done_reason "load"
  const pre = await ollama.generate({ model: 'e2e-embed', prompt: '' });
  assert.equal(pre.done, true);
  assert.equal(pre.done_reason, 'load');
  assert.equal(pre.response, '');
  assert.ok((await ollama.ps()).models.find((x) => x.name === 'e2e-embed:latest'));
  const r = await ollama.embed({ model: 'e2e-embed', input: ['hello', 'world'] });
  assert.equal(r.embeddings.length, 2);
  assert.equal(r.embeddings[0].length, 64); // stories260K's n_embd
  const norm = Math.hypot(...r.embeddings[0]);
  assert.ok(Math.abs(norm - 1) < 1e-4, `L2 norm ${norm}`);
  assert.notDeepEqual(r.embeddings[0], r.embeddings[1]);
  assert.ok(r.prompt_eval_count > 0);
  const old = await ollama.embeddings({ model: 'e2e-embed', prompt: 'hello' });
  assert.equal(old.embedding.length, 64);
  for (let k = 0; k < 64; k++) assert.ok(Math.abs(old.embedding[k] - r.embeddings[0][k]) < 1e-5);
  const { models } = await ollama.ps();
  const m = models.find((x) => x.name === 'e2e-embed:latest');
  assert.ok(m, JSON.stringify(models));
  assert.equal(m.size, 1185376);
  assert.equal(m.digest, sha);
  assert.ok(Date.parse(m.expires_at) > Date.now());
  await assert.rejects(ollama.chat({ model: 'nope', messages: [{ role: 'user', content: 'hi' }] }),
    // this node is in a mesh: "no peer has announced it yet" (503) rather than a plain 404
    (e) => [404, 503].includes(e.status_code) && /'nope'/.test(e.error) && !/object Object/.test(e.message));
  await assert.rejects(ollama.embed({ model: 'e2e-embed', input: [] }),
    (e) => e.status_code === 400 && /input/.test(e.error));
});

test('delete removes it; deleting again is a 404 with an Ollama error', async () => {
  await ollama.delete({ model: 'e2e' });
  const { models } = await ollama.list();
  assert.ok(!models.find((x) => x.name === 'e2e:latest'));
  await assert.rejects(ollama.delete({ model: 'e2e' }), (e) => e.status_code === 404 && /not in the store/.test(e.error));
});
