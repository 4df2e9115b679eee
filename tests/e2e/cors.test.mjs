// cors.test.mjs - cross-origin calls from a real browser (Debian's Chromium via
// playwright-core). MESHLLM_ORIGIN: http://page.test:PORT, a server's console page under a
// name Chromium maps to 127.0.0.1; MESHLLM_API: a server started with --cors MESHLLM_ORIGIN;
// MESHLLM_PLAIN: one without. The page may call API (Chromium sends the preflight, the JSON
// request, and reads a stream); calling PLAIN, the browser refuses to hand it the response.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const ORIGIN = process.env.MESHLLM_ORIGIN, API = process.env.MESHLLM_API, PLAIN = process.env.MESHLLM_PLAIN;
const profile = mkdtempSync(join(tmpdir(), 'meshllm-chromium-'));
let browser;

after(async () => {
  if (browser) await browser.close();
  rmSync(profile, { recursive: true, force: true });
});

async function open(url) {
  if (!browser)
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--no-first-run',
        '--host-resolver-rules=MAP page.test 127.0.0.1'],
    });
  const page = await browser.newPage();
  await page.goto(url + '/');
  return page;
}

// Runs in the page: a chat completion (JSON, so the browser preflights it) and a stream.
async function callFrom(page, target) {
  return page.evaluate(async (base) => {
    try {
      const body = { model: 'stories260K', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 8, temperature: 0 };
      const r = await fetch(base + '/v1/chat/completions', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
      const j = await r.json();
      const s = await fetch(base + '/v1/chat/completions', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ ...body, stream: true }) });
      const text = await s.text();
      return { ok: true, status: r.status, content: j.choices[0].message.content, events: text.split('\n\n').filter((x) => x.startsWith('data:')).length, done: text.includes('data: [DONE]') };
    } catch (e) {
      return { ok: false, error: String(e) };
    }
  }, target);
}

test('a page of the allowed origin calls the API: preflight, JSON, stream', async () => {
  const page = await open(ORIGIN);
  assert.equal(await page.title(), 'meshllm console');
  const r = await callFrom(page, API);
  assert.ok(r.ok, r.error);
  assert.equal(r.status, 200);
  assert.ok(r.content.length > 0);
  assert.ok(r.events >= 3, `only ${r.events} SSE events`);
  assert.ok(r.done);
});

test('the same page is refused by a server without --cors', async () => {
  const page = await open(ORIGIN);
  const r = await callFrom(page, PLAIN);
  assert.equal(r.ok, false, JSON.stringify(r));
  assert.match(r.error, /TypeError|Failed to fetch/);
});

test('a page of the node itself (loopback) needs no --cors', async () => {
  const page = await open(PLAIN);
  const r = await callFrom(page, PLAIN);
  assert.ok(r.ok, r.error);
  assert.equal(r.status, 200);
});
