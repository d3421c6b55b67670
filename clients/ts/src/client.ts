// RoomcastClient: one WebSocket connection to roomcast's native endpoint, kept alive.
//
//   closed ──connect()──▶ connecting ──open──▶ open ──close 1001/1006/1011/1013──▶ reconnecting
//                              ▲                 │  (or no frame for two heartbeats)    │
//                              │                 └──close 1008/1009/4000, close()──▶ closed
//                              └───────────── backoff with full jitter ◀─────────────────┘
//
// On every (re)open it sends `join` for each room with `since` = the last `seq` it saw, then
// every message not yet acknowledged, with its `client_msg_id`: the server replays what was
// missed, in order, and de-duplicates the retries, so nothing is lost or shown twice. Messages
// whose `seq` is not past the room's last are dropped here as a second line of defence.
// A 4001 reconnects only if the token provider gives a new token; `token_expiring` asks the
// provider ahead of time and sends the answer in-band with `refresh`.

import { Backoff } from "./backoff.js";
import { closeAction } from "./codes.js";
import { Emitter } from "./emitter.js";
import type { ClientEvents, CloseInfo, ConnectionState, NetworkHints, PendingMessage, RoomcastClientOptions, WebSocketConstructor, WebSocketLike } from "./options.js";
import type { AckEvent, ChatMessage, ClientEnvelope, ServerEnvelope, UserInfo } from "./types.js";

interface Outgoing extends PendingMessage {
  attempts: number;
  timer: ReturnType<typeof setTimeout> | undefined;
  resolve: (ack: AckEvent) => void;
  reject: (err: Error) => void;
}

interface RoomState {
  /** The last `seq` seen; undefined until the first join's history has arrived. */
  lastSeq: number | undefined;
  members: Map<string, UserInfo>;
  /** Members as last counted: the list's size, or a `presence` frame's `count`. */
  count: number | undefined;
}

/** Messages a gap's page asks for: the HTTP API's largest page. */
const GAP_PAGE = 200;
/** Seconds before its `exp` a held token counts as expired when (re)connecting. */
const EXPIRY_MARGIN_S = 5;
/** Consecutive 4001s, each after a new token, before the client gives up. */
const MAX_AUTH_FAILURES = 3;
const OPEN = 1;

/** One connection to roomcast's native endpoint, reconnected and resumed as needed. */
export class RoomcastClient extends Emitter<ClientEvents> {
  private readonly options: RoomcastClientOptions;
  private readonly backoff: Backoff;
  private readonly rooms = new Map<string, RoomState>();
  private readonly outbox = new Map<string, Outgoing>();
  private readonly network: NetworkHints | null;
  private currentState: ConnectionState = "closed";
  private token: string | undefined;
  private ws: WebSocketLike | undefined;
  /** True between `connect()` and `close()` (or a terminal close code). */
  private running = false;
  private everOpened = false;
  private heardSinceOpen = false;
  private authFailures = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  private watchdog: ReturnType<typeof setTimeout> | undefined;
  /** An `openSocket` is between its start and `new WebSocket` (it awaits the token provider). */
  private opening = false;
  private idCounter = 0;

  constructor(options: RoomcastClientOptions) {
    super();
    this.options = options;
    this.token = options.token;
    this.backoff = new Backoff(options.backoff);
    this.network = options.network === undefined ? defaultNetwork() : options.network;
    if (options.autoConnect ?? true) this.connect();
  }

  /** The connection's state. */
  get state(): ConnectionState {
    return this.currentState;
  }

  /** The rooms this client is in (or will rejoin). */
  get joinedRooms(): string[] {
    return [...this.rooms.keys()];
  }

  /** The last `seq` seen in `room`. */
  lastSeq(room: string): number | undefined {
    return this.rooms.get(room)?.lastSeq;
  }

  /** `room`'s members as last reported. */
  members(room: string): UserInfo[] {
    return [...(this.rooms.get(room)?.members.values() ?? [])];
  }

  /**
   * `room`'s member count as last reported: the member list's size, or, in a room whose
   * presence is counts only, the server's `count` (the list then stays as its last `user_list`).
   */
  memberCount(room: string): number | undefined {
    return this.rooms.get(room)?.count;
  }

  /** Messages sent and not yet acknowledged, oldest first. */
  pending(room?: string): PendingMessage[] {
    const all = [...this.outbox.values()].map(({ room, content, data, clientMsgId }) => ({ room, content, data, clientMsgId }));
    return room === undefined ? all : all.filter((m) => m.room === room);
  }

