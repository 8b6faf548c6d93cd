// Fan-out load generator: N receivers in one room and one sender, all official socket.io-client 4.8.
// Usage: node loadgen.mjs '<options JSON>'
//   {url, path?, receivers, events, window?, rate?, senderAuth, receiverAuth, channelId, joinToken?, warmup?}
//   - receiverAuth/senderAuth: handshake auth objects; joinToken: emit user-join {auth:{token}} after connect
//     (chatwire puts sessions into their channel rooms on user-join).
//   - window: max unacknowledged sends (saturated throughput); rate: events/s (paced, for latency).
// Prints one JSON line: {deliveries, seconds, deliveriesPerSecond, p50, p99, missing}.
// Latency pairs the k-th arrival at each receiver with the k-th send: a room preserves order.
import { io } from "socket.io-client";

const o = JSON.parse(process.argv[2]);
const path = o.path ?? "/ws/socket.io";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function connect(auth, joinToken) {
  return new Promise((resolve, reject) => {
    const s = io(o.url, { path, transports: ["websocket"], auth, reconnection: false, forceNew: true });
    s.once("connect_error", reject);
    s.once("connect", () => {
      if (!joinToken) return resolve(s);
      s.emit("user-join", { auth: { token: joinToken } }, () => resolve(s));
    });
  });
}

const receivers = [];
for (let i = 0; i < o.receivers; i += 50) {
  const batch = [];
  for (let j = i; j < Math.min(o.receivers, i + 50); j++) batch.push(connect(o.receiverAuth, o.receiverJoinToken));
  receivers.push(...(await Promise.all(batch)));
}
const sender = await connect(o.senderAuth, o.senderJoinToken);

let arrivals = receivers.map(() => []);
receivers.forEach((s, idx) => {
  s.on("events:channel", (p) => {
    if (p?.data?.type === "typing") arrivals[idx].push(performance.now());
  });
});

async function run(n, { window = 200, rate = null } = {}) {
  arrivals = receivers.map(() => []);
  const sends = [];
  let inflight = 0;
  let acked = 0;
  const payload = { channel_id: o.channelId, data: { type: "typing", data: { typing: true } } };
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    while (inflight >= window) await sleep(0);
    if (rate) {
      const wait = start + (i * 1000) / rate - performance.now();
      if (wait > 0) await sleep(wait);
    }
    inflight++;
    sends.push(performance.now());
    sender.emit("events:channel", payload, () => {
      inflight--;
      acked++;
    });
  }
  const deadline = performance.now() + 60000;
  while (arrivals.some((a) => a.length < n) && performance.now() < deadline) await sleep(5);
  const lat = [];
  let total = 0;
  let last = 0;
  for (const a of arrivals) {
    total += Math.min(a.length, n);
    for (let k = 0; k < Math.min(a.length, n); k++) lat.push(a[k] - sends[k]);
    if (a.length) last = Math.max(last, a[Math.min(a.length, n) - 1]);
  }
  lat.sort((x, y) => x - y);
  const q = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.round(p * (lat.length - 1)))] : NaN);
  const seconds = (last - sends[0]) / 1000;
  return { deliveries: total, seconds, deliveriesPerSecond: total / seconds, p50: q(0.5), p99: q(0.99),
           missing: n * receivers.length - total };
}

await run(o.warmup ?? 100);
const saturated = await run(o.events, { window: o.window ?? 200 });
const paced = await run(Math.min(o.events, o.latencyEvents ?? 500), { window: 1e9, rate: o.rate ?? 100 });
process.stdout.write(JSON.stringify({ saturated, paced }) + "\n");
for (const s of [...receivers, sender]) s.disconnect();
process.exit(0);
