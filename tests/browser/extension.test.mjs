// The built extension in headless Chromium (WebGPU on SwiftShader) with the real engine and
// the real SmolLM2 GGUF: chat with a page, stop, engine restart, summarize a selection,
// rewrite a textarea and a contenteditable (input events, undo), and the model downloader
// (Range resume after a cut, corrupt file, quota) against a local server, then offline use.
// One browser for the whole file; replies are kept short because SwiftShader is slow.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { launch, ROOT, MODEL } from '../../scripts/lib/chromium.mjs';
import { serve } from '../../scripts/lib/server.mjs';

const MODEL_SHA256 = crypto.createHash('sha256').update(fs.readFileSync(MODEL)).digest('hex');
const FLOW = { timeout: 600_000 };
let browser, server, sparse;

before(async () => {
  sparse = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'gloss-huge-')), 'huge.gguf');
  fs.closeSync(fs.openSync(sparse, 'w'));
  fs.truncateSync(sparse, 8 * 2 ** 40); // 8 TiB, sparse: far beyond the disk, so beyond any quota
  server = await serve(path.join(ROOT, 'tests/pages'), { '/model.gguf': MODEL, '/corrupt.gguf': MODEL, '/huge.gguf': sparse });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.close();
  fs.rmSync(path.dirname(sparse), { recursive: true, force: true });
});

/** With GLOSS_SCREENSHOTS=DIR, the flows leave pictures of what a user sees (docs/). */
async function shot(page, name) {
  if (process.env.GLOSS_SCREENSHOTS) await page.screenshot({ path: path.join(process.env.GLOSS_SCREENSHOTS, `${name}.png`) });
}

async function tabId(url) {
  return browser.worker.evaluate(async (u) => (await chrome.tabs.query({ url: u }))[0]?.id, url);
}

async function openPage(name) {
  const page = await browser.context.newPage();
  await page.goto(`${server.origin}/${name}`);
  return { page, id: await tabId(`${server.origin}/${name}`) };
}

async function openPanel(tab) {
  const panel = await browser.context.newPage();
  await panel.goto(`chrome-extension://${browser.id}/sidepanel/sidepanel.html${tab ? `?tab=${tab}` : ''}`);
  return panel;
}

async function settings(panel, values) {
  if (await panel.locator('#settings').isHidden()) await panel.locator('#show-settings').click();
  for (const [id, v] of Object.entries(values)) {
    await panel.locator(`#${id}`).fill(String(v));
    await panel.locator(`#${id}`).dispatchEvent('change');
  }
  await panel.locator('#show-settings').click();
}

async function status(panel, re, timeout = 480_000) {
  await panel.waitForFunction((src) => new RegExp(src).test(document.getElementById('engine-status').textContent), re.source, { timeout });
  return panel.locator('#engine-status').textContent();
}

test('chat about the page: the reply streams, the page text is in the context', FLOW, async () => {
  const { id } = await openPage('article.html');
  const panel = await openPanel(id);
  await settings(panel, { 'max-tokens': 8, temperature: 0 });
  await panel.locator('#use-page').check();
  await panel.locator('#input').fill('Who kept the lamp burning?');
  await panel.locator('#send').click();
  const done = await status(panel, /^(Done|Stopped)|rror|cannot|failed/);
  assert.match(done, /^Done · \d+ tokens/, done);
  const reply = await panel.locator('.msg.assistant .body').last().textContent();
  assert.ok(reply.trim().length > 0, 'empty reply');
  await shot(panel, 'chat');
  // The extractor took the article, not the navigation, cookie banner or footer.
  const meter = await panel.locator('#context-meter').textContent();
  const pageTokens = Number(/page (\d+) tokens/.exec(meter)?.[1]);
  assert.ok(pageTokens > 40 && pageTokens < 200, `page tokens: ${meter}`);
  const sent = await browser.worker.evaluate((t) => globalThis.gloss.pageText(t), id);
  assert.match(sent.text, /Ada Finch/);
  assert.doesNotMatch(sent.text, /cookies|Privacy|Ten best beaches|About us/);
  // The conversation is kept in extension storage.
  const stored = await panel.evaluate(async () => (await chrome.storage.local.get('conversations')).conversations);
  assert.equal(stored[0].messages.length, 2);
  await panel.close();
});