  /** Starts connecting (a no-op when already running). */
  connect(): void {
    if (this.running) return;
    this.running = true;
    this.authFailures = 0;
    this.backoff.reset();
    this.network?.addEventListener("online", this.onOnline);
    this.network?.addEventListener("offline", this.onOffline);
    void this.openSocket();
  }

  /** Closes for good: no reconnect, and unacknowledged messages are rejected. */
  close(): void {
    const wasRunning = this.running;
    this.stop();
    const ws = this.detach();
    ws?.close(1000, "client closed");
    this.failOutbox(new Error("the client was closed"));
    if (wasRunning) this.emit("close", { code: 1000, reason: "client closed", action: "user", willRetry: false });
    this.setState("closed");
  }

  /** Drops the current socket and reconnects now (after a network change, say). */
  reconnect(): void {
    if (!this.running) return;
    this.drop("reconnect requested", 0);
  }

  /** Joins `room` (now, and again after every reconnect, resuming from the last `seq`). */
  join(room: string): void {
    if (!this.rooms.has(room)) this.rooms.set(room, { lastSeq: undefined, members: new Map(), count: undefined });
    this.sendJoin(room);
  }

  /** Leaves `room`; it is no longer rejoined. */
  leave(room: string): void {
    if (!this.rooms.delete(room)) return;
    this.transmit({ type: "leave", room });
    for (const [id, message] of this.outbox) {
      if (message.room === room) this.settle(id, undefined, new Error(`left room '${room}'`));
    }
  }

  /**
   * Sends a chat message to a joined room. Resolves with the server's `ack` once it is
   * committed; until then it is retried (same `client_msg_id`) after reconnects and ack
   * timeouts, so it is stored once whatever happens to the connection.
   */
  send(room: string, content: string, options: { data?: unknown; clientMsgId?: string } = {}): Promise<AckEvent> {
    if (!this.rooms.has(room)) return Promise.reject(new Error(`not in room '${room}': join it first`));
    const clientMsgId = options.clientMsgId ?? this.newId();
    return new Promise<AckEvent>((resolve, reject) => {
      const message: Outgoing = { room, content, data: options.data, clientMsgId, attempts: 0, timer: undefined, resolve, reject };
      this.outbox.set(clientMsgId, message);
      this.emitPending();
      if (this.isOpen()) this.transmitMessage(message);
    });
  }

  /** Asks the server for `room`'s member list again. */
  requestUserList(room: string): void {
    this.transmit({ type: "user_list", room });
  }

  // ── connection ─────────────────────────────────────────────────────────────────────────

  private async openSocket(): Promise<void> {
    this.reconnectTimer = undefined;
    if (!this.running || this.opening || this.ws) return;
    this.setState(this.everOpened ? "reconnecting" : "connecting");
    let token: string | undefined;
    this.opening = true;
    try {
      token = await this.usableToken();
    } catch {
      token = undefined;
    } finally {
      this.opening = false;
    }
    if (!this.running || this.ws) return;
    if (!token && this.options.tokenProvider) {
      // The provider has no token (logged out): nothing to connect with.
      this.terminate({ code: 4001, reason: "no token", action: "reauth", willRetry: false });
      return;
    }
    const Ctor = this.options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!Ctor) throw new Error("no WebSocket implementation: pass options.WebSocket");
    let url = this.options.url;
    let protocols: string[] | undefined;
    if (token && (this.options.tokenIn ?? "protocol") === "protocol") {
      protocols = [`token.${token}`];
    } else if (token) {
      url += (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
    }
    let ws: WebSocketLike;
    try {
      ws = new Ctor(url, protocols);
    } catch {
      this.afterClose(1006, "could not open a socket", token);
      return;
    }
    this.ws = ws;
    this.heardSinceOpen = false;
    this.connectTimer = setTimeout(() => this.drop("connect timeout"), this.options.connectTimeoutMs ?? 10_000);
    ws.onopen = () => {
      if (ws !== this.ws) return;
      clearTimeout(this.connectTimer);
      const reconnected = this.everOpened;
      this.everOpened = true;
      this.setState("open");
      for (const room of this.rooms.keys()) this.sendJoin(room);
      for (const message of this.outbox.values()) this.transmitMessage(message);
      this.armWatchdog();
      this.emit("open", { reconnected });
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      if (typeof event.data === "string") this.receive(event.data);
    };
    ws.onclose = (event) => {
      if (ws !== this.ws) return;
      this.detach();
      this.afterClose(event.code, event.reason, token);
    };
    ws.onerror = () => {
      // A close event follows every error; it carries the code.
    };
  }

