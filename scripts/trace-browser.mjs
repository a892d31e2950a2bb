// Where a browser's time goes while the wasm engine loads a model and decodes: a Chrome trace
// (startup tracing, JSON) over the load and a few greedy generations, summarised per thread
// for the load and the last generation: how busy the GPU process's and the page's main
// threads were, and on what. This found that the GPU process, not the GPU, set SmolLM2's
// pace in Chrome, and that submissions stayed small (BENCHMARKS.md, session 14). Usage:
//   node scripts/trace-browser.mjs [MODEL.gguf] [--gen 400] [--runs 4] [--trace FILE]
// (CHROMIUM_FLAGS / CHROMIUM_HEADFUL as for bench-browser, to reach a real GPU.)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { launch, ROOT, MODEL } from './lib/chromium.mjs';
import { serve } from './lib/server.mjs';
import { flag, positional } from './lib/args.mjs';

const model = path.resolve(positional() ?? MODEL);
const gen = Number(flag('gen', 400));
const runs = Number(flag('runs', 4));
const file = path.resolve(flag('trace', path.join(os.tmpdir(), `gloss-trace-${process.pid}.json`)));
// Long enough for the page to load the model and run every generation.
const seconds = Number(flag('seconds', 40));

const categories = ['toplevel', 'gpu', 'webgpu', 'blink.user_timing', 'disabled-by-default-gpu.dawn', 'disabled-by-default-gpu.service'];
const server = await serve(ROOT, { '/bench-model.gguf': model });
const browser = await launch({
  extension: false,
  flags: ['--enable-webgpu-developer-features', `--trace-startup=${categories.join(',')}`, `--trace-startup-file=${file}`, '--trace-startup-format=json', `--trace-startup-duration=${seconds}`],
});
let rates;
try {
  const page = await browser.context.newPage();
  await page.goto(`${server.origin}/scripts/bench-browser.html`);
  // Marks around each generation bound the summary's window.
  rates = await page.evaluate(async ({ gen, runs }) => {
    const m = await import('/dist/extension/wasm/gloss_wasm.js');
    await m.default();
    const blob = await (await fetch('/bench-model.gguf')).blob();
    performance.mark('load-start');
    const engine = await m.GlossEngine.load(blob, { context: 512 });
    performance.mark('load-end');
    const ids = Array.from(engine.tokenize('The GNU General Public License is a free, copyleft license for software and other kinds of works.', true, true));
    const out = [];
    for (let i = 0; i < runs; i++) {
      engine.reset();
      performance.mark(`gen-start-${i}`);
      const r = await engine.generate(ids, { max_tokens: gen, sampling: { temperature: 0 }, ignore_eos: true }, null);
      performance.mark(`gen-end-${i}`);
      out.push(+((r.tokens.length - 1) / (r.decode_ms / 1000)).toFixed(1));
    }
    return out;
  }, { gen, runs });
  // Chrome writes the trace when its duration ends.
  for (let i = 0; i < seconds + 60 && !fs.existsSync(file); i++) await new Promise((r) => setTimeout(r, 1000));
  await new Promise((r) => setTimeout(r, 3000));
} finally {
  await browser.close();
  await server.close();
}
console.log(`decode tok/s per generation: ${rates.join(', ')}; trace: ${file}`);

const events = JSON.parse(fs.readFileSync(file, 'utf8')).traceEvents;
const names = new Map();
for (const e of events) {
  if (e.ph === 'M' && e.name === 'process_name') names.set(`${e.pid}`, e.args.name);
  if (e.ph === 'M' && e.name === 'thread_name') names.set(`${e.pid}/${e.tid}`, e.args.name);
}
const mark = (n) => events.find((e) => e.name === n)?.ts;
// Per thread, over one window: how long it was busy (the union of its events) and on what.
function summarise(title, lo, hi) {
  if (lo === undefined || hi === undefined) throw new Error(`${title} fell outside the trace: raise --seconds`);
  const threads = new Map();
  for (const e of events) {
    if (e.ph !== 'X' || e.ts >= hi || e.ts + e.dur <= lo) continue;
    const k = `${e.pid}/${e.tid}`;
    if (!threads.has(k)) threads.set(k, []);
    threads.get(k).push(e);
  }
  const summary = [...threads].map(([k, es]) => {
    es.sort((a, b) => a.ts - b.ts || b.dur - a.dur);
    let busy = 0;
    let end = lo;
    for (const e of es) {
      const b = Math.min(e.ts + e.dur, hi);
      if (b > end) { busy += b - Math.max(e.ts, end); end = b; }
    }
    return { k, busy, es };
  }).sort((a, b) => b.busy - a.busy);
  console.log(`\n== ${title}: ${((hi - lo) / 1000).toFixed(1)} ms`);
  for (const { k, busy, es } of summary.slice(0, 4)) {
    console.log(`\n${names.get(k.split('/')[0]) ?? k} / ${names.get(k) ?? k}: busy ${(busy / 1000).toFixed(1)} ms`);
    const by = new Map();
    for (const e of es) {
      const a = by.get(e.name) ?? { n: 0, ms: 0, max: 0 };
      a.n++; a.ms += (Math.min(e.ts + e.dur, hi) - Math.max(e.ts, lo)) / 1000; a.max = Math.max(a.max, e.dur / 1000);
      by.set(e.name, a);
    }
    for (const [name, a] of [...by].sort((x, y) => y[1].ms - x[1].ms).slice(0, 8)) {
      console.log(`  ${a.ms.toFixed(1).padStart(8)} ms ${String(a.n).padStart(5)}x  max ${a.max.toFixed(2).padStart(6)} ms  ${name}`);
    }
  }
}
summarise('load', mark('load-start'), mark('load-end'));
summarise('last generation', mark(`gen-start-${runs - 1}`), mark(`gen-end-${runs - 1}`));
