// Many small rooms: U users with T tabs each (official socket.io-client 4.8), every tab in its user's room
// `user:{id}`; a publisher sends one event to each user's room, round after round, in batches over HTTP
// (`POST {url}/api/v1/events/publish/batch`, the same route on both servers), and every tab counts arrivals.
// Usage: node rooms.mjs OPTIONS.json
//   {url, path?, users: [{auth, joinToken?}], tabs, rounds, batch, window?, apiKey, timeoutMs?}
//   - auth: the handshake auth of the user's tabs; joinToken: emit user-join {auth: {token}} after connect
//     (chatwire puts a session into `user:{id}` on user-join and acknowledges {id}); without it the room is
//     auth.room (the Node peer joins the room named in the handshake).
// Prints {"ready": tabs} once every tab is connected and waits for a line on stdin; then prints one JSON line:
//   {tabs, rooms, events, deliveries, expected, missing, seconds, deliveriesPerSecond}
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const o = JSON.parse(readFileSync(process.argv[2], "utf8"));
const path = o.path ?? "/ws/socket.io";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function connect(user) {
  return new Promise((resolve, reject) => {
    const s = io(o.url, { path, transports: ["websocket"], auth: user.auth, reconnection: false, forceNew: true,
                          timeout: 120000 });
    s.once("connect_error", reject);
    s.once("connect", () => {
      if (!user.joinToken) return resolve({ socket: s, room: user.auth.room });
      s.emit("user-join", { auth: { token: user.joinToken } }, (ack) => {
        if (!ack?.id) return reject(new Error(`user-join refused: ${JSON.stringify(ack)}`));
        resolve({ socket: s, room: `user:${ack.id}` });
      });
    });
  });
}

let deliveries = 0;
let lastArrival = 0;
const rooms = [];
const tabs = [];
for (let i = 0; i < o.users.length; i += 25) {
  const batch = [];
  for (const user of o.users.slice(i, i + 25)) {
    for (let t = 0; t < o.tabs; t++) batch.push(connect(user));
  }
  const joined = await Promise.all(batch);
  for (let k = 0; k < joined.length; k += o.tabs) rooms.push(joined[k].room);
  tabs.push(...joined);
}
for (const tab of tabs) {
  tab.socket.on("notice", () => {
    deliveries++;
    lastArrival = performance.now();
  });
}
process.stdout.write(JSON.stringify({ ready: tabs.length }) + "\n");
await new Promise((resolve) => createInterface({ input: process.stdin }).once("line", resolve));

const events = rooms.length * o.rounds;
const expected = events * o.tabs;
const bodies = [];
for (let r = 0; r < o.rounds; r++) {
  for (let i = 0; i < rooms.length; i += o.batch) {
    const items = rooms.slice(i, i + o.batch).map((room) => ({ room, event: "notice", data: { round: r, n: i } }));
    bodies.push(JSON.stringify({ events: items }));
  }
}
const start = performance.now();
let next = 0;
let failed = 0;
async function publisher() {
  while (next < bodies.length) {
    const body = bodies[next++];
    const r = await fetch(`${o.url}/api/v1/events/publish/batch`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": o.apiKey },
      body,
    });
    if (r.status !== 200) failed++;
    await r.arrayBuffer();
  }
}
await Promise.all(Array.from({ length: o.window ?? 2 }, publisher));
const deadline = performance.now() + (o.timeoutMs ?? 120000);
while (deliveries < expected && performance.now() < deadline) await sleep(10);
const seconds = ((lastArrival || performance.now()) - start) / 1000;
process.stdout.write(JSON.stringify({
  tabs: tabs.length, rooms: rooms.length, events, deliveries, expected, missing: expected - deliveries, failed,
  seconds, deliveriesPerSecond: deliveries / seconds,
}) + "\n");
for (const tab of tabs) tab.socket.disconnect();
process.exit(0);