/** A new panel asked for a long reply, returned once the reply's first text is showing. */
async function longReplyStarted(prompt) {
  const panel = await openPanel();
  await settings(panel, { 'max-tokens': 200, temperature: 0 });
  await panel.locator('#input').fill(prompt);
  await panel.locator('#send').click();
  await panel.waitForFunction(() => (document.querySelector('.msg.assistant:last-child .body')?.textContent ?? '').length > 0, null, { timeout: 480_000 });
  return panel;
}

test('stop mid-stream ends the reply where it was', FLOW, async () => {
  const panel = await longReplyStarted('Write a long story about a dragon who learns to bake bread.');
  await panel.locator('#send').click(); // now the Stop button
  const done = await status(panel, /^(Done|Stopped)/);
  assert.match(done, /^Stopped · \d+ tokens/);
  const tokens = Number(/(\d+) tokens/.exec(done)[1]);
  assert.ok(tokens < 200, `stopped after ${tokens} tokens`);
  await panel.close();
});

test('closing the offscreen engine mid-generation gives a clear error, and the next request works', FLOW, async () => {
  const panel = await longReplyStarted('Write a long poem about the sea.');
  await browser.worker.evaluate(() => chrome.offscreen.closeDocument());
  const err = await status(panel, /engine stopped|rror/, 60_000);
  assert.match(err, /engine stopped while working/);
  await settings(panel, { 'max-tokens': 4 });
  await panel.locator('#input').fill('Hi');
  await panel.locator('#send').click();
  assert.match(await status(panel, /^(Done|Stopped)|rror|failed/), /^Done/);
  await panel.close();
});

test('summarize selection from the context menu streams a summary in the panel', FLOW, async () => {
  const { page, id } = await openPage('article.html');
  const panel = await openPanel(id);
  await settings(panel, { 'max-tokens': 12, temperature: 0 });
  const selection = await page.evaluate(() => {
    const p = document.querySelector('article p');
    getSelection().selectAllChildren(p);
    return getSelection().toString();
  });
  // Headless Chromium has no menus to click: call the menu handler as Chrome would.
  await browser.worker.evaluate(([sel, tab]) => chrome.tabs.get(tab).then((t) => globalThis.gloss.onMenuClick({ menuItemId: 'gloss-summarize', selectionText: sel, frameId: 0, editable: false, pageUrl: t.url }, t)), [selection, id]);
  const done = await status(panel, /^(Done|Stopped)|rror|failed/);
  assert.match(done, /^Done/, done);
  assert.match(await panel.locator('.quote').textContent(), /Ada Finch/);
  await shot(panel, 'summarize');
  assert.ok((await panel.locator('.msg.assistant .body').last().textContent()).trim().length > 0);
  await panel.close();
  await page.close();
});

async function rewrite(page, id, selector) {
  await page.locator(selector).focus();
  await browser.worker.evaluate((tab) => chrome.tabs.get(tab).then((t) => globalThis.gloss.onMenuClick({ menuItemId: 'gloss-rewrite', frameId: 0, editable: true, pageUrl: t.url }, t)), id);
  const host = page.locator('#gloss-rewrite-host');
  await host.locator('select[name=tone]').selectOption('more-formal');
  await host.locator('button[name=rewrite]').click();
  await host.locator('button[name=replace]:not([disabled])').waitFor({ timeout: 480_000 });
  const preview = await host.locator('.preview').textContent();
  await shot(page, `rewrite-${selector.slice(1)}`);
  await host.locator('button[name=replace]').click();
  return preview.trim();
}

test('rewrite a textarea in place: input events fire and undo restores the original', FLOW, async () => {
  const { page, id } = await openPage('form.html');
  const original = await page.locator('#ta').inputValue();
  const preview = await rewrite(page, id, '#ta');
  assert.ok(preview.length > 0);
  assert.equal(await page.locator('#ta').inputValue(), preview);
  assert.ok(await page.evaluate(() => window.inputEvents.ta) > 0, 'the page saw no input event');
  await page.locator('#ta').focus();
  await page.keyboard.press('Control+Z');
  assert.equal(await page.locator('#ta').inputValue(), original);
  await page.close();
});

