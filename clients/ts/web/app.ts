// The chat page `roomcast serve` shows at `/`: accounts, rooms, messages, members, history on
// scroll, connection status. Plain DOM over RoomcastClient; user text only ever goes through
// `textContent`. Built by `npm run build:web` into crates/roomcast-server/src/web/.

import {
  ApiError,
  AuthSession,
  RoomcastApi,
  RoomcastClient,
  type ChatMessage,
  type ConnectionState,
  type RoomSummary,
  type TokenStore,
  type Tokens,
  type UserInfo,
} from "../src/index.js";

const PAGE = 50;
const ROOM_NAME = /^[A-Za-z0-9_.:-]{1,64}$/;
const TOKENS_KEY = "roomcast.tokens";

/** One line of a room's timeline: a message, or someone arriving or leaving. */
type Entry =
  | { kind: "message"; message: ChatMessage; key: number }
  | { kind: "presence"; text: string; timestamp: number; key: number };

interface RoomView {
  /** Messages by seq. */
  messages: Map<number, ChatMessage>;
  /** Joins and leaves, placed after the last seq seen when they came. */
  presence: Array<{ afterSeq: number; order: number; text: string; timestamp: number }>;
  /** Older history may exist before the oldest message here. */
  hasMore: boolean;
  loadingOlder: boolean;
  /** The join's history has arrived. */
  ready: boolean;
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

const api = new RoomcastApi("");
const storage: TokenStore = {
  load() {
    try {
      return JSON.parse(localStorage.getItem(TOKENS_KEY) ?? "null") as Tokens | null;
    } catch {
      return null;
    }
  },
  save(tokens) {
    if (tokens) localStorage.setItem(TOKENS_KEY, JSON.stringify(tokens));
    else localStorage.removeItem(TOKENS_KEY);
  },
};

let session: AuthSession | null = null;
let client: RoomcastClient | null = null;
let current: string | null = null;
let roomList: RoomSummary[] = [];
let roomTimer: ReturnType<typeof setInterval> | undefined;
let roomsSoon: ReturnType<typeof setTimeout> | undefined;
let presenceOrder = 0;
const views = new Map<string, RoomView>();
/** Display names of users seen in any member list, for the ids a `presence` frame says left. */
const knownNames = new Map<string, string>();

// ── accounts ─────────────────────────────────────────────────────────────────────────────

function showAuth(message = ""): void {
  $("auth-view").hidden = false;
  $("chat-view").hidden = true;
  $("me").hidden = true;
  $("status").hidden = true;
  $("auth-error").textContent = message;
  setStatus("closed");
  $<HTMLInputElement>("username").focus();
}

async function authenticate(kind: "login" | "register"): Promise<void> {
  const username = $<HTMLInputElement>("username").value.trim();
  const password = $<HTMLInputElement>("password").value;
  const error = $("auth-error");
  if (!username || !password) {
    error.textContent = "Enter a username and a password.";
    return;
  }
  error.textContent = "";
  const buttons = [$<HTMLButtonElement>("login"), $<HTMLButtonElement>("register")];
  buttons.forEach((b) => (b.disabled = true));
  try {
    const tokens = kind === "login" ? await api.login(username, password) : await api.register(username, password);
    storage.save(tokens);
    $<HTMLInputElement>("password").value = "";
    start(new AuthSession(api, tokens, storage));
  } catch (err) {
    error.textContent = describe(err, kind);
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

function describe(err: unknown, kind: "login" | "register"): string {
  if (err instanceof ApiError) {
    if (err.status === 401) return "That username and password do not match.";
    if (err.status === 409) return "That username is taken; log in instead, or pick another.";
    if (err.status === 429) return "Too many attempts; wait a minute and try again.";
    return err.message.charAt(0).toUpperCase() + err.message.slice(1) + ".";
  }
  return `Could not ${kind === "login" ? "log in" : "register"}: the server is unreachable.`;
}

async function logout(): Promise<void> {
  const ending = session;
  stop();
  await ending?.logout();
  showAuth();
}

// ── the connection ───────────────────────────────────────────────────────────────────────

function start(auth: AuthSession): void {
  session = auth;
  const tokens = auth.tokens!;
  $("auth-view").hidden = true;
  $("chat-view").hidden = false;
  $("me").hidden = false;
  $("status").hidden = false;
  $("me-name").textContent = tokens.username;
  paintAvatar($("me-avatar"), tokens.user_id, tokens.username);

  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  client = new RoomcastClient({
    url: `${scheme}//${location.host}/ws/auth`,
    tokenProvider: auth.tokenProvider,
    autoConnect: false,
    // A resume the server could not replay whole: the client reads what it skipped.
    history: async (room, page) => {
      const token = await auth.accessToken();
      if (!token) throw new Error("signed out");
      return api.history(token, room, page);
    },
  });
  client.on("state", ({ state }) => setStatus(state));
  client.on("message", (message) => {
    const view = viewOf(message.room);
    view.messages.set(message.seq, message);
    if (message.room === current) renderTimeline({ stick: true });
  });
  client.on("user_list", ({ room }) => {
    const view = viewOf(room);
    if (!view.ready) {
      view.ready = true;
      view.hasMore = oldestSeq(view) > 1;
      if (room === current) renderTimeline({ stick: true });
    }
  });
  const presence = (room: string, user: UserInfo, verb: string, timestamp: number) => {
    if (user.user_id === session?.tokens?.user_id) return; // our own reconnects are not news
    const view = viewOf(room);
    view.presence.push({ afterSeq: client?.lastSeq(room) ?? 0, order: presenceOrder++, text: `${user.username} ${verb}`, timestamp });
    if (room === current) renderTimeline({ stick: true });
  };
  client.on("join", (e) => presence(e.room, e, "joined", e.timestamp));
  client.on("leave", (e) => presence(e.room, e, "left", e.timestamp));
  // A big room's joins and leaves come coalesced; names of those who left are the ones we knew.
  client.on("presence", (e) => {
    for (const user of e.data.joined ?? []) presence(e.room, { user_id: user.id, username: user.username }, "joined", e.timestamp);
    for (const id of e.data.left ?? []) presence(e.room, { user_id: id, username: knownNames.get(id) ?? id }, "left", e.timestamp);
  });
  client.on("count", ({ room }) => {
    if (room === current) renderMembers();
  });
  client.on("members", ({ room, users }) => {
    for (const user of users) knownNames.set(user.user_id, user.username);
    if (room === current) renderMembers();
    // Someone came or went: the room list's occupancy changed too.
    clearTimeout(roomsSoon);
    roomsSoon = setTimeout(() => void refreshRooms(), 300);
  });
  client.on("pending", () => renderTimeline({ stick: true }));
  client.on("gap", ({ room, messages, complete }) => {
    const view = viewOf(room);
    for (const message of messages) view.messages.set(message.seq, message);
    if (room === current) {
      renderTimeline({ stick: true });
      if (!complete) flash("Some messages sent while you were away could not be loaded.");
    }
  });
  client.on("error", (e) => {
    // A skipped range is filled in by the `gap` that follows: nothing for the reader to do.
    if (e.room && e.room === current && !e.data?.skipped) flash(e.content);
  });
  client.on("close", (info) => {
    if (!info.willRetry && info.action === "reauth") {
      stop();
      storage.save(null);
      showAuth("Your session has ended; log in again.");
    }
  });
  client.connect();

  const saved = savedRooms();
  for (const room of saved.rooms) client.join(room);
  select(saved.current ?? saved.rooms[0] ?? null);
  void refreshRooms();
  roomTimer = setInterval(() => void refreshRooms(), 10_000);
}

function stop(): void {
  client?.close();
  client = null;
  session = null;
  current = null;
  views.clear();
  clearInterval(roomTimer);
  clearTimeout(roomsSoon);
}

function setStatus(state: ConnectionState): void {
  const labels: Record<ConnectionState, string> = { connecting: "Connecting…", open: "Connected", reconnecting: "Reconnecting…", closed: "Offline" };
  $("status").dataset.state = state;
  $("status-label").textContent = labels[state];
  $("banner").hidden = state !== "reconnecting";
}

// ── rooms ────────────────────────────────────────────────────────────────────────────────

async function refreshRooms(): Promise<void> {
  if (!session) return;
  try {
    const token = (await session.accessToken()) ?? undefined;
    roomList = (await api.rooms(token, { limit: 200 })).rooms;
  } catch {
    return; // Shown again on the next tick; the status pill tells about the connection.
  }
  renderRooms();
}

async function joinRoom(name: string): Promise<void> {
  const error = $("join-error");
  error.textContent = "";
  if (!ROOM_NAME.test(name)) {
    error.textContent = "Room names are 1–64 letters, digits, -, _, . or :";
    return;
  }
  if (!client || !session) return;
  if (!roomList.some((r) => r.name === name) && !client.joinedRooms.includes(name)) {
    // Create it explicitly, so it exists even where joining does not create rooms.
    try {
      const token = await session.accessToken();
      if (token) await api.createRoom(token, name);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 409)) {
        error.textContent = err instanceof ApiError ? err.message : "The server is unreachable.";
        if (!(err instanceof ApiError)) return;
      }
    }
  }
  client.join(name);
  select(name);
  void refreshRooms();
}

function select(room: string | null): void {
  current = room;
  saveRooms();
  renderRooms();
  renderMembers();
  renderTimeline({ stick: true });
  const input = $<HTMLInputElement>("message");
  input.disabled = room === null;
  $("composer").querySelector("button")!.disabled = room === null;
  $("room-title").textContent = room ? `# ${room}` : "No room yet";
  if (room) input.focus();
}

function savedRooms(): { rooms: string[]; current: string | null } {
  try {
    const saved = JSON.parse(localStorage.getItem(roomsKey()) ?? "null") as { rooms: string[]; current: string | null } | null;
    if (saved && Array.isArray(saved.rooms)) return { rooms: saved.rooms.filter((r) => ROOM_NAME.test(r)), current: saved.current };
  } catch {
    // Start afresh.
  }
  return { rooms: [], current: null };
}

function saveRooms(): void {
  if (!client) return;
  localStorage.setItem(roomsKey(), JSON.stringify({ rooms: client.joinedRooms, current }));
}

function roomsKey(): string {
  return `roomcast.rooms.${session?.tokens?.user_id ?? ""}`;
}

function renderRooms(): void {
  const list = $("room-list");
  const joined = new Set(client?.joinedRooms ?? []);
  const names = new Map(roomList.map((r) => [r.name, r]));
  for (const name of joined) if (!names.has(name)) names.set(name, { name, occupancy: 0 } as RoomSummary);
  list.replaceChildren(
    ...[...names.values()].map((room) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "room" + (room.name === current ? " current" : "") + (joined.has(room.name) ? " joined" : "");
      if (room.name === current) button.setAttribute("aria-current", "true");
      const name = document.createElement("span");
      name.className = "room-name";
      name.textContent = `# ${room.name}`;
      const occupancy = document.createElement("span");
      occupancy.className = "occupancy";
      occupancy.textContent = String(room.occupancy);
      occupancy.title = `${room.occupancy} online`;
      occupancy.setAttribute("aria-label", `${room.occupancy} online`);
      button.append(name, occupancy);
      button.addEventListener("click", () => void joinRoom(room.name));
      item.append(button);
      return item;
    }),
  );
  if (names.size === 0) {
    const empty = document.createElement("li");
    empty.className = "muted";
    empty.textContent = "No rooms yet. Name one above.";
    list.append(empty);
  }
}

