// Chromium with WebGPU (SwiftShader when headless here), optionally with the built extension.
// CHROMIUM names another binary; CHROMIUM_FLAGS (space-separated) adds switches.
// CHROMIUM_HEADFUL=1 opens windows on $DISPLAY and leaves out Playwright's
// --enable-unsafe-swiftshader: how WebGPU reaches a GPU on a machine without a desktop (an
// X server such as Xvfb, and `--use-angle=vulkan --enable-features=Vulkan
// --use-vulkan=native --disable-vulkan-surface --ignore-gpu-blocklist`; BENCHMARKS.md).
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const ROOT = path.resolve(import.meta.dirname, '../..');
export const EXTENSION_DIR = path.join(ROOT, 'dist/extension');
export const MODEL = path.join(ROOT, 'models/SmolLM2-135M-Instruct.Q4_1.gguf');

const ARGS = ['--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--enable-unsafe-webgpu', '--disable-dev-shm-usage'];

/**
 * A persistent context (extensions need one); `extension: false` for plain pages; `flags`
 * adds switches.
 * `restart()` closes the browser and starts it again on the same profile, as a user
 * restarting Chrome would: extension storage and Cache Storage survive.
 */
export async function launch({ extension = true, headless = !process.env.CHROMIUM_HEADFUL, flags = [] } = {}) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'gloss-profile-'));
  const args = [...ARGS, ...flags, ...(process.env.CHROMIUM_FLAGS ?? '').split(/\s+/).filter(Boolean)];
  if (extension) args.push(`--disable-extensions-except=${EXTENSION_DIR}`, `--load-extension=${EXTENSION_DIR}`);
  const browser = {
    context: null, worker: null, id: null,
    async start() {
      this.context = await chromium.launchPersistentContext(profile, {
        executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
        headless,
        viewport: headless ? { width: 420, height: 760 } : null,
        args,
        ignoreDefaultArgs: [...(extension ? ['--disable-extensions'] : []), ...(process.env.CHROMIUM_HEADFUL ? ['--enable-unsafe-swiftshader'] : [])],
      });
      if (extension) {
        this.worker = this.context.serviceWorkers()[0] ?? (await this.context.waitForEvent('serviceworker'));
        this.id = new URL(this.worker.url()).host;
      }
    },
    async restart() {
      await this.context.close();
      await this.start();
    },
    async close() {
      await this.context.close();
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
  await browser.start();
  return browser;
}
