// roomcast's HTTP API as far as a chat front end needs it: accounts (`/auth/*`), rooms
// (`/rooms`) and history (`/rooms/{room}/messages`), plus `AuthSession`, which holds a user's
// tokens and is the `tokenProvider` a `RoomcastClient` asks.

import { isExpired } from "./client.js";
import type { TokenReason } from "./options.js";
import type { ChatMessage } from "./types.js";

/** What `/auth/register`, `/auth/login` and `/auth/refresh` return. */
export interface Tokens {
  user_id: string;
  username: string;
  access_token: string;
  refresh_token: string;
  token_type: string;
  /** Seconds the access token lasts. */
  expires_in: number;
}

/** A room in `GET /rooms`. */
export interface RoomSummary {
  name: string;
  private: boolean;
  created_by: string | null;
  created_at: number;
  last_seq: number;
  /** Users connected to it now. */
  occupancy: number;
}

/** An HTTP error with the server's `{"error": "..."}` text. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

type Fetch = typeof globalThis.fetch;

/** The HTTP API at `baseUrl` (empty: the page's own origin). */
export class RoomcastApi {
  constructor(
    readonly baseUrl: string = "",
    private readonly fetchImpl: Fetch = (...args) => globalThis.fetch(...args),
  ) {}

  /** Creates an account. */
  register(username: string, password: string): Promise<Tokens> {
    return this.request("POST", "/auth/register", { body: { username, password } });
  }

  /** Signs in. */
  login(username: string, password: string): Promise<Tokens> {
    return this.request("POST", "/auth/login", { body: { username, password } });
  }

  /** Rotates a refresh token: a new pair (the old refresh token is spent). */
  refresh(refreshToken: string): Promise<Tokens> {
    return this.request("POST", "/auth/refresh", { body: { refresh_token: refreshToken } });
  }

  /** Revokes a refresh token. */
  async logout(refreshToken: string): Promise<void> {
    await this.request("POST", "/auth/logout", { body: { refresh_token: refreshToken } });
  }

  /** A page of rooms with their occupancy, oldest first; pass `next` as `after` for the next. */
  rooms(token?: string, page: { after?: string; limit?: number } = {}): Promise<{ rooms: RoomSummary[]; next: string | null }> {
    const query = new URLSearchParams();
    if (page.after) query.set("after", page.after);
    if (page.limit) query.set("limit", String(page.limit));
    const qs = query.toString();
    return this.request("GET", `/rooms${qs ? `?${qs}` : ""}`, { token });
  }

  /** Creates a room; the caller becomes a member. */
  createRoom(token: string, name: string, isPrivate = false): Promise<RoomSummary> {
    return this.request("POST", "/rooms", { token, body: { name, private: isPrivate } });
  }

  /**
   * Messages before `before` (a `seq`), oldest first, shaped like live ones (`timestamp` in
   * seconds; the HTTP API gives milliseconds).
   */
  async history(token: string, room: string, page: { before?: number; limit?: number } = {}): Promise<ChatMessage[]> {
    const query = new URLSearchParams();
    if (page.before !== undefined) query.set("before", String(page.before));
    if (page.limit) query.set("limit", String(page.limit));
    const qs = query.toString();
    const answer = await this.request<{ messages: Array<Omit<ChatMessage, "type">> }>(
      "GET",
      `/rooms/${encodeURIComponent(room)}/messages${qs ? `?${qs}` : ""}`,
      { token },
    );
    return answer.messages.map((m) => ({ ...m, type: "message", timestamp: Math.floor(m.timestamp / 1000) }));
  }

  private async request<T>(method: string, path: string, options: { token?: string; body?: unknown } = {}): Promise<T> {
    const headers: Record<string, string> = {};
    if (options.body !== undefined) headers["content-type"] = "application/json";
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    const response = await this.fetchImpl(this.baseUrl + path, {
      method,
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    });
    const text = await response.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (!response.ok) {
      const message = (json as { error?: string } | undefined)?.error ?? `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, message);
    }
    return json as T;
  }
}

/** Where an `AuthSession` keeps its tokens between page loads (e.g. `localStorage`). */
export interface TokenStore {
  load(): Tokens | null;
  save(tokens: Tokens | null): void;
}

/**
 * A signed-in user's tokens. `tokenProvider` is what `RoomcastClient` calls: it hands out the
 * access token while it is valid and rotates it with the refresh token when it is about to
 * expire or was refused. Concurrent callers share one refresh (a refresh token works once).
 */
export class AuthSession {
  private inflight: Promise<Tokens | null> | null = null;

  constructor(
    readonly api: RoomcastApi,
    private current: Tokens | null,
    private readonly store?: TokenStore,
  ) {}

  /** Restores the tokens `store` kept, if any. */
  static restore(api: RoomcastApi, store: TokenStore): AuthSession | null {
    const tokens = store.load();
    return tokens ? new AuthSession(api, tokens, store) : null;
  }

  get tokens(): Tokens | null {
    return this.current;
  }

  /** The access token, refreshed first when it has expired. Null when signed out. */
  async accessToken(): Promise<string | null> {
    if (!this.current) return null;
    if (isExpired(this.current.access_token)) return (await this.rotate())?.access_token ?? null;
    return this.current.access_token;
  }

  /** For `RoomcastClient`'s `tokenProvider`. */
  readonly tokenProvider = async (reason: TokenReason): Promise<string | null> => {
    if (reason === "connect") return this.accessToken();
    return (await this.rotate())?.access_token ?? null;
  };

  /** A new pair from the refresh token; null (and signed out) when it is refused. */
  rotate(): Promise<Tokens | null> {
    this.inflight ??= (async () => {
      const refreshToken = this.current?.refresh_token;
      if (!refreshToken) return null;
      try {
        this.set(await this.api.refresh(refreshToken));
      } catch (err) {
        // Refused (revoked, expired): sign out. A network failure keeps the tokens for later.
        if (err instanceof ApiError) this.set(null);
        else throw err;
      }
      return this.current;
    })().finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  /** Revokes the refresh token and forgets both. */
  async logout(): Promise<void> {
    const refreshToken = this.current?.refresh_token;
    this.set(null);
    if (refreshToken) await this.api.logout(refreshToken).catch(() => undefined);
  }

  private set(tokens: Tokens | null): void {
    this.current = tokens;
    this.store?.save(tokens);
  }
}
