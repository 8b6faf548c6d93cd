// The official socket.io-client as Open WebUI's browser tab uses it for a chat generation: connect with a token,
// emit user-join, answer `confirmation` event calls through the ack callback, and rebuild the message from
// `events`. Prints {"ready": true, "sid"} once joined, then {"done": true, content, statuses, sources, asked}.
// Usage: node chat_client.mjs URL TOKEN MESSAGE_ID ANSWER(true|false)
import { io } from "socket.io-client";

const [url, token, messageId, answer] = process.argv.slice(2);
const socket = io(url, { path: "/ws/socket.io", transports: ["websocket"], auth: { token }, reconnection: false });
const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const message = { content: "", statuses: [], sources: [], asked: [] };
const timer = setTimeout(() => {
  print({ error: "timeout", ...message });
  process.exit(2);
}, 30000);

socket.on("connect", () => {
  socket.emit("user-join", { auth: { token } }, () => print({ ready: true, sid: socket.id }));
});
socket.on("connect_error", (err) => {
  print({ error: "connect_error", message: err.message });
  process.exit(1);
});
socket.on("events", (payload, cb) => {
  if (payload.message_id !== messageId) return;
  const { type, data } = payload.data;
  if (type === "confirmation") {
    message.asked.push(data.title);
    if (typeof cb === "function") cb(answer === "true");
    return;
  }
  if (type === "chat:message:delta" || type === "message") message.content += data.content;
  if (type === "replace" || type === "chat:message") message.content = data.content;
  if (type === "status") message.statuses.push(data.description);
  if (type === "source" || type === "citation") message.sources.push(data);
  if ((type === "chat:completion" && data.done) || type === "chat:tasks:cancel") {
    clearTimeout(timer);
    print({ done: true, ...message });
    socket.close();
    process.exit(0);
  }
});