  /** The token to connect with: the held one, unless it has expired and a provider can do better. */
  private async usableToken(): Promise<string | undefined> {
    const provider = this.options.tokenProvider;
    if (provider && (!this.token || isExpired(this.token))) {
      this.token = (await provider("connect")) ?? undefined;
    }
    return this.token;
  }

  /** What to do after the socket closed with `code`. */
  private afterClose(code: number, reason: string, usedToken: string | undefined): void {
    if (!this.running) return;
    const action = closeAction(code);
    if (action === "stop") {
      this.terminate({ code, reason, action, willRetry: false });
      return;
    }
    if (action === "reauth") {
      void this.reauthenticate(code, reason, usedToken);
      return;
    }
    const max = this.options.maxReconnectAttempts ?? Infinity;
    if (this.backoff.attempts >= max) {
      this.terminate({ code, reason, action, willRetry: false });
      return;
    }
    this.emit("close", { code, reason, action, willRetry: true });
    this.scheduleReconnect();
  }

  /** 4001: reconnect only if the provider hands over a token other than the refused one. */
  private async reauthenticate(code: number, reason: string, refused: string | undefined): Promise<void> {
    const provider = this.options.tokenProvider;
    this.authFailures += 1;
    let fresh: string | null | undefined;
    if (provider && this.authFailures <= MAX_AUTH_FAILURES) {
      try {
        fresh = await provider("unauthorized");
      } catch {
        fresh = undefined;
      }
    }
    if (!this.running) return;
    if (!fresh || fresh === refused) {
      this.terminate({ code, reason, action: "reauth", willRetry: false });
      return;
    }
    this.token = fresh;
    this.emit("close", { code, reason, action: "reauth", willRetry: true });
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    this.setState("reconnecting");
    // The browser says it is offline: wait for its `online` event rather than spend attempts,
    // with the longest delay as a fallback in case the hint is wrong.
    const offline = this.network !== null && !this.network.onLine;
    const delay = offline ? (this.options.backoff?.maxMs ?? 30_000) : this.backoff.next();
    this.reconnectTimer = setTimeout(() => void this.openSocket(), delay);
  }

  /** Gives up: the code says retrying cannot help. */
  private terminate(info: CloseInfo): void {
    this.stop();
    this.failOutbox(new Error(`connection closed: ${info.code} ${info.reason}`.trim()));
    this.emit("close", info);
    this.setState("closed");
  }

  private stop(): void {
    this.running = false;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.network?.removeEventListener("online", this.onOnline);
    this.network?.removeEventListener("offline", this.onOffline);
  }

