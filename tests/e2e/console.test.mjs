// console.test.mjs - the web console in headless Chromium (Debian's /usr/bin/chromium driven
// by playwright-core): loads, lists both models, sends a message and sees the reply stream in
// (several partial renders before the end), switches model (the next request names it), shows
// live node status, the route selector (X-Meshllm-Route) and where each reply ran, the mesh
// map (from a stubbed /node/peers); saves a screenshot to tests/artifacts/console.png.
// Env: MESHLLM_URL (a server with models stories260K and stories260K-Q6_K), ARTIFACTS.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const URL = process.env.MESHLLM_URL;
const profile = mkdtempSync(join(tmpdir(), 'meshllm-chromium-'));
let browser;

after(async () => {
  if (browser) await browser.close();
  rmSync(profile, { recursive: true, force: true });
});

test('console: load, stream a reply, switch model, status, screenshot', async () => {
  // A fresh profile directory (playwright passes it as --user-data-dir).
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1200, height: 800 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run'],
  });
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const bodies = [], routes = [];
  page.on('request', (r) => {
    if (!r.url().endsWith('/v1/chat/completions')) return;
    bodies.push(JSON.parse(r.postData()));
    routes.push(r.headers()['x-meshllm-route']);
  });
  await page.goto(URL + '/');
  assert.equal(await page.title(), 'meshllm console');
  await page.waitForFunction(() => document.querySelectorAll('#model option').length === 2);
  const models = await page.$$eval('#model option', (o) => o.map((x) => x.value));
  assert.deepEqual(models.sort(), ['stories260K', 'stories260K-Q6_K']);
  await page.selectOption('#model', 'stories260K');

  // Record every distinct rendering of the assistant's message while it streams.
  await page.evaluate(() => {
    window.__renders = [];
    new MutationObserver(() => {
      const b = document.querySelector('.msg.assistant .body');
      if (b && window.__renders[window.__renders.length - 1] !== b.textContent) window.__renders.push(b.textContent);
    }).observe(document.getElementById('messages'), { childList: true, subtree: true, characterData: true });
  });
  await page.fill('#max_tokens', '120');
  // The engine writes 120 tokens in a few milliseconds; throttle the browser's downloads
  // (Chrome DevTools network emulation) so the stream arrives over many reads whatever
  // the machine's speed, and progressive rendering is what is tested.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: 16384, uploadThroughput: -1 });
  await page.fill('#temperature', '0');
  await page.fill('#input', 'Once upon a time');
  await page.click('#send');
  await page.waitForSelector('.msg.assistant[data-done="1"]', { timeout: 30000 });
  const reply = await page.textContent('.msg.assistant .body');
  assert.ok(reply.trim().length > 20, 'reply: ' + reply);
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  const renders = await page.evaluate(() => window.__renders);
  assert.ok(renders.length >= 3, 'the reply was rendered progressively: ' + renders.length);
  assert.ok(Number(await page.getAttribute('.msg.assistant', 'data-chunks')) >= 3);
  assert.equal(bodies[0].model, 'stories260K');
  assert.equal(bodies[0].stream, true);
  assert.match(await page.textContent('#gen-stats'), /tokens in/);
  // where it ran: the label after the reply, from X-Meshllm-Ran-On / meshllm.ran_on
  assert.equal(await page.getAttribute('.msg.assistant', 'data-ran-on'), 'local');
  assert.match(await page.textContent('.msg.assistant .ran-on'), /ran on this device/);
  assert.equal(routes[0], undefined, "the node's default route: no header");

  // the route selector: "this device only" sends X-Meshllm-Route: local
  const opts = await page.$$eval('#route option', (o) => o.map((x) => x.value));
  assert.deepEqual(opts, ['', 'local', 'own', 'mesh']);
  assert.match(await page.textContent('#route option[value=""]'), /default \(local\)/);
  await page.selectOption('#route', 'local');
  // no mesh here (no --p2p): the map says so
  assert.match(await page.textContent('#mesh-map-note'), /peer-to-peer is off/);
  assert.equal(await page.$('#mesh-map'), null);

  // Switch model and send again: the request names the new model, a second reply arrives.
  await page.selectOption('#model', 'stories260K-Q6_K');
  await page.fill('#input', 'The little dog');
  await page.click('#send');
  await page.waitForFunction(() => document.querySelectorAll('.msg.assistant[data-done="1"]').length === 2, null, { timeout: 30000 });
  assert.equal(bodies[1].model, 'stories260K-Q6_K');
  assert.equal(routes[1], 'local');
  assert.match(await page.$$eval('.msg.assistant .ran-on', (b) => b[1].textContent), /ran on this device/);
  assert.equal(bodies[1].messages.length, 3, 'history sent with the second turn');
  const second = await page.$$eval('.msg.assistant .body', (b) => b[1].textContent);
  assert.ok(second.trim().length > 0);
  assert.equal(await page.$$eval('.msg.error', (e) => e.length), 0);

  // Live status shows both models ready and the generated tokens.
  await page.waitForFunction(() => document.querySelectorAll('#model-table tbody tr').length === 2, null, { timeout: 10000 });
  const table = await page.textContent('#model-table');
  assert.match(table, /stories260K-Q6_K\s*ready/);
  assert.match(await page.textContent('#status'), /memory/);
  assert.ok(await page.isVisible('#mesh'));

  const dir = process.env.ARTIFACTS;
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, 'console.png'), fullPage: true });
  assert.deepEqual(errors, []);
});

