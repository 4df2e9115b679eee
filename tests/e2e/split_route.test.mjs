// split_route.test.mjs - the console's route view against a real split setup (run by
// tests/split_route.test.sh): the mesh map lists a split model's stages in layer order with
// their layers, peer and RTT (MODE=covered, IDS = the peer IDs of the stages for 0-1, 2-3,
// 4-4), or the layers no member announces (MODE=uncovered), from /node/peers' "routes".
// Env: MESHLLM_URL (the requester, --layers none), MODE, IDS.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const URL = process.env.MESHLLM_URL;
const MODE = process.env.MODE;
const IDS = (process.env.IDS || '').split(' ').filter(Boolean);
const profile = mkdtempSync(join(tmpdir(), 'meshllm-chromium-'));
let browser;

after(async () => {
  if (browser) await browser.close();
  rmSync(profile, { recursive: true, force: true });
});

const short = (id) => (id.length > 16 ? id.slice(0, 8) + '...' + id.slice(-6) : id);

test('console: the mesh map shows the split model\'s route (' + MODE + ')', async () => {
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run'],
  });
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(URL + '/');
  await page.waitForSelector('#route-map tbody tr', { timeout: 15000 });
  if (MODE === 'uncovered') {
    const row = await page.textContent('#route-map tr.no-route');
    assert.match(row, /stories260K/);
    assert.match(row, /no route: layers 2-3 missing \(start a node with --layers 2-3\)/);
  } else {
    const rows = await page.$$eval('#route-map tbody tr', (t) => t.map((r) => ({
      layers: r.dataset.layers, cells: [...r.cells].map((c) => c.textContent), title: r.cells[3].title,
    })));
    assert.equal(rows.length, 3, JSON.stringify(rows));
    assert.deepEqual(rows.map((r) => r.layers), ['0-1', '2-3', '4-4']);
    assert.equal(rows[0].cells[0], 'stories260K');
    rows.forEach((r, i) => {
      assert.equal(r.cells[1], String(i + 1));
      assert.equal(r.cells[3], short(IDS[i]));
      assert.equal(r.title, IDS[i]);
      assert.match(r.cells[4], /^(\d+\.\d ms|-)$/);
      assert.match(r.cells[5], /^\d+\/2, \d+$/);
    });
    assert.equal(await page.$('#route-map tr.no-route'), null);
  }
  assert.deepEqual(errors, []);
});
