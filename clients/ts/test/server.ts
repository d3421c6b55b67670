// A real `roomcast serve` for the tests: the debug binary (`cargo build -p roomcast-server`),
// a SQLite file in a temporary directory, an ephemeral loopback port that survives restarts.
// Every spawned process is tracked and killed by `killAll()`, which each test file runs last.

import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The binary: `ROOMCAST_BIN`, else the workspace's debug build. */
export const BINARY = process.env.ROOMCAST_BIN ?? fileURLToPath(new URL("../../../../target/debug/roomcast", import.meta.url));

/** At least 32 bytes, as `roomcast serve` requires. */
export const SECRET = "test-secret-for-the-typescript-client-0123456789";

const live = new Set<ChildProcess>();
const dirs = new Set<string>();

export interface ServerOptions {
  /** Extra environment (limits, timers). */
  env?: Record<string, string>;
}

export class TestServer {
  private child: ChildProcess | undefined;
  private port = 0;
  readonly dir: string;
  private readonly env: Record<string, string>;

  private constructor(options: ServerOptions) {
    this.dir = mkdtempSync(join(tmpdir(), "roomcast-ts-"));
    dirs.add(this.dir);
    this.env = {
      ROOMCAST_JWT_SECRET: SECRET,
      DATABASE_URL: `sqlite://${join(this.dir, "chat.db")}`,
      // Tests connect, register and reconnect from one address far faster than a person.
      ROOMCAST_CONNECT_RATE: "0",
      ROOMCAST_AUTH_RATE: "0",
      ROOMCAST_MESSAGE_RATE: "0",
      ROOMCAST_ROOM_CREATE_RATE: "0",
      WEBSOCKET_HEARTBEAT_INTERVAL: "1s",
      ROOMCAST_SHUTDOWN_TIMEOUT: "1s",
      RUST_LOG: "warn,roomcast_server=info",
      NO_COLOR: "1",
      ...options.env,
    };
  }

  /** Starts a server and waits (bounded) until it listens. */
  static async start(options: ServerOptions = {}): Promise<TestServer> {
    const server = new TestServer(options);
    await server.spawn();
    return server;
  }

  get httpUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/ws/auth`;
  }

  /** SIGKILL: no close frames, no shutdown; the sockets die as in a crash. */
  async kill(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGKILL");
    await withTimeout(exited, 5_000, "the server to exit");
  }

  /** Starts it again on the same port and database. */
  async restart(): Promise<void> {
    await this.kill();
    await this.spawn();
  }

  /** Freezes the process (SIGSTOP): sockets stay open and nothing answers. */
  pause(): void {
    this.child?.kill("SIGSTOP");
  }

  resume(): void {
    this.child?.kill("SIGCONT");
  }

  /** An access token for `sub` (the user is created in the store), from `roomcast token`. */
  token(sub: string, ttl = "1h"): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(
        BINARY,
        ["token", "--sub", sub, "--username", sub[0]!.toUpperCase() + sub.slice(1), "--ttl", ttl],
        { env: { ...process.env, ...this.env }, timeout: 10_000 },
        (err, stdout) => (err ? reject(err) : resolve(stdout.trim())),
      );
    });
  }

  private async spawn(): Promise<void> {
    const child = spawn(BINARY, ["serve"], {
      env: { ...process.env, ...this.env, ROOMCAST_LISTEN: `127.0.0.1:${this.port}` },
      stdio: ["ignore", "pipe", "pipe"],
    });
    live.add(child);
    child.once("exit", () => live.delete(child));
    this.child = child;
    let log = "";
    const listening = new Promise<number>((resolve, reject) => {
      const read = (chunk: Buffer) => {
        log += chunk.toString();
        // Strip colours in case the subscriber ignores NO_COLOR.
        const match = /roomcast listening\s+addr=127\.0\.0\.1:(\d+)/.exec(log.replace(/\x1b\[[0-9;]*m/g, ""));
        if (match) resolve(Number(match[1]));
      };
      child.stdout!.on("data", read);
      child.stderr!.on("data", read);
      child.once("exit", (code) => reject(new Error(`roomcast exited (${code}) before listening:\n${log}`)));
      child.once("error", reject);
    });
    this.port = await withTimeout(listening, 20_000, `roomcast to listen (${BINARY})`);
  }
}

/** Kills every server still running and removes their directories. */
export async function killAll(): Promise<void> {
  for (const child of live) {
    child.kill("SIGCONT");
    child.kill("SIGKILL");
  }
  live.clear();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  dirs.clear();
}

/** `promise`, or a rejection naming what was awaited after `ms`. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `check` every 20 ms until it is true; fails after `ms` naming `what`. */
export async function waitFor(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
