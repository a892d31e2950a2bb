// The shared protocol: who may ask for what, error shapes, request ids.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

const p = await load('shared/protocol');
const task = (kind) => ({ kind, text: 'x', messages: [], options: { max_tokens: 1 }, rewrite: {}, summary: {} });

test('content scripts may only run rewrites (and cancel)', () => {
  assert.equal(p.allowedFromContentScript({ type: 'run', id: '1', task: task('rewrite') }), true);
  assert.equal(p.allowedFromContentScript({ type: 'cancel', id: '1' }), true);
  assert.equal(p.allowedFromContentScript({ type: 'run', id: '1', task: task('chat') }), false);
  assert.equal(p.allowedFromContentScript({ type: 'run', id: '1', task: task('summarize') }), false);
});

test('sender checks: extension pages by URL, content scripts are not pages', () => {
  globalThis.chrome = { runtime: { id: 'abc' } };
  assert.equal(p.fromExtensionPage({ id: 'abc', url: 'chrome-extension://abc/sidepanel/sidepanel.html' }), true);
  assert.equal(p.fromExtensionPage({ id: 'abc', url: 'https://example.com/', tab: { id: 1 } }), false, 'a content script');
  assert.equal(p.fromExtensionPage({ id: 'evil', url: 'chrome-extension://evil/x.html' }), false, 'another extension');
  assert.equal(p.fromExtensionPage({ id: 'abc', url: 'chrome-extension://abcd/x.html' }), false, 'a look-alike id');
  assert.equal(p.fromThisExtension({ id: 'evil' }), false);
  delete globalThis.chrome;
});

test('only worker requests are routed to the service worker', () => {
  assert.deepEqual([...p.WORKER_REQUESTS].sort(), ['host/ensure', 'page/text', 'rewrite/open']);
});

test('errors keep their code across contexts', () => {
  assert.deepEqual(p.toErrorInfo(new p.GlossError('quota', 'full')), { code: 'quota', message: 'full' });
  assert.deepEqual(p.toErrorInfo(Object.assign(new Error('lost'), { code: 'device_lost' })), { code: 'device_lost', message: 'lost' });
  assert.deepEqual(p.toErrorInfo(new Error('x')), { code: 'internal', message: 'x' });
  assert.deepEqual(p.toErrorInfo('plain'), { code: 'internal', message: 'plain' });
});

test('request ids are unique', () => {
  const ids = new Set(Array.from({ length: 1000 }, () => p.newRequestId()));
  assert.equal(ids.size, 1000);
});
