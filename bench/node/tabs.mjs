// Streaming load: every user has T tabs (official socket.io-client 4.8); once all are connected, each user starts
// one generation (POST /api/chat/completions, the demo model) and every tab records when each token arrives
// (a delta event that carries several tokens delivers them all at its arrival).
// Usage: node tabs.mjs '<options JSON>' | OPTIONS.json
//   {url, path?, tabs, users: [{token, chatId, messageId}], prompt, rate, expectTokens, timeoutMs?}
// Prints {"ready": n} once every tab is connected and waits for a line on stdin before starting the generations.
// Prints one JSON line when every tab saw its message's `chat:completion` (or at the time-out):
//   {tabs, tokens, deltaEvents, frames, seconds, framesPerSecond, p50, p99, max, missing, skewP99}
// Token latency: the demo model schedules token i of a generation at start + i / rate (rate = tokens/s, known
// to the caller), and the events carry no timestamp. For each tab, lag_i = arrival_i - i / rate; the smallest lag
// of the tab is taken as its zero, so a token's latency is how much later it arrived than the tab's best-served
// token of the same stream (it leaves out that one token's own latency, well under a millisecond on loopback).
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

// The options are JSON, or the path of a file that holds them (thousands of users do not fit in one argument).
const arg = process.argv[2];
const o = JSON.parse(arg.startsWith("{") ? arg : readFileSync(arg, "utf8"));
const path = o.path ?? "/ws/socket.io";
const rate = o.rate;

function connect(token) {
  return new Promise((resolve, reject) => {
    const s = io(o.url, { path, transports: ["websocket"], auth: { token }, reconnection: false, forceNew: true,
                          timeout: 60000 });
    s.once("connect_error", reject);
    s.once("connect", () => resolve(s));
  });
}

const tabs = [];
for (let i = 0; i < o.users.length; i += 25) {
  const batch = [];
  for (const user of o.users.slice(i, i + 25)) {
    for (let t = 0; t < o.tabs; t++) batch.push(connect(user.token).then((socket) => ({ user, socket })));
  }
  tabs.push(...(await Promise.all(batch)));
}

let frames = 0;
let deltaEvents = 0;
let done = 0;
let firstSend = 0;
let lastArrival = 0;
for (const tab of tabs) {
  tab.arrivals = [];
  tab.done = false;
  tab.socket.on("events", (p) => {
    frames++;
    if (p?.message_id !== tab.user.messageId) return;
    const type = p?.data?.type;
    const now = performance.now();
    if (type === "chat:message:delta") {
      // One event may carry several tokens (the server merges a fast model's deltas): each token of it arrived
      // now. The demo's tokens are words with one trailing space, the last without one.
      const text = p.data.data?.content ?? "";
      const n = text.split(" ").length - (text.endsWith(" ") ? 1 : 0);
      for (let k = 0; k < n; k++) tab.arrivals.push(now);
      deltaEvents++;
      lastArrival = now;
    } else if (type === "chat:completion" && p.data.data?.done && !tab.done) {
      tab.done = true;
      done++;
    }
  });
}

process.stdout.write(JSON.stringify({ ready: tabs.length }) + "\n");
await new Promise((resolve) => createInterface({ input: process.stdin }).once("line", resolve));
firstSend = performance.now();
const started = await Promise.all(
  o.users.map((user) =>
    fetch(`${o.url}/api/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${user.token}` },
      body: JSON.stringify({ model: "demo", chat_id: user.chatId, id: user.messageId,
                             messages: [{ role: "user", content: o.prompt }] }),
    }).then((r) => r.status),
  ),
);
const refused = started.filter((s) => s !== 200).length;
const deadline = performance.now() + (o.timeoutMs ?? 120000);
while (done < tabs.length && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));

const lat = [];
let tokens = 0;
let expected = 0;
const skews = [];
const byUser = new Map();
for (const tab of tabs) {
  tokens += tab.arrivals.length;
  expected += o.expectTokens;
  if (!tab.arrivals.length) continue;
  const lags = tab.arrivals.map((t, i) => t - (i * 1000) / rate);
  const zero = Math.min(...lags);
  for (const l of lags) lat.push(l - zero);
  const other = byUser.get(tab.user);
  if (other) {
    const n = Math.min(other.length, tab.arrivals.length);
    for (let i = 0; i < n; i++) skews.push(Math.abs(other[i] - tab.arrivals[i]));
  } else byUser.set(tab.user, tab.arrivals);
}
lat.sort((a, b) => a - b);
skews.sort((a, b) => a - b);
const q = (xs, p) => (xs.length ? xs[Math.min(xs.length - 1, Math.round(p * (xs.length - 1)))] : null);
const seconds = (lastArrival - firstSend) / 1000;
process.stdout.write(JSON.stringify({
  tabs: tabs.length, refused, completed: done, tokens, deltaEvents, frames, seconds, framesPerSecond: frames / seconds,
  p50: q(lat, 0.5), p99: q(lat, 0.99), max: lat.length ? lat[lat.length - 1] : null,
  missing: expected - tokens, skewP99: q(skews, 0.99),
}) + "\n");
for (const tab of tabs) tab.socket.disconnect();
process.exit(0);
