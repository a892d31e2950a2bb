// Chromium with WebGPU (SwiftShader when headless here), optionally with the built extension.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const ROOT = path.resolve(import.meta.dirname, '../..');
export const EXTENSION_DIR = path.join(ROOT, 'dist/extension');
export const MODEL = path.join(ROOT, 'models/SmolLM2-135M-Instruct.Q4_1.gguf');

const ARGS = ['--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--enable-unsafe-webgpu', '--disable-dev-shm-usage'];

/** A persistent context (extensions need one); `extension: false` for plain pages. */
export async function launch({ extension = true, headless = true } = {}) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'gloss-profile-'));
  const args = [...ARGS];
  if (extension) args.push(`--disable-extensions-except=${EXTENSION_DIR}`, `--load-extension=${EXTENSION_DIR}`);
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless,
    viewport: headless ? { width: 420, height: 760 } : null,
    args,
    ignoreDefaultArgs: extension ? ['--disable-extensions'] : [],
  });
  let worker = null;
  if (extension) {
    worker = context.serviceWorkers()[0] ?? (await context.waitForEvent('serviceworker'));
  }
  const id = worker ? new URL(worker.url()).host : null;
  return {
    context, worker, id,
    close: async () => { await context.close(); fs.rmSync(profile, { recursive: true, force: true }); },
  };
}
