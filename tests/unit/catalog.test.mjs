// The model catalogue: unique ids, one packed model, downloadable https GGUF URLs, families
// the engine supports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

const { CATALOG, PACKED_MODEL } = await load('shared/catalog');

test('catalogue entries are well formed', () => {
  assert.equal(new Set(CATALOG.map((m) => m.id)).size, CATALOG.length);
  assert.deepEqual(CATALOG.filter((m) => m.packed), [PACKED_MODEL]);
  for (const m of CATALOG.filter((x) => !x.packed)) {
    assert.match(m.url, /^https:\/\/huggingface\.co\/.+\/resolve\/main\/.+\.gguf$/, m.id);
    assert.ok(['llama', 'qwen2', 'qwen3', 'gemma3'].includes(m.family), m.id);
    assert.ok(m.size > 100e6, m.id);
  }
});
