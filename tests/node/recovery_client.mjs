// Driver for chatwire's recovery tests: the official socket.io-client with its default reconnection.
// Usage: node recovery_client.mjs <url> <token>
// Prints one JSON line per connect, disconnect, connect_error and `events` event. Commands on stdin:
// "disconnect" and "connect" (a deliberate disconnect and a later connect, same socket), "quit".
import { io } from "socket.io-client";
import { createInterface } from "node:readline";

const [url, token] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const socket = io(url, { path: "/ws/socket.io", transports: ["websocket"], auth: { token } });

socket.on("connect", () => {
  out({ type: "connect", recovered: socket.recovered, id: socket.id });
  // Like Open WebUI's client: join again on every connect.
  socket.emit("user-join", { auth: { token } }, (ack) => out({ type: "joined", ack }));
});
socket.on("disconnect", (reason) => out({ type: "disconnect", reason }));
socket.on("connect_error", (err) => out({ type: "connect_error", message: err.message }));
socket.on("events", (data, ...rest) => out({ type: "event", n: data.n, rest }));

createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim() === "disconnect") socket.disconnect();
  if (line.trim() === "connect") socket.connect();
  if (line.trim() === "quit") {
    socket.disconnect();
    out({ type: "bye" });
    process.exit(0);
  }
});
out({ type: "started" });
