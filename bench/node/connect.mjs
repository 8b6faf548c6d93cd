// Idle-connection load: open N socket.io-client connections (concurrency C), report the connect rate, then hold
// them open until a line arrives on stdin.
// Usage: node connect.mjs '{"url": ..., "n": 10000, "concurrency": 200, "auth": {...}}'
// Prints {"connected": n, "failed": f, "seconds": s, "perSecond": r} once all attempts settle.
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const o = JSON.parse(process.argv[2]);
const sockets = [];
let failed = 0;

function open() {
  return new Promise((resolve) => {
    const s = io(o.url, { path: o.path ?? "/ws/socket.io", transports: ["websocket"], auth: o.auth ?? {},
                          reconnection: false, forceNew: true, timeout: 60000 });
    s.once("connect", () => { sockets.push(s); resolve(); });
    s.once("connect_error", () => { failed++; s.close(); resolve(); });
  });
}

const start = performance.now();
let next = 0;
async function worker() {
  while (next < o.n) {
    next++;
    await open();
  }
}
await Promise.all(Array.from({ length: o.concurrency ?? 200 }, worker));
const seconds = (performance.now() - start) / 1000;
process.stdout.write(JSON.stringify({ connected: sockets.length, failed, seconds, perSecond: sockets.length / seconds }) + "\n");
const rl = createInterface({ input: process.stdin });
rl.once("line", () => {
  for (const s of sockets) s.close();
  process.exit(0);
});
