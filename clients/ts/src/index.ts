// roomcast-client: a browser (and Node 20+) client for roomcast's native WebSocket endpoint.
// The React hook is a separate entry point, `roomcast-client/react`, so this one needs no React.

export { RoomcastClient, isExpired, tokenExpiry } from "./client.js";
export type {
  ClientEvents,
  CloseInfo,
  ConnectionState,
  HistoryFetcher,
  NetworkHints,
  PendingMessage,
  RoomcastClientOptions,
  TokenProvider,
  TokenReason,
  WebSocketConstructor,
  WebSocketLike,
} from "./options.js";
export { Backoff, type BackoffOptions } from "./backoff.js";
export { CloseCode, closeAction, type CloseAction } from "./codes.js";
export { ApiError, AuthSession, RoomcastApi, type RoomSummary, type TokenStore, type Tokens } from "./api.js";
export type * from "./types.js";
