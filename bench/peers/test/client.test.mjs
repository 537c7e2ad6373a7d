// The pieces of the Socket.IO load client that decide its figures: the histogram that gives
// p50/p99 beside ws-client's, and the frame parsing that decides what counts as a delivery
// or an ack. A wrong bucket or a misread frame would skew the peers table without failing
// the run, so they are pinned here.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Histogram } from '../histogram.mjs';
import { ackId, endpoint, event, messageText } from '../wire.mjs';

test('percentiles are within 0.1% and never below the value, like hdrhistogram', () => {
  const h = new Histogram();
  for (let us = 1; us <= 100_000; us += 1) h.record(us);
  for (const [p, want] of [[50, 50_000], [99, 99_000], [99.9, 99_900]]) {
    const got = h.valueAt(p);
    assert.ok(got >= want && got <= want * 1.001, `p${p}: ${got}`);
  }
  assert.equal(h.valueAt(100), 100_031);
  assert.equal(h.summaryMs().samples, 100_000);
  assert.equal(new Histogram().summaryMs().p99, 0);
});

test('small values are exact and huge ones are clamped, not lost', () => {
  const h = new Histogram();
  [0, 1, 2047, 2 ** 40].forEach((us) => h.record(us));
  assert.equal(h.valueAt(25), 1);
  assert.equal(h.valueAt(75), 2047);
  assert.ok(h.valueAt(100) >= 2 ** 31);
});

test('frames: deliveries, acks and events as the server writes them', () => {
  assert.equal(messageText('42["message","0000abcd 3 7 1763860000123456 ...."]'), '0000abcd 3 7 1763860000123456 ....');
  assert.equal(messageText('42["other","x"]'), null);
  assert.equal(messageText('43 12[]'), null);
  assert.equal(ackId('4312[]'), 12);
  assert.equal(ackId('43[]'), -1);
  assert.equal(ackId('42["message","x"]'), -1);
  assert.equal(event(5, 'send', 'load-0', 'hi'), '425["send","load-0","hi"]');
  assert.equal(endpoint('ws://127.0.0.1:3000/'), 'ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket');
});
