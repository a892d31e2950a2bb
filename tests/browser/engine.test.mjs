// The wasm engine in headless Chromium's WebGPU (SwiftShader) on the real SmolLM2 GGUF:
// teacher-forced argmax agrees with llama.cpp wherever its margin is decisive, and with the
// native engine on the same SwiftShader adapter; the kernels shaped for GPUs compile in
// Chromium's WGSL compiler and agree; errors cross into JS typed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { launch, ROOT, MODEL } from '../../scripts/lib/chromium.mjs';
import { serve } from '../../scripts/lib/server.mjs';

const golden = JSON.parse(fs.readFileSync(path.join(ROOT, 'tests/golden/smollm2-capital.json'), 'utf8'));
const text = fs.readFileSync(path.join(ROOT, 'tests/prompts/capital.txt'), 'utf8');
const topIds = golden.first_step_top.map(([id]) => id);
let server, browser, page;
let cpuShaped; // the first test's run

// llama.cpp's greedy tokens after the prompt, up to the first whose margin is not decisive.
function decisiveGreedy(promptLen, n) {
  const ids = [];
  for (let j = 0; j < n && golden.forced_margins[promptLen - 1 + j] > 0.5; j++) ids.push(golden.generated_ids[j]);
  return ids;
}

before(async () => {
  server = await serve(ROOT);
  browser = await launch({ extension: false });
  page = await browser.context.newPage();
  await page.goto(`${server.origin}/tests/browser/engine-page.html`);
});

after(async () => {
  await browser?.close();
  await server?.close();
});

test('wasm engine: SmolLM2 teacher forcing in Chromium agrees with llama.cpp and native', { timeout: 900_000 }, async () => {
  const got = await page.evaluate((a) => window.teacherForce(a), {
    model: '/models/SmolLM2-135M-Instruct.Q4_1.gguf', text, continuation: golden.generated_ids, topIds,
  });
  cpuShaped = got;
  // Browsers hide adapter names; headless Chromium here has only SwiftShader (a CPU adapter).
  console.log(`adapter: ${JSON.stringify(got.adapter)}`);
  // wgpu's WebGPU backend cannot ask for subgroups; the engine adds them to its device.
  assert.equal(got.adapter.subgroups, got.adapterSubgroups, 'the engine did not get the adapter\'s subgroups');
  // The vocabulary head's Q8_0 kernel uses packed 8-bit integers exactly where WGSL has them.
  assert.equal(got.adapter.packed_int8, got.wgslPackedInt8, 'the engine misread WGSL\'s packed 8-bit integers');
  // A benchmark figure, not a pass/fail bound: the wasm heap after streaming a 98 MB model.
  console.log(`wasm heap after load: ${(got.heapAfterLoad / 2 ** 20).toFixed(1)} MiB`);
  assert.deepEqual(got.prompt, golden.prompt_ids, 'tokenization differs from llama.cpp');
  let decisive = 0;
  got.argmax.forEach((id, i) => {
    if (golden.forced_margins[i] > 0.5) {
      decisive++;
      assert.equal(id, golden.forced_argmax[i], `argmax at position ${i} (llama.cpp margin ${golden.forced_margins[i]})`);
    }
  });
  assert.ok(decisive >= got.argmax.length / 2);
  const want = decisiveGreedy(got.prompt.length, got.greedy.length);
  assert.ok(want.length > 0, 'no decisive greedy step to compare');
  assert.deepEqual(got.greedy.slice(0, want.length), want, 'greedy decode differs from llama.cpp');

  // The native engine on the same adapter (Chromium's SwiftShader Vulkan ICD).
  const ids = [...golden.prompt_ids, ...golden.generated_ids];
  const out = execFileSync(process.env.GLOSS_BIN ?? path.join(ROOT, 'target/release/gloss'), ['score', '--model', MODEL, '--ctx', '256', '--quiet',
    '--tokens', ids.join(' '), '--prompt-len', String(golden.prompt_ids.length), '--top-ids', topIds.join(' ')], {
    env: { ...process.env, VK_ICD_FILENAMES: '/usr/lib/chromium/vk_swiftshader_icd.json' }, encoding: 'utf8',
  });
  const native = JSON.parse(out.trim().split('\n').pop());
  assert.deepEqual(got.argmax, native.argmax, 'wasm and native argmax differ');
  const maxDiff = Math.max(...native.first_step.map((v, i) => Math.abs(v - got.firstStep[i])));
  console.log(`wasm vs native first-step max |logit diff| over llama.cpp's top 64: ${maxDiff}`);
  // Same kernels, same adapter: only the order of float additions may differ.
  assert.ok(maxDiff < 0.05, `wasm and native first-step logits differ by ${maxDiff}`);
});

// On a software adapter the engine shapes its kernels for CPUs, so the GPU shapes (row
// reductions over 32 lanes, SwiftShader's 4-wide subgroups each adding up 4 of them by
// shuffles; one attention head per workgroup with its fused rotation and cache append; the
// output projection that merges key splits; in browsers, decode attention that projects
// its own q/k/v for SmolLM2's small heads; prefill attention's register tiles) would first
// meet Chromium's WGSL compiler, Tint, on a user's GPU. The load compiles every pipeline;
// decode steps run. Tint is stricter than naga: it rejects '>=' mixed with '&'
// unparenthesized, which naga accepts and which once kept every model from loading on real
// GPUs in Chrome.
test('wasm engine: the GPU-shaped kernels compile in Chromium and agree with the CPU-shaped ones', { timeout: 900_000 }, async () => {
  assert.ok(cpuShaped, 'needs the teacher-forcing test first');
  const got = await page.evaluate((a) => window.teacherForce(a), {
    model: '/models/SmolLM2-135M-Instruct.Q4_1.gguf', text, continuation: [], topIds, tuning: 'gpu', greedyTokens: 2,
  });
  assert.deepEqual(got.prompt, cpuShaped.prompt);
  assert.ok(got.decodeOps?.some((l) => l.startsWith('AttentionProjected')), `decode ran ${[...new Set(got.decodeOps)].join(', ')}, not the projecting attention`);
  const want = decisiveGreedy(got.prompt.length, got.greedy.length);
  assert.deepEqual(got.greedy.slice(0, want.length), want, 'greedy decode differs from llama.cpp');
  got.argmax.forEach((id, i) => {
    if (golden.forced_margins[i] > 0.5) assert.equal(id, cpuShaped.argmax[i], `argmax at position ${i}`);
  });
  const maxDiff = Math.max(...got.firstStep.map((v, i) => Math.abs(v - cpuShaped.firstStep[i])));
  console.log(`GPU- vs CPU-shaped kernels, first-step max |logit diff| over llama.cpp's top 64: ${maxDiff}`);
  assert.ok(maxDiff < 0.05, `GPU- and CPU-shaped first-step logits differ by ${maxDiff}`);
});

test('wasm engine: a truncated GGUF rejects with a typed GlossError', { timeout: 120_000 }, async () => {
  const head = [...fs.readFileSync(MODEL).subarray(0, 4096)];
  const err = await page.evaluate((b) => window.loadError(b), head);
  assert.equal(err?.name, 'GlossError');
  assert.equal(err.code, 'corrupt_model');
  assert.match(err.message, /truncated|exceeds the file size/i);
});
