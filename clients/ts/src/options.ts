// The public types of `RoomcastClient`: its options, its events and what it is built on
// (the WebSocket it drives, the token provider, the network hints, the history reader).

import type { BackoffOptions } from "./backoff.js";
import type { CloseAction } from "./codes.js";
import type {
  AckEvent,
  ChatMessage,
  ErrorEvent,
  GapEvent,
  JoinEvent,
  LeaveEvent,
  PresenceEvent,
  RefreshedEvent,
  ServerEnvelope,
  SystemEvent,
  TokenExpiringEvent,
  UserInfo,
  UserListEvent,
} from "./types.js";

/** The connection's life cycle. */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** Why the token provider is asked. */
export type TokenReason =
  /** Before connecting: there is no token yet, or the one held has expired. */
  | "connect"
  /** The server sent `token_expiring`: the new token is sent in-band with `refresh`. */
  | "expiring"
  /** The server closed with 4001: reconnect only with a different token. */
  | "unauthorized";

/** Returns a current access token, or null when there is none (the user must log in again). */
export type TokenProvider = (reason: TokenReason) => string | null | undefined | Promise<string | null | undefined>;

/** The part of the WebSocket interface the client uses (browsers' and Node's global one). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface RoomcastClientOptions {
  /** The native endpoint, e.g. `wss://chat.example.com/ws/auth`. */
  url: string;
  /** The access token to start with. Optional when `tokenProvider` is given. */
  token?: string;
  /** Called before the token expires, on 4001, and before connecting without a valid token. */
  tokenProvider?: TokenProvider;
  /**
   * Where the token travels: the `Sec-WebSocket-Protocol` header as `token.<jwt>` (default:
   * kept out of URLs and so out of access logs) or `?token=`.
   */
  tokenIn?: "protocol" | "query";
  /** The WebSocket implementation. Default: `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Reconnect delays. Default: full jitter from 500 ms, capped at 30 s. */
  backoff?: BackoffOptions;
  /** Give up after this many reconnects in a row without a working connection. Default: never. */
  maxReconnectAttempts?: number;
  /**
   * The server's `WEBSOCKET_HEARTBEAT_INTERVAL`, ms (default 30 000). No frame for twice this
   * long means the connection is dead: it is dropped and reconnected. `0`: no watchdog.
   */
  heartbeatIntervalMs?: number;
  /** A socket that has not opened after this long is dropped and retried, ms. Default 10 000. */
  connectTimeoutMs?: number;
  /** After the browser reports going offline, a ping unanswered this long drops the connection, ms. Default 5 000. */
  offlineProbeMs?: number;
  /** A message not acknowledged after this long is sent again (same `client_msg_id`), ms. Default 10 000. */
  ackTimeoutMs?: number;
  /** A message sent this many times on open connections without an ack is given up. Default 5. */
  maxSendAttempts?: number;
  /** Connect at once (default) or wait for `connect()`. */
  autoConnect?: boolean;
  /**
   * Reads a page of a room's history, oldest first, before a `seq` (e.g. `RoomcastApi.history`
   * with the current token). With it, a resume further behind than the server replays (an
   * `error` whose `data.skipped` names the seqs left out) is filled in: the skipped messages
   * are read and emitted as one `gap` event. Without it, only the `error` says so.
   */
  history?: HistoryFetcher;
  /**
   * Where `online` / `offline` events and `navigator.onLine` come from. Default: the browser's
   * window when there is one; `null` turns the hints off.
   */
  network?: NetworkHints | null;
}

/** `window` and `navigator`, as far as connectivity hints go. */
export interface NetworkHints {
  readonly onLine: boolean;
  addEventListener(type: "online" | "offline", listener: () => void): void;
  removeEventListener(type: "online" | "offline", listener: () => void): void;
}

/** Reads up to `page.limit` of `room`'s messages before `page.before`, oldest first. */
export type HistoryFetcher = (room: string, page: { before: number; limit: number }) => Promise<ChatMessage[]>;

/** Why the connection closed and what the client does next. */
export interface CloseInfo {
  code: number;
  reason: string;
  /** `user`: `close()` was called. */
  action: CloseAction | "user";
  willRetry: boolean;
}

/** A message waiting for its `ack`. */
export interface PendingMessage {
  room: string;
  content: string;
  data?: unknown;
  clientMsgId: string;
}

/** Every event a client emits, by name. */
export interface ClientEvents {
  state: { state: ConnectionState; previous: ConnectionState };
  /** The socket opened; joins and retries have been sent. */
  open: { reconnected: boolean };
  close: CloseInfo;
  /** A chat message not seen before (live, replayed after a join, or resumed). */
  message: ChatMessage;
  join: JoinEvent;
  leave: LeaveEvent;
  user_list: UserListEvent;
  /** A big room's coalesced joins and leaves, or its member count (`presence` frame). */
  presence: PresenceEvent;
  /** A room's member count changed (after `user_list`, `join`, `leave` or `presence`). */
  count: { room: string; count: number };
  /** A room's members changed (after `user_list`, `join`, `leave` or a batched `presence`). */
  members: { room: string; users: UserInfo[] };
  ack: AckEvent;
  error: ErrorEvent;
  /** Messages a resume skipped, read over HTTP (option `history`), after the `error` naming them. */
  gap: GapEvent;
  system: SystemEvent;
  token_expiring: TokenExpiringEvent;
  refreshed: RefreshedEvent;
  /** The messages waiting for an ack changed. */
  pending: { messages: PendingMessage[] };
  /** Every frame the server sent, parsed. */
  envelope: ServerEnvelope;
}