test('rewrite a contenteditable in place: input events fire and undo restores the original', FLOW, async () => {
  const { page, id } = await openPage('form.html');
  const original = await page.locator('#ce').textContent();
  const preview = await rewrite(page, id, '#ce');
  assert.equal((await page.locator('#ce').innerText()).trim(), preview.replace(/\s+\n/g, '\n').trim());
  assert.ok(await page.evaluate(() => window.inputEvents.ce) > 0, 'the page saw no input event');
  await page.locator('#ce').focus();
  await page.keyboard.press('Control+Z');
  assert.equal(await page.locator('#ce').textContent(), original);
  await page.close();
});

async function addModel(panel, url, sha256) {
  await panel.locator('#add-model input[name=url]').fill(url);
  await panel.locator('#add-model input[name=name]').fill(url.split('/').pop());
  if (sha256) await panel.locator('#add-model input[name=sha256]').fill(sha256);
  await panel.locator('#add-model button').click();
  const item = panel.locator('#model-list li', { hasText: url.split('/').pop() });
  await item.waitFor();
  return item;
}

test('model download: resumes with Range after a cut and a browser restart, verifies sha256, reports quota, then loads offline', FLOW, async () => {
  let panel = await openPanel();
  await panel.locator('#show-models').click();

  // The server dies after 20 MB: the parts already stored stay, across a browser restart.
  server.cut(20 << 20);
  let item = await addModel(panel, `${server.origin}/model.gguf`, MODEL_SHA256);
  await item.locator('button[name=download]').click();
  await item.locator('.status', { hasText: /interrupted/ }).waitFor({ timeout: 120_000 });
  await browser.restart();
  panel = await openPanel();
  await panel.locator('#show-models').click();
  item = panel.locator('#model-list li', { hasText: 'model.gguf' });
  await item.locator('.status', { hasText: /Paused at 1[6-9]\.\d MB of 98\.4 MB/ }).waitFor({ timeout: 60_000 });
  server.heal();
  const before = server.state.requests.length;
  await item.locator('button[name=download]').click();
  if (process.env.GLOSS_SCREENSHOTS) await item.locator('progress').waitFor({ timeout: 10_000 }).then(() => shot(panel, 'download'), () => {});
  await item.locator('.status', { hasText: /Downloaded/ }).waitFor({ timeout: 300_000 });
  const resumed = server.state.requests.slice(before).filter((r) => r.path === '/model.gguf');
  assert.ok(resumed.length > 0 && resumed.every((r) => !/^bytes=0-/.test(r.range)), `resume re-fetched the start: ${JSON.stringify(resumed.slice(0, 3))}`);

  // A corrupted body fails verification and leaves nothing behind.
  server.state.corrupt = true;
  const bad = await addModel(panel, `${server.origin}/corrupt.gguf`, MODEL_SHA256);
  await bad.locator('button[name=download]').click();
  await bad.locator('.status', { hasText: /corrupt/ }).waitFor({ timeout: 300_000 });
  server.state.corrupt = false;
  const keys = await panel.evaluate(async () => (await (await caches.open('gloss-models')).keys()).map((r) => r.url));
  assert.ok(!keys.some((k) => k.includes('corrupt')) && keys.some((k) => k.includes('model.gguf') || k.includes('custom-')), 'corrupt parts left behind');

  // More than the quota: refused before any byte is stored, with the numbers.
  const huge = await addModel(panel, `${server.origin}/huge.gguf`);
  await huge.locator('button[name=download]').click();
  const quota = await huge.locator('.status', { hasText: /Not enough storage/ }).textContent({ timeout: 60_000 });
  assert.match(quota, /needs [\d.]+ GB more, but only [\d.]+ GB of the browser's [\d.]+ GB quota is free/);

  // Offline: the downloaded model loads from Cache Storage with the server gone.
  await server.close();
  await item.locator('button[name=use]').click();
  await settings(panel, { 'max-tokens': 4, temperature: 0 });
  await panel.locator('#input').fill('Hello');
  await panel.locator('#send').click();
  assert.match(await status(panel, /^(Done|Stopped)|rror|failed/), /^Done/);
  const state = await panel.evaluate(() => chrome.runtime.sendMessage({ type: 'models/list' }));
  const downloaded = state.value.models.find((m) => m.url.endsWith('/model.gguf'));
  assert.equal(state.value.engine.model, downloaded.id, 'the engine did not load the downloaded model');
  server = null;
  await panel.close();
});
