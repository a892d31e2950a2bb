// What a browser's WebGPU costs a dispatch, apart from the GPU: trivial one-workgroup kernels
// in the steps a decode submission has (scripts/bench-dispatch.html), by bindings, pipeline
// switches and hazards between dispatches. Where this exceeds a model's kernels' GPU time,
// decode in that browser is bound by its dispatch count (BENCHMARKS.md, session 13). Usage:
//   node scripts/bench-dispatch.mjs [--dispatches 150] [--steps 64] [--out FILE]
// (CHROMIUM_FLAGS / CHROMIUM_HEADFUL as for bench-browser, to reach a real GPU.)
import fs from 'node:fs';
import path from 'node:path';
import { launch, ROOT } from './lib/chromium.mjs';
import { serve } from './lib/server.mjs';
import { flag } from './lib/args.mjs';

const dispatches = Number(flag('dispatches', 150));
const steps = Number(flag('steps', 64));
const out = flag('out', path.join(ROOT, 'bench/dispatch-rows.jsonl'));

const server = await serve(ROOT);
const browser = await launch({ extension: false });
const rows = [];
try {
  const page = await browser.context.newPage();
  await page.goto(`${server.origin}/scripts/bench-dispatch.html`);
  const variants = [
    ...[2, 5, 9].map((bindings) => ({ bindings })),
    { bindings: 9, samePipeline: true },
    { bindings: 9, independent: true },
  ];
  for (let rep = 0; rep < 2; rep++) for (const v of variants) {
    const ms = await page.evaluate((a) => window.run(a), { dispatches, steps, perSubmit: 8, ...v });
    const row = { ...v, dispatches, ms_per_step: +ms.toFixed(3), us_per_dispatch: +(ms * 1000 / dispatches).toFixed(2) };
    console.log(JSON.stringify(row));
    rows.push(row);
  }
} finally {
  await browser.close();
  await server.close();
}
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