  /** Forgets the current socket (its late events are ignored) and clears its timers. */
  private detach(): WebSocketLike | undefined {
    const ws = this.ws;
    this.ws = undefined;
    clearTimeout(this.connectTimer);
    clearTimeout(this.watchdog);
    this.watchdog = undefined;
    for (const message of this.outbox.values()) {
      clearTimeout(message.timer);
      message.timer = undefined;
    }
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    }
    return ws;
  }

  /** The connection is dead (or about to be replaced): drop it without waiting for a close handshake. */
  private drop(reason: string, delay?: number): void {
    const ws = this.detach();
    try {
      ws?.close(4000 + 999, reason); // 4999: a private code, never acted on by the server
    } catch {
      // Already closing.
    }
    if (!this.running) return;
    this.emit("close", { code: 1006, reason, action: "retry", willRetry: true });
    if (delay === 0) {
      clearTimeout(this.reconnectTimer);
      this.setState("reconnecting");
      void this.openSocket();
    } else {
      this.scheduleReconnect();
    }
  }

  private armWatchdog(ms?: number): void {
    clearTimeout(this.watchdog);
    const interval = this.options.heartbeatIntervalMs ?? 30_000;
    const wait = ms ?? (interval > 0 ? 2 * interval : 0);
    this.watchdog = wait > 0 ? setTimeout(() => this.drop("no frame from the server for two heartbeat intervals"), wait) : undefined;
  }

  private readonly onOnline = (): void => {
    if (!this.running || this.ws) return;
    // Back online: try now instead of waiting out the backoff.
    clearTimeout(this.reconnectTimer);
    void this.openSocket();
  };

  private readonly onOffline = (): void => {
    if (!this.isOpen()) return;
    // Maybe the socket is dead, maybe not (a VPN toggling): a ping tells within a few seconds.
    this.transmit({ type: "ping" });
    this.armWatchdog(this.options.offlineProbeMs ?? 5_000);
  };

  // ── frames ─────────────────────────────────────────────────────────────────────────────

  /**
   * Reads the seqs `first` to `last` of `room` a resume skipped, newest page first (each
   * page's `before` is the oldest `seq` read so far), and emits them as one `gap`, oldest
   * first. Bounded: as many pages as the range needs, plus one.
   */
  private async fillGap(room: string, first: number, last: number): Promise<void> {
    const read = this.options.history;
    if (!read || !(first <= last)) return;
    const bySeq = new Map<number, ChatMessage>();
    let before = last + 1;
    let error: unknown;
    const pages = Math.ceil((last - first + 1) / GAP_PAGE) + 1;
    for (let page = 0; page < pages && before > first; page++) {
      let messages: ChatMessage[];
      try {
        messages = await read(room, { before, limit: Math.min(GAP_PAGE, before - first) });
      } catch (err) {
        error = err;
        break;
      }
      if (messages.length === 0) break;
      for (const message of messages) if (message.seq >= first && message.seq <= last) bySeq.set(message.seq, message);
      const oldest = Math.min(...messages.map((m) => m.seq));
      if (!(oldest < before)) break;
      before = oldest;
    }
    if (!this.running) return;
    const messages = [...bySeq.values()].sort((a, b) => a.seq - b.seq);
    this.emit("gap", { room, first, last, messages, complete: error === undefined && messages.length === last - first + 1, error });
  }

  private receive(text: string): void {
    let envelope: ServerEnvelope;
    try {
      envelope = JSON.parse(text) as ServerEnvelope;
    } catch {
      return; // Not ours to fix; the server only sends JSON.
    }
    if (typeof envelope !== "object" || envelope === null) return;
    this.armWatchdog();
    if (!this.heardSinceOpen) {
      // The server answered, so this connection works: the next failure backs off from the start.
      this.heardSinceOpen = true;
      this.backoff.reset();
    }
    this.emit("envelope", envelope);
    switch (envelope.type) {
      case "ping":
        this.transmit({ type: "pong" });
        break;
      case "message":
        this.receiveMessage(envelope);
        break;
      case "ack":
        if (envelope.client_msg_id) this.settle(envelope.client_msg_id, envelope);
        this.emit("ack", envelope);
        break;
      case "join":
        this.member(envelope.room, (members) => members.set(envelope.user_id, { user_id: envelope.user_id, username: envelope.username }));
        this.emit("join", envelope);
        break;
      case "leave":
        this.member(envelope.room, (members) => members.delete(envelope.user_id));
        this.emit("leave", envelope);
        break;
      case "presence": {
        const { joined, left, count } = envelope.data;
        if (joined || left) {
          // Net changes: applied as set operations, so a user already listed stays listed once.
          this.member(envelope.room, (members) => {
            for (const id of left ?? []) members.delete(id);
            for (const user of joined ?? []) members.set(user.id, { user_id: user.id, username: user.username });
          });
        }
        this.counted(envelope.room, count);
        this.emit("presence", envelope);
        break;
      }
      case "user_list": {
        const room = this.rooms.get(envelope.room);
        if (room) {
          // The join's history has all arrived (it comes first): from here on, `since` is exact.
          room.lastSeq ??= 0;
        }
        this.member(envelope.room, (members) => {
          members.clear();
          for (const user of envelope.users ?? []) members.set(user.user_id, user);
        });
        this.emit("user_list", envelope);
        break;
      }
      case "error": {
        this.emit("error", envelope);
        const skipped = envelope.data?.skipped;
        if (skipped && envelope.room && this.options.history) void this.fillGap(envelope.room, skipped.first, skipped.last);
        break;
      }
      case "system":
        this.emit("system", envelope);
        break;
      case "token_expiring":
        this.emit("token_expiring", envelope);
        void this.refreshInBand();
        break;
      case "refreshed":
        this.authFailures = 0;
        this.emit("refreshed", envelope);
        break;
    }
  }

  private receiveMessage(message: ChatMessage): void {
    const room = this.rooms.get(message.room);
    if (room && typeof message.seq === "number") {
      if (room.lastSeq !== undefined && message.seq <= room.lastSeq) return; // seen already
      room.lastSeq = message.seq;
    }
    this.emit("message", message);
  }

  private member(name: string, change: (members: Map<string, UserInfo>) => void): void {
    const room = this.rooms.get(name);
    if (!room) return;
    change(room.members);
    this.emit("members", { room: name, users: [...room.members.values()] });
    this.counted(name, room.members.size);
  }

  /** Records `room`'s member count; emits `count` when it changed. */
  private counted(name: string, count: number): void {
    const room = this.rooms.get(name);
    if (!room || room.count === count) return;
    room.count = count;
    this.emit("count", { room: name, count });
  }

  /** `token_expiring`: ask the provider and send its token in-band. */
  private async refreshInBand(): Promise<void> {
    const provider = this.options.tokenProvider;
    if (!provider) return;
    let token: string | null | undefined;
    try {
      token = await provider("expiring");
    } catch {
      return; // The server closes with 4001 at expiry; that path asks again.
    }
    if (!token) return;
    this.token = token;
    this.transmit({ type: "refresh", token });
  }

  private sendJoin(room: string): void {
    const since = this.rooms.get(room)?.lastSeq;
    this.transmit(since === undefined ? { type: "join", room } : { type: "join", room, since });
  }

  private transmitMessage(message: Outgoing): void {
    const { room, content, data, clientMsgId } = message;
    const envelope: ClientEnvelope = { type: "message", room, content, client_msg_id: clientMsgId };
    if (data !== undefined) envelope.data = data;
    if (!this.transmit(envelope)) return;
    message.attempts += 1;
    clearTimeout(message.timer);
    message.timer = setTimeout(() => {
      message.timer = undefined;
      if (message.attempts >= (this.options.maxSendAttempts ?? 5)) {
        this.settle(clientMsgId, undefined, new Error(`no ack after ${message.attempts} attempts`));
      } else if (this.isOpen()) {
        this.transmitMessage(message);
      }
    }, this.options.ackTimeoutMs ?? 10_000);
  }

  private settle(clientMsgId: string, ack?: AckEvent, error?: Error): void {
    const message = this.outbox.get(clientMsgId);
    if (!message) return;
    clearTimeout(message.timer);
    this.outbox.delete(clientMsgId);
    if (ack) message.resolve(ack);
    else message.reject(error ?? new Error("message failed"));
    this.emitPending();
  }

  private failOutbox(error: Error): void {
    for (const id of [...this.outbox.keys()]) this.settle(id, undefined, error);
  }

  private emitPending(): void {
    this.emit("pending", { messages: this.pending() });
  }

  private transmit(envelope: ClientEnvelope): boolean {
    if (!this.isOpen()) return false;
    try {
      this.ws!.send(JSON.stringify(envelope));
      return true;
    } catch {
      return false; // Closing: the close event follows and the retry path takes over.
    }
  }

  private isOpen(): boolean {
    return this.currentState === "open" && this.ws !== undefined && this.ws.readyState === OPEN;
  }

  private setState(state: ConnectionState): void {
    const previous = this.currentState;
    if (previous === state) return;
    this.currentState = state;
    this.emit("state", { state, previous });
  }

  private newId(): string {
    this.idCounter += 1;
    const bytes = new Uint8Array(8);
    globalThis.crypto.getRandomValues(bytes);
    const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
    return `${hex}-${this.idCounter}`;
  }
}

function defaultNetwork(): NetworkHints | null {
  const g = globalThis as { navigator?: { onLine?: boolean }; addEventListener?: unknown; removeEventListener?: unknown };
  if (typeof g.addEventListener !== "function" || typeof g.navigator?.onLine !== "boolean") return null;
  return {
    get onLine() {
      return g.navigator?.onLine ?? true;
    },
    addEventListener: (type, listener) => (globalThis as unknown as Window).addEventListener(type, listener),
    removeEventListener: (type, listener) => (globalThis as unknown as Window).removeEventListener(type, listener),
  };
}

/** Whether a JWT's `exp` has passed (or is about to). Unreadable tokens are left to the server. */
export function isExpired(token: string, nowMs: number = Date.now()): boolean {
  const exp = tokenExpiry(token);
  return exp !== undefined && exp - EXPIRY_MARGIN_S <= nowMs / 1000;
}

/** A JWT's `exp` (seconds), if it has one. The signature is the server's business. */
export function tokenExpiry(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (!payload) return undefined;
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4))) as { exp?: unknown };
    return typeof claims.exp === "number" ? claims.exp : undefined;
  } catch {
    return undefined;
  }
}
