// Connect storm: N official socket.io-client connections opened at once (at most `concurrency` in flight), each
// with its own token in the handshake auth, each then emitting `user-join` {auth: {token}} and waiting for the ack.
// Usage: node storm.mjs '{"url": ..., "tokens": "/path/tokens.json", "concurrency": 2000}'
//   tokens.json: a JSON array of N token strings (one client each).
// Prints {"connected": n, "failed": f, "seconds": s, "perSecond": r, "errors": {...}} when every attempt settled,
// then holds the sockets until a line arrives on stdin (so closing them is not part of the measurement).
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const o = JSON.parse(process.argv[2]);
const tokens = JSON.parse(readFileSync(o.tokens, "utf8"));
const sockets = [];
const errors = {};
let failed = 0;

function fail(s, why) {
  failed++;
  errors[why] = (errors[why] ?? 0) + 1;
  s.close();
}

function open(token) {
  return new Promise((resolve) => {
    const s = io(o.url, { path: o.path ?? "/ws/socket.io", transports: ["websocket"], auth: { token },
                          reconnection: false, forceNew: true, timeout: 120000 });
    s.once("connect_error", (err) => { fail(s, String(err?.message ?? err)); resolve(); });
    s.once("connect", () => {
      s.timeout(120000).emit("user-join", { auth: { token } }, (err, ack) => {
        if (err || !ack || ack.error) fail(s, err ? "join timeout" : JSON.stringify(ack?.error ?? ack));
        else sockets.push(s);
        resolve();
      });
    });
  });
}

const start = performance.now();
let next = 0;
async function worker() {
  while (next < tokens.length) await open(tokens[next++]);
}
await Promise.all(Array.from({ length: Math.min(o.concurrency ?? tokens.length, tokens.length) }, worker));
const seconds = (performance.now() - start) / 1000;
process.stdout.write(JSON.stringify({ connected: sockets.length, failed, seconds,
                                      perSecond: sockets.length / seconds, errors }) + "\n");
const rl = createInterface({ input: process.stdin });
rl.once("line", () => {
  for (const s of sockets) s.close();
  process.exit(0);
});
