// The engine's fair queue: round-robin across clients, FIFO within one, cancellation and
// departed clients.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

const { FairQueue } = await load('offscreen/job_queue');
const job = (client, id) => ({ client, id });
const drain = (q) => { const out = []; for (let j; (j = q.next());) out.push(j.id); return out; };

test('one busy client cannot starve another', () => {
  const q = new FairQueue();
  for (const id of ['a1', 'a2', 'a3']) q.push(job('A', id));
  q.push(job('B', 'b1'));
  q.push(job('C', 'c1'));
  q.push(job('B', 'b2'));
  assert.deepEqual(q.waiting().map((j) => j.id), ['a1', 'b1', 'c1', 'a2', 'b2', 'a3']);
  assert.deepEqual(drain(q), ['a1', 'b1', 'c1', 'a2', 'b2', 'a3']);
  assert.equal(q.next(), null);
});

test('a cancelled job leaves the line, and an emptied client does not block the rest', () => {
  const q = new FairQueue();
  q.push(job('A', 'a1'));
  q.push(job('B', 'b1'));
  assert.equal(q.remove('A', 'a1').id, 'a1');
  assert.equal(q.remove('A', 'a1'), null);
  assert.equal(q.remove('B', 'nope'), null);
  assert.deepEqual(drain(q), ['b1']);
});

test('a departed client loses its waiting jobs', () => {
  const q = new FairQueue();
  q.push(job('A', 'a1'));
  q.push(job('B', 'b1'));
  q.push(job('A', 'a2'));
  assert.deepEqual(q.dropClient('A').map((j) => j.id), ['a1', 'a2']);
  assert.deepEqual(drain(q), ['b1']);
});