function renderMembers(): void {
  const users = current && client ? client.members(current) : [];
  users.sort((a, b) => a.username.localeCompare(b.username));
  // In a room whose presence is counts only, the server's count is newer than the list.
  const count = (current && client?.memberCount(current)) || users.length;
  $("member-count").textContent = count ? String(count) : "";
  $("room-meta").textContent = current ? `${count} ${count === 1 ? "member" : "members"} online` : "";
  $("member-list").replaceChildren(
    ...users.map((user) => {
      const item = document.createElement("li");
      const avatar = document.createElement("span");
      avatar.className = "avatar small";
      paintAvatar(avatar, user.user_id, user.username);
      const name = document.createElement("span");
      name.textContent = user.username;
      item.append(avatar, name);
      if (user.user_id === session?.tokens?.user_id) {
        const you = document.createElement("span");
        you.className = "you";
        you.textContent = "you";
        item.append(you);
      }
      return item;
    }),
  );
}

// ── the timeline ─────────────────────────────────────────────────────────────────────────

function viewOf(room: string): RoomView {
  let view = views.get(room);
  if (!view) {
    view = { messages: new Map(), presence: [], hasMore: false, loadingOlder: false, ready: false };
    views.set(room, view);
  }
  return view;
}

function oldestSeq(view: RoomView): number {
  let oldest = Infinity;
  for (const seq of view.messages.keys()) oldest = Math.min(oldest, seq);
  return oldest === Infinity ? 0 : oldest;
}

