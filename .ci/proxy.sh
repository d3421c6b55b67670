#!/usr/bin/env bash
# The README's nginx configuration (docs/deploy/nginx.conf), run as written but for its ports
# and certificate: nginx from Debian's packages terminates TLS with a self-signed certificate
# in front of `roomcast serve`, and a client chats over wss:// through it (Node's WebSocket,
# no packages). Checks the upgrade headers pass, a message goes round, the plain-HTTP server
# redirects, and roomcast sees the client's address as the proxy forwarded it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nginx >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq nginx-light >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq nginx-light >/dev/null; }
fi
cargo build --locked --quiet -p roomcast-server

work=$(mktemp -d)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
app=$(free_port) https=$(free_port) http=$(free_port)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

# The site file as documented; only addresses, ports and the certificate's paths change.
sed -e "s|listen 443 ssl;|listen 127.0.0.1:$https ssl;|" -e "/listen \[::\]/d" \
  -e "s|listen 80;|listen 127.0.0.1:$http;|" \
  -e "s|server 127.0.0.1:8080;|server 127.0.0.1:$app;|" \
  -e "s|/etc/letsencrypt/live/chat.example.com/fullchain.pem|$work/cert.pem|" \
  -e "s|/etc/letsencrypt/live/chat.example.com/privkey.pem|$work/key.pem|" \
  docs/deploy/nginx.conf > "$work/site.conf"
cat > "$work/nginx.conf" <<CONF
daemon off;
pid $work/nginx.pid;
error_log $work/error.log;
events {}
http {
  access_log $work/access.log;
  client_body_temp_path $work/body;
  proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fastcgi;
  uwsgi_temp_path $work/uwsgi;
  scgi_temp_path $work/scgi;
  include $work/site.conf;
}
CONF
nginx -t -c "$work/nginx.conf" -p "$work" 2>"$work/nginx-t.log" || { cat "$work/nginx-t.log" >&2; exit 1; }
nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)

export ROOMCAST_JWT_SECRET="$(head -c 32 /dev/urandom | base64)" DATABASE_URL="sqlite://$work/roomcast.db"
env -u REDIS_URL ROOMCAST_LISTEN="127.0.0.1:$app" ROOMCAST_TRUSTED_PROXIES=127.0.0.1 RUST_LOG=warn \
  target/debug/roomcast serve > "$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fsk "https://localhost:$https/healthz" > /dev/null 2>&1 && break
  sleep 0.1
done

user=$(target/debug/roomcast token --sub alice --ttl 5m)
admin=$(target/debug/roomcast token --sub ops --role admin --ttl 5m)
redirect=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "http://127.0.0.1:$http/ws")
[[ $redirect == "301 https://"* ]] || { echo "proxy: port 80 answered '$redirect', not a redirect" >&2; exit 1; }

NODE_EXTRA_CA_CERTS="$work/cert.pem" timeout 30 node --experimental-websocket --no-warnings - \
  "wss://localhost:$https" "https://localhost:$https" "$user" "$admin" <<'JS' || { tail -n 20 "$work/error.log" "$work/server.log" >&2; exit 1; }
const [wss, https, user, admin] = process.argv.slice(2);
const fail = (why) => { console.error(`proxy: ${why}`); process.exit(1); };
const ws = new WebSocket(`${wss}/ws/auth?token=${user}`);
const seen = [];
ws.onerror = () => fail('the WebSocket through nginx failed');
ws.onopen = () => ws.send(JSON.stringify({ type: 'join', room: 'lobby' }));
ws.onmessage = async (event) => {
  const frame = JSON.parse(event.data);
  seen.push(frame.type);
  if (frame.type === 'user_list') {
    ws.send(JSON.stringify({ type: 'message', room: 'lobby', content: 'hello through nginx' }));
  }
  if (frame.type === 'message' && frame.content === 'hello through nginx' && frame.seq === 1) {
    const answer = await fetch(`${https}/admin/rooms/lobby/connections`, {
      headers: { authorization: `Bearer ${admin}` },
    });
    const listed = await answer.json();
    const ip = listed.connections?.[0]?.client_ip;
    if (ip !== '127.0.0.1') fail(`the admin API saw client_ip ${ip}`);
    console.log(`proxy: wss through nginx: ${seen.join(', ')}; client_ip ${ip}`);
    ws.close(1000);
    process.exit(0);
  }
};
setTimeout(() => fail(`no echo through nginx; saw ${seen.join(', ')}`), 20000);
JS
