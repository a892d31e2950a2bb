// Bundles the extension's TypeScript with esbuild and lays out dist/extension/:
// manifest, icons, pages, scripts, the wasm engine (built beforehand by scripts/build)
// and the packed default model.
import * as esbuild from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const src = path.join(root, 'extension/src');
const out = path.join(root, 'dist/extension');
const wasmDir = path.join(out, 'wasm');
if (!fs.existsSync(path.join(wasmDir, 'gloss_wasm.js'))) throw new Error('dist/extension/wasm is missing: run scripts/build');

const common = { bundle: true, target: 'chrome121', logLevel: 'warning', legalComments: 'none', alias: { 'gloss-wasm': path.join(wasmDir, 'gloss_wasm.js') } };
await esbuild.build({ ...common, format: 'esm', outdir: out, outbase: src, entryPoints: [
  `${src}/background/service_worker.ts`, `${src}/offscreen/offscreen.ts`, `${src}/sidepanel/sidepanel.ts`,
] });
// Content scripts are classic scripts injected with chrome.scripting: no imports at run time.
await esbuild.build({ ...common, format: 'iife', outdir: out, outbase: src, entryPoints: [`${src}/content/page_text.ts`, `${src}/content/rewrite.ts`] });

for (const f of ['offscreen/offscreen.html', 'sidepanel/sidepanel.html', 'sidepanel/sidepanel.css']) fs.cpSync(path.join(src, f), path.join(out, f));
fs.cpSync(path.join(root, 'manifest.json'), path.join(out, 'manifest.json'));
fs.cpSync(path.join(root, 'icons'), path.join(out, 'icons'), { recursive: true });
// The packed default model: a fresh install works offline before any download.
const model = path.join(root, 'models/SmolLM2-135M-Instruct.Q4_1.gguf');
fs.mkdirSync(path.join(out, 'models'), { recursive: true });
const dest = path.join(out, 'models', path.basename(model));
if (!fs.existsSync(dest) || fs.statSync(dest).size !== fs.statSync(model).size) fs.copyFileSync(model, dest);
console.log(`extension built in ${path.relative(root, out)}`);