function entries(view: RoomView): Entry[] {
  const all: Array<Entry & { sort: [number, number, number] }> = [];
  for (const message of view.messages.values()) all.push({ kind: "message", message, key: message.seq, sort: [message.seq, 0, 0] });
  for (const p of view.presence) all.push({ kind: "presence", text: p.text, timestamp: p.timestamp, key: p.order, sort: [p.afterSeq, 1, p.order] });
  all.sort((a, b) => a.sort[0] - b.sort[0] || a.sort[1] - b.sort[1] || a.sort[2] - b.sort[2]);
  return all;
}

function renderTimeline({ stick = false, keepFromBottom }: { stick?: boolean; keepFromBottom?: number } = {}): void {
  const scroller = $("scroller");
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
  const timeline = $("timeline");
  $("empty").hidden = current !== null;
  if (!current) {
    timeline.replaceChildren();
    $("history-status").textContent = "";
    return;
  }
  const view = viewOf(current);
  const items: HTMLElement[] = [];
  let previous: ChatMessage | null = null;
  for (const entry of entries(view)) {
    if (entry.kind === "presence") {
      const item = document.createElement("li");
      item.className = "presence";
      item.textContent = `${entry.text} · ${clock(entry.timestamp)}`;
      items.push(item);
      previous = null;
      continue;
    }
    const message = entry.message;
    const grouped = previous !== null && previous.user_id === message.user_id && message.timestamp - previous.timestamp < 300;
    items.push(messageItem(message, grouped, false));
    previous = message;
  }
  for (const pending of client?.pending(current) ?? []) {
    const me = session?.tokens;
    const message = { type: "message", room: current, content: pending.content, user_id: me?.user_id ?? "", username: me?.username ?? "", timestamp: Date.now() / 1000, id: pending.clientMsgId, seq: -1 } as ChatMessage;
    items.push(messageItem(message, previous?.user_id === message.user_id, true));
    previous = message;
  }
  timeline.replaceChildren(...items);
  const status = $("history-status");
  if (view.loadingOlder) status.textContent = "Loading older messages…";
  else if (!view.ready) status.textContent = "Loading…";
  else if (view.hasMore) status.textContent = "Scroll up for older messages";
  else status.textContent = view.messages.size ? `This is the beginning of # ${current}.` : `No messages in # ${current} yet. Say hello!`;
  if (keepFromBottom !== undefined) scroller.scrollTop = scroller.scrollHeight - keepFromBottom;
  else if (stick && atBottom) scroller.scrollTop = scroller.scrollHeight;
  else if (stick && !atBottom && items.length && isMine(view)) scroller.scrollTop = scroller.scrollHeight;
}

