// Idle connections that negotiate permessage-deflate (or not), for the server's memory per idle
// connection with WEBSOCKET_COMPRESSION on. roomcast's load generator speaks WebSocket through
// tokio-tungstenite, which has no permessage-deflate; `ws` (Node) does. Same shape as the load
// generator's `idle`: N connections with a user each (HS256 tokens signed with the server's
// secret), joined round-robin to R rooms, each waiting for its room's `user_list`; the server's
// VmRSS is read before, once everyone has joined, and after the hold.
//
// Usage (loopback only):
//   npm ci --prefix bench/deflate-idle
//   node bench/deflate-idle/idle.mjs --url ws://127.0.0.1:18080/ws/auth --server-pid $RC \
//     --connections 10000 --rooms 100 --deflate true --hold 25
import { createHmac, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import WebSocket from "ws";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const url = new URL(args.url ?? "ws://127.0.0.1:18080/ws/auth");
if (!/^(127\.\d+\.\d+\.\d+|\[::1\]|localhost)$/.test(url.hostname)) {
  console.error(`refusing ${url.hostname}: loopback only`);
  process.exit(2);
}
const bounded = (name, fallback, min, max) => {
  const value = Number(args[name] ?? fallback);
  if (!Number.isInteger(value) || value < min || value > max) {
    console.error(`--${name} must be an integer in ${min}..=${max}`);
    process.exit(2);
  }
  return value;
};
const connections = bounded("connections", 10000, 1, 19000);
const rooms = bounded("rooms", 100, 1, connections);
const hold = bounded("hold", 25, 0, 600);
const concurrency = bounded("concurrency", 64, 1, 1024);
const sources = bounded("sources", 16, 1, 200);
const deflate = (args.deflate ?? "true") === "true";
const pid = args["server-pid"];
const secret = process.env.ROOMCAST_JWT_SECRET;
if (!secret) {
  console.error("set ROOMCAST_JWT_SECRET to the server's secret");
  process.exit(2);
}
const run = randomBytes(3).toString("hex");

const b64 = (value) => Buffer.from(value).toString("base64url");
const token = (user) => {
  const head = b64(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const body = b64(JSON.stringify({ sub: user, username: user, type: "access", exp }));
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
};
const rssBytes = () =>
  pid ? Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]) * 1024 : NaN;

const sockets = [];
let negotiated = 0;
const open = (i) =>
  new Promise((resolve, reject) => {
    const user = `dz-${run}-${i}`;
    const room = `dz-${run}-r${i % rooms}`;
    const target = new URL(url);
    target.searchParams.set("token", token(user));
    const ws = new WebSocket(target, {
      localAddress: `127.0.0.${1 + (i % sources)}`,
      perMessageDeflate: deflate
        ? { serverNoContextTakeover: true, clientNoContextTakeover: true, threshold: 1024 }
        : false,
      handshakeTimeout: 30000,
    });
    const timer = setTimeout(() => reject(new Error(`connection ${i}: no user_list in 60 s`)), 60000);
    ws.on("open", () => {
      if (ws.extensions.includes("permessage-deflate")) negotiated += 1;
      ws.send(JSON.stringify({ type: "join", room }));
    });
    ws.on("message", (data) => {
      const frame = JSON.parse(data.toString());
      if (frame.type === "user_list" && frame.room === room) {
        clearTimeout(timer);
        resolve();
      }
    });
    ws.on("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`connection ${i}: ${err.message}`));
    });
    ws.on("close", (code) => {
      if (!closing) console.error(`connection ${i} closed by the server: ${code}`);
    });
    sockets.push(ws);
  });

let closing = false;
const before = rssBytes();
const started = performance.now();
let next = 0;
await Promise.all(
  Array.from({ length: concurrency }, async () => {
    while (next < connections) await open(next++);
  }),
);
const setup = (performance.now() - started) / 1000;
const joined = rssBytes();
await new Promise((resolve) => setTimeout(resolve, hold * 1000));
const held = rssBytes();
const perConn = (rss) => Math.round((rss - before) / connections);
const result = {
  connections,
  rooms,
  deflate,
  negotiated,
  setup_s: Number(setup.toFixed(2)),
  rss_before: before,
  per_connection_joined: perConn(joined),
  per_connection_after_hold: perConn(held),
  hold_s: hold,
};
console.log(
  `${connections} connections in ${rooms} rooms, deflate ${deflate ? "offered" : "off"}, ` +
    `negotiated by ${negotiated}; set-up ${result.setup_s} s; server RSS per connection: ` +
    `${result.per_connection_joined} B once joined, ${result.per_connection_after_hold} B after ${hold} s`,
);
console.log(JSON.stringify(result));
closing = true;
for (const ws of sockets) ws.terminate();
process.exit(0);
