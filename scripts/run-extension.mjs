// Launches Chromium with the built extension.
//   node scripts/run-extension.mjs                  a browser window with Gloss loaded
//   node scripts/run-extension.mjs --headless URL   prints the summary that the extension
//                                                   (service worker, offscreen engine, side
//                                                   panel) produces for URL or a local file
import fs from 'node:fs';
import path from 'node:path';
import { launch } from './lib/chromium.mjs';
import { serve } from './lib/server.mjs';

const args = process.argv.slice(2);
const headless = args.includes('--headless');
const target = args.find((a) => !a.startsWith('--'));

if (!headless) {
  const browser = await launch({ headless: false });
  const page = browser.context.pages()[0] ?? (await browser.context.newPage());
  await page.goto(target ?? `chrome-extension://${browser.id}/sidepanel/sidepanel.html`);
  console.error('Gloss is loaded: click its toolbar icon for the side panel. Close the browser to quit.');
  await new Promise((resolve) => browser.context.on('close', resolve));
  process.exit(0);
}

if (!target) {
  console.error('usage: scripts/run --headless URL|FILE');
  process.exit(2);
}
// Extensions cannot read file:// pages by default, so a local file is served on 127.0.0.1.
let server = null;
let url = target;
if (!/^https?:\/\//.test(target)) {
  const file = path.resolve(target);
  if (!fs.existsSync(file)) {
    console.error(`no such file: ${file}`);
    process.exit(2);
  }
  server = await serve(path.dirname(file));
  url = `${server.origin}/${encodeURIComponent(path.basename(file))}`;
}
const browser = await launch();
try {
  const page = await browser.context.newPage();
  await page.goto(url, { waitUntil: 'load' });
  const tab = await browser.worker.evaluate(async (u) => (await chrome.tabs.query({}))
    .find((t) => t.url === u || t.pendingUrl === u)?.id, page.url());
  const panel = await browser.context.newPage();
  await panel.goto(`chrome-extension://${browser.id}/sidepanel/sidepanel.html?tab=${tab}`);
  await panel.locator('#summarize-page').click();
  await panel.waitForFunction(() => /^(Done|Stopped)|rror|cannot|failed|no readable/.test(document.getElementById('engine-status').textContent), null, { timeout: 0 });
  const status = await panel.locator('#engine-status').textContent();
  if (!/^Done/.test(status)) throw new Error(status);
  console.error(`[${status}]`);
  console.log((await panel.locator('.msg.assistant .body').last().innerText()).trim());
} catch (e) {
  console.error(`error: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  await server?.close();
}
