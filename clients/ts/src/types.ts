// The native envelope (seed 002) as roomcast's `/ws` and `/ws/auth` endpoints speak it.
// Field names are the wire's own. `timestamp` is seconds since the Unix epoch; `user_id`,
// `username`, `timestamp`, `id` and `seq` always come from the server.

/** A user as the server names it. */
export interface UserInfo {
  user_id: string;
  username: string;
}

/** A chat message, live or replayed. `seq` is the room's sequence number: 1, 2, 3… no gaps. */
export interface ChatMessage {
  type: "message";
  room: string;
  content: string;
  user_id: string;
  username: string;
  /** Seconds since the epoch (the server's commit time). */
  timestamp: number;
  id: string;
  seq: number;
  data?: unknown;
}

/** Someone's first connection entered the room (the joiner gets its own too). */
export interface JoinEvent {
  type: "join";
  room: string;
  user_id: string;
  username: string;
  timestamp: number;
}

/** Someone's last connection left the room (the leaver gets it as a receipt). */
export interface LeaveEvent {
  type: "leave";
  room: string;
  user_id: string;
  username: string;
  timestamp: number;
}

/** A room's members, sent after each join (and on request). */
export interface UserListEvent {
  type: "user_list";
  room: string;
  timestamp: number;
  /** The member ids. */
  data: string[];
  users: UserInfo[];
}

/**
 * A big room's joins and leaves, coalesced (the server's presence modes: `batched`, `counts`).
 * Batched: `joined` and `left` are the net changes since this client's last update or
 * `user_list` (someone who joined and left in between is in neither), `count` the members now.
 * Counts: only `count`; keep the last `user_list` (ask again with `user_list`) for names.
 */
export interface PresenceEvent {
  type: "presence";
  room: string;
  timestamp: number;
  data: {
    joined?: { id: string; username: string }[];
    /** Ids of users who left. */
    left?: string[];
    count: number;
  };
}

/** The server committed one of this client's messages. */
export interface AckEvent {
  type: "ack";
  room: string;
  timestamp: number;
  id: string;
  seq?: number;
  client_msg_id?: string;
}

/** The server refused something; the connection stays open. */
export interface ErrorEvent {
  type: "error";
  room?: string;
  content: string;
  timestamp: number;
  /**
   * What a program needs to act on it. `skipped`: a resume was further behind than the
   * server's `ROOMCAST_REPLAY_LIMIT`, and these seqs were not replayed (the client reads them
   * over HTTP when given `history`, then emits `gap`).
   */
  data?: { skipped?: { first: number; last: number } };
}

/** The messages a resume skipped, read over HTTP (`RoomcastClientOptions.history`). */
export interface GapEvent {
  room: string;
  /** The seqs the server did not replay, `first` to `last`. */
  first: number;
  last: number;
  /** What was read of them, oldest first. */
  messages: ChatMessage[];
  /** Every seq from `first` to `last` came back (not so if a read failed, or history was trimmed). */
  complete: boolean;
  /** Why a read failed, when one did. */
  error?: unknown;
}

/** An operator notice (admin API). */
export interface SystemEvent {
  type: "system";
  content: string;
  user_id: string;
  username: string;
  timestamp: number;
  room?: string;
}

/** The connection's access token expires at `data.expires_at` (seconds): send a fresh one. */
export interface TokenExpiringEvent {
  type: "token_expiring";
  timestamp: number;
  data: { expires_at: number };
}

/** The server took the token sent with `refresh`; the connection now lasts until `expires_at`. */
export interface RefreshedEvent {
  type: "refreshed";
  timestamp: number;
  data: { expires_at: number };
}

/** The server's heartbeat (answered with `pong`) or the answer to our `ping`. */
export interface PingEvent {
  type: "ping" | "pong";
  timestamp?: number;
}

/** Every frame the server sends on the native endpoints. */
export type ServerEnvelope =
  | ChatMessage
  | JoinEvent
  | LeaveEvent
  | UserListEvent
  | PresenceEvent
  | AckEvent
  | ErrorEvent
  | SystemEvent
  | TokenExpiringEvent
  | RefreshedEvent
  | PingEvent;

/** Every frame a client may send. */
export type ClientEnvelope =
  | { type: "join"; room: string; since?: number }
  | { type: "leave"; room: string }
  | { type: "message"; room: string; content: string; data?: unknown; client_msg_id?: string }
  | { type: "user_list"; room: string }
  | { type: "refresh"; token: string }
  | { type: "ping" }
  | { type: "pong" };
