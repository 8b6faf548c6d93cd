// The Node peer of the fan-out benchmark: socket.io 4.8 with the same handler shape as chatwire's typing relay.
// Usage: node server.mjs PORT
// A client joins the room named in its handshake auth {room}; an `events:channel` event {channel_id, data} is
// broadcast to `channel:{channel_id}` (sender included) and acknowledged with {ok: true}.
import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.argv[2] ?? 3000);
const http = createServer((req, res) => {
  res.writeHead(200, { "content-type": "application/json" });
  res.end('{"status":true}');
});
const io = new Server(http, { path: "/ws/socket.io", transports: ["websocket"], perMessageDeflate: false });

io.on("connection", (socket) => {
  const room = socket.handshake.auth?.room;
  if (room) socket.join(room);
  socket.on("events:channel", (payload, ack) => {
    io.to(`channel:${payload.channel_id}`).emit("events:channel", {
      channel_id: payload.channel_id,
      message_id: null,
      data: payload.data,
      user: { id: "bench", name: "bench" },
    });
    if (typeof ack === "function") ack({ ok: true });
  });
});

http.listen(port, "127.0.0.1", () => console.log(`listening ${port}`));