/** The latest message is the user's own: they want to see it even if they had scrolled up. */
function isMine(view: RoomView): boolean {
  const newest = [...view.messages.values()].at(-1);
  return (client?.pending(current ?? "").length ?? 0) > 0 || newest?.user_id === session?.tokens?.user_id;
}

function messageItem(message: ChatMessage, grouped: boolean, pending: boolean): HTMLElement {
  const item = document.createElement("li");
  item.className = "message" + (grouped ? " grouped" : "") + (pending ? " pending" : "");
  if (message.user_id === session?.tokens?.user_id) item.classList.add("mine");
  if (!pending) item.dataset.seq = String(message.seq);
  const avatar = document.createElement("span");
  avatar.className = "avatar";
  avatar.setAttribute("aria-hidden", "true");
  if (!grouped) paintAvatar(avatar, message.user_id, message.username);
  const body = document.createElement("div");
  body.className = "body";
  if (!grouped) {
    const meta = document.createElement("div");
    meta.className = "meta";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = message.username;
    const time = document.createElement("time");
    const date = new Date(message.timestamp * 1000);
    time.dateTime = date.toISOString();
    time.title = date.toLocaleString();
    time.textContent = clock(message.timestamp);
    meta.append(name, time);
    body.append(meta);
  }
  const text = document.createElement("p");
  text.className = "text";
  text.textContent = message.content;
  body.append(text);
  if (pending) {
    const note = document.createElement("span");
    note.className = "sending";
    note.textContent = "sending…";
    body.append(note);
  }
  item.append(avatar, body);
  return item;
}