test('mesh map: members, their models, load and RTT from /node/peers', async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const peer = (id, extra) => ({ id, connected: true, member: true, own: false, rtt_ms: 1.25, announced: true, models: [],
    ok: 3, failed: 1, busy: 0, lies: 0, inflight: 0, ...extra });
  const view = {
    enabled: true, peer_id: '12D3KooWSelfSelfSelfSelf', peers: [{ id: '12D3KooWPeerAAAAAAAAAAAA', connected: true, how: 'mdns', latency_ms: 1.2, addrs: [] }],
    route: 'mesh',
    mesh: { id: 'meshIdmeshIdmeshIdmeshId', member: true, stats: {}, peers: [
      peer('12D3KooWPeerAAAAAAAAAAAA', { own: true, models: [{ name: 'big<b>', n_ctx: 4096, slots: 4, active: 2, queued: 1, tokens_per_s: 31.7 }] }),
      peer('12D3KooWPeerBBBBBBBBBBBB', { rtt_ms: null, announced: false, models: undefined, connected: false }),
      peer('12D3KooWStrangerCCCCCCCC', { member: false }),
    ] },
  };
  await page.route('**/node/peers', (r) => r.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(view) }));
  await page.goto(URL + '/');
  await page.waitForSelector('#mesh-map tbody tr');
  const rows = await page.$$eval('#mesh-map tbody tr', (t) => t.map((r) => r.textContent));
  assert.equal(rows.length, 2, 'members only: ' + rows.join(' | '));
  assert.match(rows[0], /12D3KooW\.\.\.AAAAAA \(own\)/);
  assert.match(rows[0], /big<b> 2\/4, 1, 32/); // escaped, shown as text
  assert.match(rows[0], /1\.3 ms/);
  assert.match(rows[0], /3\/1\/0/);
  assert.match(rows[1], /offline/);
  assert.match(rows[1], /not announced yet/);
  assert.match(await page.textContent('#mesh-map-note'), /2 other members, 1 connected\. Default route: mesh/);
  assert.match(await page.textContent('#route option[value=""]'), /default \(mesh\)/);
  assert.equal(await page.$$eval('#peer-table tbody tr', (t) => t.length), 1);
  // a node that runs p2p but is in no mesh says so
  view.mesh = { id: '', member: false, stats: {}, peers: [] };
  await page.reload();
  await page.waitForFunction(() => /not a member/.test(document.getElementById('mesh-map-note').textContent));
  assert.equal(await page.$('#mesh-map'), null);
  // p2p on, mesh layer absent
  delete view.mesh;
  await page.reload();
  await page.waitForFunction(() => /not the mesh/.test(document.getElementById('mesh-map-note').textContent));
  assert.deepEqual(errors, []);
  await page.close();
});

test('markdown renderer escapes HTML and renders code, lists, emphasis', async () => {
  const page = await browser.newPage();
  await page.goto(URL + '/');
  const html = await page.evaluate(() => renderMarkdown('# Title\n**bold** and *it* `x<y`\n- a\n- b\n\n```js\n<script>alert(1)</script>\n```\n<img src=x onerror=alert(1)>'));
  assert.match(html, /<h3>Title<\/h3>/);
  assert.match(html, /<strong>bold<\/strong>/);
  assert.match(html, /<em>it<\/em>/);
  assert.match(html, /<code>x&lt;y<\/code>/);
  assert.match(html, /<ul><li>a<\/li><li>b<\/li><\/ul>/);
  assert.match(html, /<pre><code>&lt;script&gt;alert\(1\)&lt;\/script&gt;\n<\/code><\/pre>/);
  assert.ok(!html.includes('<img'), html);
  assert.ok(!html.includes('<script'), html);
});
