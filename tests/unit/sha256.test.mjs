// The incremental SHA-256 that verifies downloads, against Node's, over awkward chunkings.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { load } from './load.mjs';

const { Sha256 } = await load('offscreen/sha256');

test('matches node:crypto for sizes around block boundaries and any chunking', () => {
  for (const size of [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 100_003]) {
    const data = crypto.randomBytes(size);
    const want = crypto.createHash('sha256').update(data).digest('hex');
    assert.equal(new Sha256().update(data).hex(), want, `size ${size}, one chunk`);
    const h = new Sha256();
    for (let i = 0; i < size;) {
      const n = 1 + ((i * 7919) % 97);
      h.update(data.subarray(i, i + n));
      i += n;
    }
    assert.equal(h.hex(), want, `size ${size}, odd chunks`);
  }
});

test('known vector', () => {
  assert.equal(new Sha256().update(new TextEncoder().encode('abc')).hex(), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
});
