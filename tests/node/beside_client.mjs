// E2E driver for the "beside your app" test: the official socket.io-client connects to chatwire with a token
// minted by another app, prints {"ready": true}, then collects the chat stream until chat:completion done
// and prints {"done": true, "content", "events", "chat_id", "message_id"}. Usage: node beside_client.mjs URL TOKEN
import { io } from "socket.io-client";

const [url, token] = process.argv.slice(2);
const socket = io(url, { path: "/ws/socket.io", transports: ["websocket"], auth: { token }, reconnection: false });
const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
let content = "";
let count = 0;

const timer = setTimeout(() => {
  print({ error: "timeout", content, events: count });
  process.exit(2);
}, 20000);

socket.on("connect", () => print({ ready: true, id: socket.id }));
socket.on("connect_error", (err) => {
  print({ error: "connect_error", message: err.message, data: err.data ?? null });
  process.exit(1);
});
socket.on("events", (payload) => {
  count += 1;
  const { type, data } = payload.data;
  if (type === "chat:message:delta") content += data.content;
  if (type === "chat:completion" && data.done) {
    clearTimeout(timer);
    print({ done: true, content, events: count, chat_id: payload.chat_id, message_id: payload.message_id });
    socket.close();
    process.exit(0);
  }
});
