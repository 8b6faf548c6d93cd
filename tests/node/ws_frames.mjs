// A raw WebSocket peer for chatwire's engine conformance tests (driven by tests/engine/wsdriver.py).
//
// It uses the `ws` package, which hands every frame of a TCP chunk to its listener synchronously, in order: one
// listener records them all, so nothing is lost however the server batches its writes.
//
// Usage:  node ws_frames.mjs '<options JSON>'
//   options: {
//     "url": "ws://127.0.0.1:8080/socket.io/?EIO=4&transport=websocket",   required
//     "steps": [                      run in order once the socket is open
//       {"await": n},                 wait until n frames other than pings have arrived (in total)
//       {"send": "text"},             send a text frame
//       {"bytes": [1, 2, 3]},         send a binary frame
//       {"sleep": ms}
//     ],
//     "autopong": false,              answer every Engine.IO ping ("2") with a pong ("3")
//     "linger": 3000                  after the last step, wait this long for the server to close, then exit
//   }
//
// Output: one JSON object per line: {"type": "open"}, {"type": "text", "data": str, "ms": n},
//   {"type": "binary", "data": [bytes], "ms": n}, {"type": "close", "code": n, "ms": n},
//   {"type": "error", "message": str}, {"type": "linger"} (the server kept the socket open).
// `ms` counts from the moment the socket opened.

import { WebSocket } from "ws";

const options = JSON.parse(process.argv[2] ?? "{}");
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let opened = 0;
let counted = 0;
let closed = false;
const waiters = [];

const socket = new WebSocket(options.url);
socket.binaryType = "nodebuffer";

socket.on("error", (err) => out({ type: "error", message: String(err.message ?? err) }));
socket.on("unexpected-response", (req, res) => {
  out({ type: "http", status: res.statusCode });
  closed = true;
  process.exit(0);
});
socket.on("message", (data, isBinary) => {
  const ms = Date.now() - opened;
  if (isBinary) {
    out({ type: "binary", data: Array.from(data), ms });
  } else {
    const text = data.toString();
    out({ type: "text", data: text, ms });
    if (text === "2") {
      if (options.autopong) socket.send("3");
      return;
    }
  }
  counted += 1;
  for (const waiter of waiters.splice(0)) waiter();
});
socket.on("close", (code) => {
  closed = true;
  out({ type: "close", code, ms: Date.now() - opened });
  for (const waiter of waiters.splice(0)) waiter();
  process.exit(0);
});

async function until(n) {
  while (counted < n && !closed) await new Promise((resolve) => waiters.push(resolve));
}

socket.on("open", async () => {
  opened = Date.now();
  out({ type: "open" });
  for (const step of options.steps ?? []) {
    if (closed) return;
    if ("await" in step) await until(step.await);
    else if ("send" in step) socket.send(step.send);
    else if ("bytes" in step) socket.send(Buffer.from(step.bytes));
    else if ("sleep" in step) await sleep(step.sleep);
  }
  await sleep(options.linger ?? 3000);
  if (!closed) {
    out({ type: "linger" });
    socket.terminate();
    process.exit(0);
  }
});