async function loadOlder(): Promise<void> {
  if (!current || !session) return;
  const room = current;
  const view = viewOf(room);
  if (!view.ready || !view.hasMore || view.loadingOlder) return;
  view.loadingOlder = true;
  renderTimeline();
  try {
    const token = await session.accessToken();
    if (!token) return;
    const older = await api.history(token, room, { before: oldestSeq(view), limit: PAGE });
    for (const message of older) view.messages.set(message.seq, message);
    view.hasMore = older.length === PAGE && oldestSeq(view) > 1;
  } catch {
    // Try again on the next scroll.
  } finally {
    view.loadingOlder = false;
  }
  if (room === current) {
    const scroller = $("scroller");
    renderTimeline({ keepFromBottom: scroller.scrollHeight - scroller.scrollTop });
    // A short page may not fill the screen: keep going while the top is in view.
    if (scroller.scrollTop < 80 && view.hasMore) void loadOlder();
  }
}

// ── small helpers ────────────────────────────────────────────────────────────────────────

function clock(seconds: number): string {
  const date = new Date(seconds * 1000);
  const today = new Date();
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return date.toDateString() === today.toDateString() ? time : `${date.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

function paintAvatar(element: HTMLElement, id: string, name: string): void {
  let hash = 0;
  for (const char of id) hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
  element.style.setProperty("--hue", String(hash % 360));
  element.textContent = (name.trim()[0] ?? "?").toUpperCase();
}

let flashTimer: ReturnType<typeof setTimeout> | undefined;
function flash(text: string): void {
  const status = $("history-status");
  status.textContent = text;
  status.classList.add("flash");
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => {
    status.classList.remove("flash");
    renderTimeline();
  }, 4_000);
}

// ── wiring ───────────────────────────────────────────────────────────────────────────────

function init(): void {
  $("auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    void authenticate("login");
  });
  $("register").addEventListener("click", () => void authenticate("register"));
  $("logout").addEventListener("click", () => void logout());
  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $<HTMLInputElement>("room");
    const name = input.value.trim();
    input.value = "";
    void joinRoom(name);
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $<HTMLInputElement>("message");
    const content = input.value.trim();
    if (!content || !current || !client) return;
    input.value = "";
    client.send(current, content).catch(() => renderTimeline());
  });
  $("scroller").addEventListener("scroll", () => {
    if ($("scroller").scrollTop < 80) void loadOlder();
  });
  const restored = AuthSession.restore(api, storage);
  if (restored) start(restored);
  else showAuth();
}

init();
