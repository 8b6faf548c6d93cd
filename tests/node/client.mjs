// A scriptable official socket.io-client 4.x for chatwire's end-to-end tests (driven by tests/nodeclient.py).
//
// Usage:  node client.mjs '<options JSON>'
//   options: {
//     "url": "http://127.0.0.1:8080",     required
//     "token": "<JWT>",                    sent as auth.token in the handshake and in user-join
//     "path": "/ws/socket.io",             Engine.IO path (default)
//     "transports": ["websocket"],         default
//     "join": true,                        emit user-join {auth: {token}} on every connect (as Open WebUI does)
//     "auth": {...},                       extra handshake auth fields (merged after token)
//     "reconnection": false,               let the client reconnect by itself (default false)
//     "timeout": 5000,                     default ack timeout in ms
//     "digest_over": 100000                an event whose first argument's JSON is longer than this is printed
//                                          as {"digest": {"bytes", "sha256"}, "data": {"type"}} instead (large events)
//   }
//
// Output: one JSON object per line on stdout, in the order things happen:
//   {"type": "connect", "id": sid, "recovered": bool}
//   {"type": "connect_error", "message": str, "data": any}
//   {"type": "disconnect", "reason": str}
//   {"type": "event", "event": name, "args": [...]}        every server->client event, with ALL its arguments
//   {"type": "ack", "seq": n, "event": name, "args": [...]} the ack of an emit that asked for one
//   {"type": "ack_timeout", "seq": n, "event": name}
//   {"type": "joined", "ack": {...}}                          the ack of the automatic user-join
//   {"type": "done", "seq": n}                               a command without ack finished
//   {"type": "bad_command", "line": str, "message": str}
//
// Input: one JSON command per line on stdin:
//   {"emit": event, "data": any, "ack": true, "seq": n, "timeout": ms}   emit (data omitted = no argument)
//   {"disconnect": true}        socket.disconnect() (a clean, final close: no reconnection)
//   {"connect": true}           socket.connect() again
//   {"drop": true}              close the underlying transport as a network failure would (reconnects if enabled)
//   {"close": true}             disconnect and exit
// Closing stdin also disconnects and exits.

import { createHash } from "node:crypto";
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const options = JSON.parse(process.argv[2] ?? "{}");
if (!options.url) {
  console.error("usage: node client.mjs '{\"url\": ..., \"token\": ...}'");
  process.exit(2);
}
const join = options.join ?? true;

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const auth = { ...(options.token ? { token: options.token } : {}), ...(options.auth ?? {}) };
const socket = io(options.url, {
  path: options.path ?? "/ws/socket.io",
  transports: options.transports ?? ["websocket"],
  auth,
  reconnection: options.reconnection ?? false,
  reconnectionDelay: 1000,
  reconnectionDelayMax: 5000,
});

socket.on("connect", () => {
  out({ type: "connect", id: socket.id, recovered: socket.recovered === true });
  if (join && options.token) {
    socket.emit("user-join", { auth: { token: options.token } }, (ack) => out({ type: "joined", ack }));
  }
});
socket.on("connect_error", (err) => out({ type: "connect_error", message: err.message, data: err.data ?? null }));
socket.on("disconnect", (reason) => out({ type: "disconnect", reason }));
socket.onAny((event, ...args) => {
  if (options.digest_over && args.length) {
    const text = JSON.stringify(args[0]);
    if (text.length > options.digest_over) {
      const digest = { bytes: Buffer.byteLength(text), sha256: createHash("sha256").update(text).digest("hex") };
      args = [{ digest, data: { type: args[0]?.data?.type ?? null } }, ...args.slice(1)];
    }
  }
  out({ type: "event", event, args });
});

function run(line) {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    out({ type: "bad_command", line, message: String(err) });
    return;
  }
  if (cmd.close) {
    socket.disconnect();
    process.exit(0);
  } else if (cmd.disconnect) {
    socket.disconnect();
    out({ type: "done", seq: cmd.seq ?? null });
  } else if (cmd.connect) {
    socket.connect();
    out({ type: "done", seq: cmd.seq ?? null });
  } else if (cmd.drop) {
    socket.io.engine.close();
    out({ type: "done", seq: cmd.seq ?? null });
  } else if (typeof cmd.emit === "string") {
    const args = "data" in cmd ? [cmd.data] : [];
    if (cmd.ack) {
      socket.timeout(cmd.timeout ?? options.timeout ?? 5000).emit(cmd.emit, ...args, (err, ...resp) => {
        if (err) out({ type: "ack_timeout", seq: cmd.seq ?? null, event: cmd.emit });
        else out({ type: "ack", seq: cmd.seq ?? null, event: cmd.emit, args: resp });
      });
    } else {
      socket.emit(cmd.emit, ...args);
      out({ type: "done", seq: cmd.seq ?? null });
    }
  } else {
    out({ type: "bad_command", line, message: "unknown command" });
  }
}

const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => line.trim() && run(line));
rl.on("close", () => {
  socket.disconnect();
  process.exit(0);
});
