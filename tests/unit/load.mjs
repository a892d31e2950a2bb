// Imports one of the extension's TypeScript modules in Node, bundled by esbuild on the fly.
import * as esbuild from 'esbuild';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const SRC = path.resolve(import.meta.dirname, '../../extension/src');
const out = fs.mkdtempSync(path.join(os.tmpdir(), 'gloss-unit-'));

export async function load(module) {
  const outfile = path.join(out, `${module.replace(/\W/g, '_')}.mjs`);
  await esbuild.build({ entryPoints: [path.join(SRC, `${module}.ts`)], bundle: true, format: 'esm', platform: 'neutral', outfile, logLevel: 'error' });
  return import(outfile);
}
