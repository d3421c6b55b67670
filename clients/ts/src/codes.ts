// The close codes roomcast sends (README, "Close codes"), each with what a client should do.
// Mirrors `roomcast::close_code` on the server.

/** What a client does after a close. */
export type CloseAction =
  /** Reconnect with backoff. */
  | "retry"
  /** Give up: retrying would be refused again (or would make things worse). */
  | "stop"
  /** Reconnect only with a token different from the one just refused. */
  | "reauth";

export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  /** No close frame at all: the network or the server process went away. */
  ABNORMAL: 1006,
  POLICY: 1008,
  TOO_BIG: 1009,
  INTERNAL: 1011,
  TRY_AGAIN_LATER: 1013,
  ROOM_NOT_FOUND: 4000,
  UNAUTHORIZED: 4001,
} as const;

const RETRY = new Set<number>([
  CloseCode.GOING_AWAY, // server shutting down, ping timeout
  CloseCode.ABNORMAL, // crash, network loss
  CloseCode.INTERNAL, // a hook failed: only this connection was closed
  CloseCode.TRY_AGAIN_LATER, // server full, slow consumer, too many connections
  1005, // no status: a proxy or browser closed without saying why
  1012, // service restart
  1014, // bad gateway
]);

const STOP = new Set<number>([
  CloseCode.POLICY, // rate limited: reconnecting at once would be rate limited again
  CloseCode.TOO_BIG, // the same message would be too big again
  CloseCode.ROOM_NOT_FOUND,
]);

/**
 * What to do after the server closed with `code`. Unknown codes in the 1000–3999 range (the
 * protocol's and proxies') are retried; unknown application codes (4000–4999) stop, since
 * roomcast defines only 4000 and 4001 and a code it does not know cannot be fixed by retrying.
 */
export function closeAction(code: number): CloseAction {
  if (code === CloseCode.UNAUTHORIZED) return "reauth";
  if (RETRY.has(code)) return "retry";
  if (STOP.has(code)) return "stop";
  if (code >= 4000) return "stop";
  return "retry";
}
