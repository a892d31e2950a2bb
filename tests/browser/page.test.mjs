// In a plain headless Chromium page: the readability-style extractor on saved pages (a real
// mdBook page from the Rust docs, and a news-style article with navigation, cookie banner,
// sidebar and footer), and the Markdown renderer against hostile model output.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as esbuild from 'esbuild';
import path from 'node:path';
import { launch, ROOT } from '../../scripts/lib/chromium.mjs';
import { serve } from '../../scripts/lib/server.mjs';

let browser, server, page, bundle;

before(async () => {
  const entry = `export { extractPage } from './extension/src/content/extract.ts'; export { renderMarkdown } from './extension/src/sidepanel/markdown.ts';`;
  const out = await esbuild.build({ stdin: { contents: entry, resolveDir: ROOT, loader: 'ts' }, bundle: true, format: 'iife', globalName: 'gloss', write: false, logLevel: 'error' });
  bundle = out.outputFiles[0].text;
  server = await serve(path.join(ROOT, 'tests/pages'));
  browser = await launch({ extension: false });
  page = await browser.context.newPage();
});

after(async () => {
  await browser.close();
  await server.close();
});

async function extract(name) {
  await page.goto(`${server.origin}/${name}`);
  await page.addScriptTag({ content: bundle });
  return page.evaluate(() => window.gloss.extractPage(document));
}

test('extracts the article of a news-style page, without its chrome', async () => {
  const r = await extract('article.html');
  assert.equal(r.title, 'The lighthouse of Brindlemoor');
  assert.match(r.text, /^# The lighthouse of Brindlemoor\n/);
  assert.match(r.text, /Ada Finch, kept the lamp burning for forty years\./);
  assert.match(r.text, /112 steps/);
  assert.doesNotMatch(r.text, /cookies|Accept|About us|Ten best beaches|Privacy|Coastal News/);
});

test('extracts the chapter of a real mdBook page (Rust docs), not its menus', async () => {
  const r = await extract('rustdoc-book.html');
  assert.match(r.text, /# What is rustdoc\?/);
  assert.match(r.text, /## Basic usage/);
  assert.match(r.text, /cargo new docs --lib/);
  assert.doesNotMatch(r.text, /Keyboard shortcuts|Choose a theme|Search this book/i);
  assert.ok(r.text.length > 2000, `only ${r.text.length} characters`);
});

test('a page with no text yields empty text (the worker reports "no readable text")', async () => {
  await page.setContent('<html><body><nav><a href="/">Home</a></nav><img src="data:,"></body></html>');
  await page.addScriptTag({ content: bundle });
  const r = await page.evaluate(() => window.gloss.extractPage(document));
  assert.equal(r.text.trim(), '');
});

test('Markdown from the model is sanitised: no script, handlers, media, or javascript: links', async () => {
  await page.goto(`${server.origin}/article.html`);
  await page.addScriptTag({ content: bundle });
  const before = server.state.requests.length;
  const hostile = [
    '**bold** and `code`',
    '<script>window.pwned = 1</script>',
    '<img src=x onerror="window.pwned = 2">',
    `![leak](${server.origin}/leak.png)`,
    '[click](javascript:window.pwned=3)',
    '<a href="https://example.com" onclick="window.pwned=4">ok</a>',
    '<iframe src="https://example.com"></iframe><style>body{display:none}</style>',
  ].join('\n\n');
  const html = await page.evaluate((md) => {
    const div = document.createElement('div');
    div.append(window.gloss.renderMarkdown(md));
    document.body.append(div);
    for (const a of div.querySelectorAll('a')) a.click();
    return div.innerHTML;
  }, hostile);
  await page.waitForTimeout(300);
  assert.match(html, /<strong>bold<\/strong>/);
  assert.match(html, /<code>code<\/code>/);
  assert.doesNotMatch(html, /<script|onerror|onclick|<img|<iframe|<style|javascript:/i);
  assert.match(html, /<a href="https:\/\/example.com\/?" target="_blank" rel="noopener noreferrer">ok<\/a>/);
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  assert.deepEqual(server.state.requests.slice(before).map((r) => r.path), [], 'rendering made network requests');
});
