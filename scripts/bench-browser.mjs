// Gloss's wasm engine against wllama (llama.cpp in wasm, WebGPU and CPU modes) in headless
// Chromium on this machine, same page, same GGUF, same prompt text, same run; plus Gloss
// native on the same WebGPU adapter's Vulkan driver (SwiftShader here; the system's GPU
// driver where CHROMIUM_FLAGS put the browser's WebGPU on a GPU) for the wasm-vs-native
// ratio. Usage (scripts/bench-browser wraps it):
//   node scripts/bench-browser.mjs [MODEL.gguf] [--prompt-words N] [--gen N] [--out FILE]
//     [--engines gloss,wllama-gpu,wllama-cpu]
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { launch, ROOT, MODEL } from './lib/chromium.mjs';
import { serve } from './lib/server.mjs';
import { flag, positional } from './lib/args.mjs';

const model = path.resolve(positional() ?? MODEL);
const gen = Number(flag('gen', 16));
const words = Number(flag('prompt-words', 24));
const out = flag('out', path.join(ROOT, 'bench/browser-rows.jsonl'));
const engines = flag('engines', 'gloss,wllama-gpu,wllama-cpu').split(',');
const ctx = 512;
// Plain prose from the repository's test text, cut to a number of words.
const prompt = fs.readFileSync(path.join(ROOT, 'tests/data/gpl-3.txt'), 'utf8').split(/\s+/).slice(0, words).join(' ');

// wllama's multi-threaded build needs cross-origin isolation.
const server = await serve(ROOT, { '/bench-model.gguf': model }, { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' });
// Developer features: WebGPU timestamps unrounded (Chrome rounds them to 100 µs otherwise).
const browser = await launch({ extension: false, flags: ['--enable-webgpu-developer-features'] });
const rows = [];
const rate = (n, ms) => +(n / (ms / 1000)).toFixed(2);
const record = (engine, r) => {
  const row = { engine, model: path.basename(model), prompt_tokens: r.promptTokens, prefill_tok_s: rate(r.promptTokens, r.prefillMs), gen_tokens: r.decodeTokens, decode_tok_s: rate(r.decodeTokens, r.decodeMs), load_ms: Math.round(r.loadMs), ...(r.isolated === undefined ? {} : { threads: r.isolated ? 'multi' : 'single' }), ...(r.stepEncodeMs === undefined ? {} : { step_encode_ms: +r.stepEncodeMs.toFixed(3), step_wait_ms: +r.stepWaitMs.toFixed(3) }), ...(r.stepGpuMs == null ? {} : { step_gpu_ms: +r.stepGpuMs.toFixed(3) }), ...(r.adapter ? { adapter: r.adapter.name, cpu_adapter: r.adapter.cpu, subgroups: r.adapter.subgroups } : {}) };
  rows.push(row);
  console.error(JSON.stringify(row));
};
try {
  const all = { gloss: ['gloss wasm (WebGPU)', 'benchGloss', {}], 'wllama-gpu': ['wllama (WebGPU)', 'benchWllama', { gpu: true }], 'wllama-cpu': ['wllama (CPU)', 'benchWllama', { gpu: false }] };
  for (const e of engines) if (!all[e]) throw new Error(`unknown engine ${e} (use ${Object.keys(all).join(', ')})`);
  for (const [engine, fn, extra] of engines.map((e) => all[e])) {
    // A fresh page per engine: one's GPU memory and workers do not slow the next.
    const page = await browser.context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') console.error(`[${engine}] ${m.text()}`); });
    await page.goto(`${server.origin}/scripts/bench-browser.html`);
    try {
      record(engine, await page.evaluate(([f, a]) => window[f](a), [fn, { model: '/bench-model.gguf', prompt, gen, ctx, ...extra }]));
    } catch (e) {
      console.error(`${engine} failed: ${e.message.split('\n')[0]}`);
      rows.push({ engine, model: path.basename(model), error: e.message.split('\n')[0] });
    }
    await page.close();
  }
} finally {
  await browser.close();
  await server.close();
}
// Gloss native on the Vulkan driver that Chromium's WebGPU ran on: SwiftShader's, or the
// system's where the browser found a GPU.
const gloss = process.env.GLOSS_BIN ?? path.join(ROOT, 'target/release/gloss');
const promptTokens = rows[0].prompt_tokens;
if (promptTokens && fs.existsSync(gloss)) {
  const env = { ...process.env, ...(rows[0].cpu_adapter ? { VK_ICD_FILENAMES: '/usr/lib/chromium/vk_swiftshader_icd.json' } : {}) };
  const native = JSON.parse(execFileSync(gloss, ['bench', '--model', model, '--prompt-tokens', String(promptTokens), '--gen-tokens', String(gen), '--ctx', String(ctx), '--quiet'], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }))[0];
  rows.push({ engine: 'gloss native (Vulkan, same adapter)', model: path.basename(model), adapter: native.adapter, prompt_tokens: promptTokens, prefill_tok_s: native.prefill_tok_s, gen_tokens: gen - 1, decode_tok_s: native.decode_tok_s, load_ms: Math.round(native.load_ms), step_encode_ms: native.step_encode_ms, step_wait_ms: native.step_wait_ms, step_gpu_ms: native.step_gpu_ms });
}
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
const base = rows[0];
console.log(`| engine | prefill tok/s | decode tok/s | load ms | Gloss wasm decode / this |\n| --- | ---: | ---: | ---: | ---: |`);
for (const r of rows) {
  if (r.error) { console.log(`| ${r.engine} | failed: ${r.error} | | | |`); continue; }
  console.log(`| ${r.engine}${r.threads ? ` (${r.threads}-threaded)` : ''} | ${r.prefill_tok_s} | ${r.decode_tok_s} | ${r.load_ms} | ${base.decode_tok_s && r.decode_tok_s ? (base.decode_tok_s / r.decode_tok_s).toFixed(2) : ''} |`);
}
