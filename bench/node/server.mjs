// The Node peer of the benchmarks: socket.io 4.8 with the same handler shape as chatwire's.
// Usage: node server.mjs PORT   (env BENCH_JWT_SECRET: check tokens as chatwire does; see below)
// Fan-out: a client joins the room named in its handshake auth {room}; an `events:channel` event {channel_id, data}
// is broadcast to `channel:{channel_id}` (sender included) and acknowledged with {ok: true}.
// Connect storm (BENCH_JWT_SECRET set): a handshake auth {token} must be an HS256 JWT with `id` and `exp`, checked
// with jsonwebtoken in the connect middleware (refused otherwise); the socket joins `user:{id}`, and `user-join`
// {auth: {token}} verifies the token again and acknowledges {id}.
// Many small rooms (BENCH_API_KEY set): the publish/batch route below.
import { createServer } from "node:http";
import jwt from "jsonwebtoken";
import { Server } from "socket.io";

const port = Number(process.argv[2] ?? 3000);
const secret = process.env.BENCH_JWT_SECRET;
const apiKey = process.env.BENCH_API_KEY;
const http = createServer((req, res) => {
  if (req.method === "POST" && req.url === "/api/v1/events/publish/batch") return publishBatch(req, res);
  res.writeHead(200, { "content-type": "application/json" });
  res.end('{"status":true}');
});

// Many small rooms: POST /api/v1/events/publish/batch {events: [{room, event, data}]} (X-API-Key must be
// BENCH_API_KEY) sends each event to its room, as chatwire's server API route of that name does.
function publishBatch(req, res) {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    if (!apiKey || req.headers["x-api-key"] !== apiKey) {
      res.writeHead(401, { "content-type": "application/json" });
      return res.end('{"code":"unauthorized"}');
    }
    const { events } = JSON.parse(Buffer.concat(chunks).toString());
    for (const e of events) io.to(e.room).emit(e.event, e.data);
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ status: true, published: events.length }));
  });
}
const io = new Server(http, { path: "/ws/socket.io", transports: ["websocket"], perMessageDeflate: false });

function verify(token) {
  const claims = jwt.verify(token, secret, { algorithms: ["HS256"] });
  if (typeof claims.id !== "string" || typeof claims.exp !== "number") throw new Error("invalid token");
  return claims;
}

if (secret) {
  io.use((socket, next) => {
    try {
      socket.data.userId = verify(socket.handshake.auth?.token).id;
      next();
    } catch {
      next(new Error("invalid token"));
    }
  });
}

io.on("connection", (socket) => {
  const room = socket.handshake.auth?.room;
  if (room) socket.join(room);
  if (socket.data.userId) socket.join(`user:${socket.data.userId}`);
  socket.on("user-join", (payload, ack) => {
    if (typeof ack !== "function") return;
    try {
      const claims = verify(payload?.auth?.token);
      ack({ id: claims.id });
    } catch {
      ack({ error: { code: "unauthorized", message: "invalid token" } });
    }
  });
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
