// Bun's pub/sub (uWebSockets under `Bun.serve`) speaking the load generator's envelope, so
// roomcast can be measured against it side by side: the comparison issue 4 asks for.
//
// Like the load generator's bare reference server: no auth (the token is ignored), no store;
// rooms are Bun topics, and a message goes to every subscriber of its room, the sender too
// (`server.publish`). The frame is encoded once per message, as Bun users write it.
//
//   > {"type":"join","room":"r"}    < {"type":"join",…}  < {"type":"user_list","room":"r","data":[…]}
//   > {"type":"message","room":"r","content":"…"}  → every member of r:
//                                   < {"type":"message","room":"r","content":"…","user_id":…,"username":…,"timestamp":…,"id":…}
//   > {"type":"leave","room":"r"}   < {"type":"leave",…}
//   > {"type":"ping"}               < {"type":"pong",…}
//
// Usage: bench/bun/node_modules/.bin/bun bench/bun/server.js --listen 127.0.0.1:19191

const listen = (() => {
  const i = process.argv.indexOf("--listen");
  return i > 0 ? process.argv[i + 1] : "127.0.0.1:19191";
})();
const colon = listen.lastIndexOf(":");
const hostname = listen.slice(0, colon);
const port = Number(listen.slice(colon + 1));
if (!/^(127\.\d+\.\d+\.\d+|\[?::1\]?|localhost)$/.test(hostname)) {
  console.error(`refusing to listen on ${hostname}: loopback only`);
  process.exit(2);
}

/** room name -> Map(connection id -> user id), for `user_list`. */
const rooms = new Map();
let nextId = 1;
const now = () => Math.floor(Date.now() / 1000);

function leave(ws, room) {
  ws.unsubscribe(room);
  ws.data.rooms.delete(room);
  const members = rooms.get(room);
  if (members) {
    members.delete(ws.data.conn);
    if (members.size === 0) rooms.delete(room);
  }
}

const server = Bun.serve({
  hostname,
  port,
  fetch(req, server) {
    const url = new URL(req.url);
    if (url.pathname === "/healthz") return new Response("ok");
    if (!url.pathname.startsWith("/ws")) return new Response("not found", { status: 404 });
    const conn = nextId++;
    const data = { conn, user: `bun-${conn}`, rooms: new Set() };
    if (server.upgrade(req, { data })) return undefined;
    return new Response("upgrade required", { status: 426 });
  },
  websocket: {
    message(ws, raw) {
      let req;
      try {
        req = JSON.parse(typeof raw === "string" ? raw : raw.toString());
      } catch {
        ws.send(JSON.stringify({ type: "error", content: "malformed message", timestamp: now() }));
        return;
      }
      const room = typeof req.room === "string" ? req.room : "main";
      const { user } = ws.data;
      switch (req.type) {
        case "join": {
          let members = rooms.get(room);
          if (!members) rooms.set(room, (members = new Map()));
          members.set(ws.data.conn, user);
          ws.data.rooms.add(room);
          ws.subscribe(room);
          const ts = now();
          ws.send(JSON.stringify({ type: "join", room, user_id: user, username: user, timestamp: ts }));
          ws.send(JSON.stringify({ type: "user_list", room, data: [...members.values()], timestamp: ts }));
          break;
        }
        case "leave":
          leave(ws, room);
          ws.send(JSON.stringify({ type: "leave", room, user_id: user, username: user, timestamp: now() }));
          break;
        case "message":
          if (!ws.data.rooms.has(room)) {
            ws.send(JSON.stringify({ type: "error", room, content: "join first", timestamp: now() }));
            break;
          }
          server.publish(
            room,
            JSON.stringify({
              type: "message",
              room,
              content: typeof req.content === "string" ? req.content : "",
              user_id: user,
              username: user,
              timestamp: now(),
              id: String(nextId++),
            }),
          );
          break;
        case "ping":
          ws.send(JSON.stringify({ type: "pong", timestamp: now() }));
          break;
        case "pong":
          break;
        default:
          ws.send(JSON.stringify({ type: "error", content: "unsupported message type", timestamp: now() }));
      }
    },
    close(ws) {
      for (const room of [...ws.data.rooms]) leave(ws, room);
    },
  },
});

console.log(`bun ${Bun.version} pub/sub reference listening on ${server.hostname}:${server.port}`);
