// share.test.mjs - the official `ollama` npm client pulls a model that is not in the node's
// store but that mesh members provide (tests/mesh_share.test.sh starts the mesh): progress
// streams with total/completed, the model then lists with the file's SHA-256 as digest.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ollama } from 'ollama';

const ollama = new Ollama({ host: process.env.MESHLLM_URL });
const size = Number(process.env.MESHLLM_SHARE_SIZE);
const sha = process.env.MESHLLM_SHARE_SHA;

test('pull from the mesh streams progress, then lists with its digest', async () => {
  const seen = [];
  for await (const p of await ollama.pull({ model: 'share', stream: true })) seen.push(p);
  assert.equal(seen[0].status, 'pulling manifest');
  const dl = seen.filter((p) => p.total);
  assert.ok(dl.length >= 1, JSON.stringify(seen));
  assert.equal(dl.at(-1).total, size);
  assert.equal(dl.at(-1).completed, size);
  assert.equal(seen.at(-1).status, 'success');
  const { models } = await ollama.list();
  const m = models.find((x) => x.name === 'share:latest');
  assert.ok(m, JSON.stringify(models));
  assert.equal(m.digest, `sha256:${sha}`);
  assert.equal(m.size, size);
});

test('a name nobody provides is a 404 with an Ollama error', async () => {
  await assert.rejects(ollama.pull({ model: 'nobody-has-this', stream: false }),
    (e) => e.status_code === 404 && /no member of the mesh provides it/.test(e.error));
});
