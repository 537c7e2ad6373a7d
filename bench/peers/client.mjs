// The load client for the Socket.IO side of bench/run.sh --peers: the three shapes ws-client
// runs against our nodes (saturation, a fixed send rate, idle connections), counted the same
// way, so that the two columns of the report differ only by the servers.
//
//   node client.mjs --url ws://127.0.0.1:PORT [--url …] --mode saturation|rate|idle
//     [--clients N] [--in-flight N] [--interval-ms MS] [--ramp PER_SEC] [--rooms N]
//     [--message-size BYTES] [--duration SECS] [--drain-secs SECS] [--source-addresses N]
//     [--json FILE]
//
// As in ws-client: clients go round-robin over the URLs, client i joins room i mod --rooms,
// message texts carry ws-client's stamp (run, sequence, sender, send time in µs on the one
// clock every client reads), every `message` frame is a delivery, deliveries/s and sends/s
// are over the seconds of sending, and latency goes into a histogram of three significant
// digits. Unlike ws-client, every client has joined before any sends (a barrier), so what is
// owed is simply every acked message times the room's members. Exits 1 when nothing was
// delivered (saturation, rate) or not every client joined (idle).
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Histogram } from './histogram.mjs';
import { ackId, connect, event, messageText } from './wire.mjs';

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string', multiple: true, default: ['ws://127.0.0.1:3000'] },
    mode: { type: 'string', default: 'saturation' },
    clients: { type: 'string', default: '100' },
    'in-flight': { type: 'string', default: '8' },
    'interval-ms': { type: 'string', default: '345' },
    ramp: { type: 'string', default: '100' },
    rooms: { type: 'string', default: '1' },
    'room-prefix': { type: 'string', default: 'load' },
    'message-size': { type: 'string', default: '90' },
    duration: { type: 'string', default: '30' },
    'drain-secs': { type: 'string', default: '30' },
    'source-addresses': { type: 'string', default: '0' },
    json: { type: 'string' },
  },
});
const num = (name) => {
  const n = Number(opt[name]);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} takes a non-negative number`);
  return n;
};
const plan = {
  mode: opt.mode,
  clients: num('clients'),
  window: Math.max(1, num('in-flight')),
  intervalMs: Math.max(1, num('interval-ms')),
  rampEveryMs: 1000 / Math.max(num('ramp'), 1e-3),
  rooms: Math.max(1, num('rooms')),
  size: num('message-size'),
  durationMs: num('duration') * 1000,
  drainMs: num('drain-secs') * 1000,
  sources: num('source-addresses'),
};
if (!['saturation', 'rate', 'idle'].includes(plan.mode)) {
  throw new Error('--mode is saturation, rate or idle');
}

const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
const run = Math.floor(Math.random() * 0xffffffff);
const runHex = run.toString(16).padStart(8, '0');
const latency = new Histogram();
const tally = { sent: 0, acked: 0, frames: 0, deliveries: 0, unique: 0, duplicates: 0 };
const failures = new Map();
let sending = false;
let lastDeliveryMs = 0;

/** ws-client's message text: `run seq sender sent_us ` padded with dots. */
function stamp(seq, sender) {
  const head = `${runHex} ${seq} ${sender} ${nowUs()} `;
  return head.length >= plan.size ? head : head + '.'.repeat(plan.size - head.length);
}

/** Counts a delivery: latency, and per sender whether it came in order or twice. */
function deliver(client, text) {
  tally.deliveries += 1;
  lastDeliveryMs = performance.now();
  const fields = text.split(' ', 4);
  if (fields.length < 4 || fields[0] !== runHex) return;
  latency.record(nowUs() - Number(fields[3]));
  const sender = Number(fields[2]);
  const seq = Number(fields[1]);
  if (seq <= client.last[sender]) {
    tally.duplicates += 1;
    return;
  }
  client.last[sender] = seq;
  tally.unique += 1;
}

function sendOne(client) {
  const id = client.nextId++;
  client.inFlight += 1;
  tally.sent += 1;
  client.link.send(event(id, 'send', client.room, stamp(client.seq++, client.index)));
}

/** Saturation: keep the window full while sending lasts. */
function refill(client) {
  while (sending && client.inFlight < plan.window) sendOne(client);
}

function onFrame(client, frame) {
  tally.frames += 1;
  const text = messageText(frame);
  if (text !== null) {
    deliver(client, text);
    return;
  }
  if (ackId(frame) < 0) return;
  if (client.joining) {
    client.joining = false;
    client.joined();
    return;
  }
  client.inFlight -= 1;
  tally.acked += 1;
  if (plan.mode === 'saturation') refill(client);
}

/** Opens client `index` and resolves once it has joined its room. */
function open(index, clients) {
  return new Promise((resolve, reject) => {
    const client = {
      index,
      room: `${opt['room-prefix']}-${index % plan.rooms}`,
      last: plan.mode === 'idle' ? null : new Float64Array(plan.clients).fill(-1),
      nextId: 1,
      inFlight: 0,
      seq: 0,
      joining: true,
      joined: () => resolve(client),
    };
    clients.push(client);
    const base = opt.url[index % opt.url.length];
    const local = plan.sources > 0 ? `127.0.0.${2 + (index % plan.sources)}` : undefined;
    client.link = connect(base, local, {
      ready: () => client.link.send(event(0, 'join', client.room)),
      frame: (frame) => onFrame(client, frame),
      lost: (why) => {
        client.lost = true;
        failures.set(why, (failures.get(why) || 0) + 1);
        if (client.joining) reject(new Error(why));
      },
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/** Opens the clients at the ramp; resolves with those that joined. */
async function rampUp(clients) {
  const start = performance.now();
  const joins = [];
  for (let i = 0; i < plan.clients; i += 1) {
    await sleep(start + i * plan.rampEveryMs - performance.now());
    joins.push(open(i, clients).catch(() => null));
  }
  return (await Promise.all(joins)).filter(Boolean);
}

/** Sends for --duration: saturation fills windows, rate sends one per interval per client. */
async function send(joined) {
  sending = true;
  const started = performance.now();
  const timers = [];
  if (plan.mode === 'saturation') {
    for (const client of joined) refill(client);
  } else {
    // Staggered as ws-client's clients are by its ramp, so sends do not come in bursts.
    joined.forEach((client, i) => {
      const tick = () => {
        if (client.inFlight < plan.window && !client.lost) sendOne(client);
      };
      timers.push(setTimeout(() => {
        tick();
        timers.push(setInterval(tick, plan.intervalMs));
      }, (i * plan.rampEveryMs) % plan.intervalMs));
    });
  }
  await sleep(plan.durationMs);
  sending = false;
  timers.forEach(clearTimeout);
  return (performance.now() - started) / 1000;
}

/** Waits until every send is answered and no delivery came for a second, or the drain ends. */
async function drain(joined) {
  const start = performance.now();
  for (;;) {
    const pending = joined.some((c) => c.inFlight > 0 && !c.lost);
    const quiet = performance.now() - lastDeliveryMs > 1000;
    if ((!pending && quiet) || performance.now() - start > plan.drainMs) {
      return { secs: (performance.now() - start) / 1000, complete: !pending && quiet };
    }
    await sleep(100);
  }
}

async function main() {
  const started = performance.now();
  const clients = [];
  const joined = await rampUp(clients);
  let secs = 0;
  let drained = { secs: 0, complete: true };
  if (plan.mode === 'idle') {
    await sleep(started + plan.durationMs - performance.now());
  } else if (joined.length) {
    secs = await send(joined);
    drained = await drain(joined);
  }
  const members = new Map();
  for (const c of joined) if (!c.lost) members.set(c.room, (members.get(c.room) || 0) + 1);
  clients.forEach((c) => c.link.close());
  const expected = joined.reduce((sum, c) => sum + c.seq, 0) * (members.get(`${opt['room-prefix']}-0`) || 0);
  const summary = {
    mode: plan.mode,
    urls: opt.url,
    clients: plan.clients,
    joined: joined.length,
    rooms: plan.rooms,
    message_size: plan.size,
    duration_secs: secs,
    drain_secs: drained.secs,
    drain_complete: drained.complete,
    sent: tally.sent,
    acked: tally.acked,
    unanswered: tally.sent - tally.acked,
    expected: plan.rooms === 1 ? expected : null,
    delivered: tally.unique,
    missing: plan.rooms === 1 ? Math.max(0, expected - tally.unique) : null,
    duplicates: tally.duplicates,
    frames_received: tally.frames,
    deliveries: tally.deliveries,
    deliveries_per_sec: secs > 0 ? tally.deliveries / secs : 0,
    sends_per_sec: secs > 0 ? tally.sent / secs : 0,
    latency_ms: latency.summaryMs(),
    connection_failures: Object.fromEntries(failures),
  };
  console.log(JSON.stringify(summary, null, 2));
  if (opt.json) writeFileSync(opt.json, `${JSON.stringify(summary, null, 2)}\n`);
  const ok = plan.mode === 'idle' ? joined.length === plan.clients : tally.deliveries > 0;
  process.exit(ok ? 0 : 1);
}

main().catch((err) => {
  console.error(`client: ${err.stack || err}`);
  process.exit(1);
});
