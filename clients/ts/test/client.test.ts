// RoomcastClient against a real `roomcast serve` (no mocked socket): Node 20's WebSocket
// (`--experimental-websocket`), the debug binary, SQLite in a temporary directory.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import {
  RoomcastApi,
  RoomcastClient,
  type ChatMessage,
  type CloseInfo,
  type ConnectionState,
  type ErrorEvent,
  type GapEvent,
  type RoomcastClientOptions,
} from "../src/index.js";
import { TestServer, killAll, waitFor, withTimeout } from "./server.js";

after(killAll);

/** A client that records what it saw. */
function connect(server: TestServer, token: string, options: Partial<RoomcastClientOptions> = {}) {
  const client = new RoomcastClient({ url: server.wsUrl, token, heartbeatIntervalMs: 1_000, connectTimeoutMs: 3_000, backoff: { initialMs: 100, maxMs: 1_000 }, autoConnect: false, ...options });
  const messages: ChatMessage[] = [];
  const states: ConnectionState[] = [];
  const closes: CloseInfo[] = [];
  const opens: boolean[] = [];
  client.on("open", ({ reconnected }) => opens.push(reconnected));
  client.on("message", (m) => messages.push(m));
  client.on("state", ({ state }) => states.push(state));
  client.on("close", (c) => closes.push(c));
  client.connect();
  return { client, messages, states, closes, opens };
}

async function joined(client: RoomcastClient, room: string, users: number): Promise<void> {
  client.join(room);
  await waitFor(() => client.state === "open" && client.members(room).length >= users, 10_000, `${users} member(s) in ${room}`);
}

/**
 * In `room`, Bob says `seen` messages Alice sees, then `missed` more while her client is closed;
 * then she connects again, and resumes from the last she saw.
 */
async function awayWhileSaid(alice: ReturnType<typeof connect>, bob: ReturnType<typeof connect>, room: string, seen: number, missed: number): Promise<void> {
  await joined(alice.client, room, 1);
  await joined(bob.client, room, 2);
  for (let i = 1; i <= seen; i++) await bob.client.send(room, `m${i}`);
  await waitFor(() => alice.messages.length === seen, 5_000, `alice to see the first ${seen}`);
  alice.client.close();
  for (let i = seen + 1; i <= seen + missed; i++) await bob.client.send(room, `m${i}`);
  alice.client.connect();
}

function contents(messages: ChatMessage[], room: string): string[] {
  return messages.filter((m) => m.room === room).map((m) => m.content);
}

test("a message sent by one client reaches the other, and its ack carries the seq", async () => {
  const server = await TestServer.start();
  const alice = connect(server, await server.token("alice"));
  const bob = connect(server, await server.token("bob"));
  try {
    await joined(alice.client, "lobby", 1);
    await joined(bob.client, "lobby", 2);
    const ack = await withTimeout(bob.client.send("lobby", "hello alice"), 5_000, "the ack");
    assert.equal(typeof ack.seq, "number");
    await waitFor(() => alice.messages.length === 1, 5_000, "alice to receive the message");
    const [received] = alice.messages;
    assert.equal(received!.content, "hello alice");
    assert.equal(received!.user_id, "bob");
    assert.equal(received!.username, "Bob");
    assert.equal(received!.seq, ack.seq);
    assert.deepEqual(alice.client.members("lobby").map((u) => u.user_id).sort(), ["alice", "bob"]);
    assert.deepEqual(alice.states, ["connecting", "open"]);
  } finally {
    alice.client.close();
    bob.client.close();
    await server.kill();
  }
});

test("after a server restart the client reconnects by itself and has every message sent meanwhile once, in order", async () => {
  const server = await TestServer.start();
  // Alice comes back late (a pinned jitter of ~2.5 s), so most of Bob's messages are sent
  // while she is away, some while the server is down, some after she is back.
  const alice = connect(server, await server.token("alice"), { backoff: { initialMs: 2_500, maxMs: 2_500, random: () => 0.999 } });
  const bob = connect(server, await server.token("bob"));
  try {
    await joined(alice.client, "resume", 1);
    await joined(bob.client, "resume", 2);
    const expected: string[] = [];
    const say = (text: string) => {
      expected.push(text);
      return bob.client.send("resume", text);
    };
    await Promise.all([1, 2, 3, 4, 5].map((i) => say(`before ${i}`)));
    await waitFor(() => alice.messages.length === 5, 5_000, "the first five messages");

    await server.kill();
    await waitFor(() => alice.client.state === "reconnecting" && bob.client.state === "reconnecting", 5_000, "both clients to notice");
    // Queued while the server is down: sent after Bob reconnects, with their client_msg_ids.
    const queued = [1, 2, 3, 4, 5].map((i) => say(`while down ${i}`));
    await server.restart();
    await withTimeout(Promise.all(queued), 10_000, "the queued messages' acks");
    const later = [1, 2, 3, 4, 5].map((i) => say(`after ${i}`));
    await withTimeout(Promise.all(later), 10_000, "the later messages' acks");

    await waitFor(() => alice.messages.length >= expected.length, 15_000, `alice to have ${expected.length} messages`);
    await new Promise((resolve) => setTimeout(resolve, 300)); // room for a late duplicate to show
    assert.deepEqual(contents(alice.messages, "resume"), expected);
    const seqs = alice.messages.map((m) => m.seq);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), "in seq order");
    assert.equal(new Set(seqs).size, seqs.length, "no seq twice");
    assert.equal(alice.client.state, "open");
    assert.deepEqual(alice.opens, [false, true]);
    assert.ok(alice.closes.every((c) => c.willRetry), "every close was retried");
  } finally {
    alice.client.close();
    bob.client.close();
    await server.kill();
  }
});

test("a send left unacknowledged by a frozen server is retried after the reconnect and stored once", async () => {
  const server = await TestServer.start({ env: { WEBSOCKET_HEARTBEAT_INTERVAL: "500ms" } });
  const aliceToken = await server.token("alice");
  const alice = connect(server, aliceToken, { heartbeatIntervalMs: 500, connectTimeoutMs: 1_500 });
  const bob = connect(server, await server.token("bob"), { heartbeatIntervalMs: 0 });
  try {
    await joined(alice.client, "frozen", 1);
    await joined(bob.client, "frozen", 2);
    server.pause();
    // The frame reaches the frozen server's socket buffer; no ack can come back.
    const sent = alice.client.send("frozen", "sent into the void");
    // No heartbeat for two intervals: the client drops the connection itself.
    await waitFor(() => alice.client.state === "reconnecting", 5_000, "the heartbeat watchdog to drop the connection");
    assert.ok(alice.closes.some((c) => /heartbeat/.test(c.reason)), "dropped by the watchdog");
    server.resume();
    // The server reads the first copy from the dead connection and the retry (same
    // client_msg_id) from the new one, and stores it once.
    const ack = await withTimeout(sent, 15_000, "the retried message's ack");
    await waitFor(() => bob.messages.length >= 1 && alice.messages.length >= 1, 10_000, "both to see it");
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.deepEqual(contents(bob.messages, "frozen"), ["sent into the void"]);
    assert.deepEqual(contents(alice.messages, "frozen"), ["sent into the void"]);
    assert.equal(alice.messages[0]!.seq, ack.seq);
    const stored = await new RoomcastApi(server.httpUrl).history(aliceToken, "frozen");
    assert.deepEqual(
      stored.map((m) => m.content),
      ["sent into the void"],
    );
  } finally {
    alice.client.close();
    bob.client.close();
    await server.kill();
  }
});

test("a resume further behind than the server replays fills the skipped messages in over HTTP, as one gap", async () => {
  const server = await TestServer.start({ env: { ROOMCAST_REPLAY_LIMIT: "5" } });
  const aliceToken = await server.token("alice");
  const api = new RoomcastApi(server.httpUrl);
  const pages: Array<{ before: number; limit: number }> = [];
  const alice = connect(server, aliceToken, {
    history: (room, page) => {
      pages.push(page);
      return api.history(aliceToken, room, page);
    },
  });
  const bob = connect(server, await server.token("bob"));
  const gaps: GapEvent[] = [];
  const errors: ErrorEvent[] = [];
  alice.client.on("gap", (gap) => gaps.push(gap));
  alice.client.on("error", (error) => errors.push(error));
  try {
    // Alice is away while twelve are sent: more than the server's replay limit (5).
    await awayWhileSaid(alice, bob, "far", 2, 12);
    await waitFor(() => gaps.length === 1 && alice.messages.length === 7, 10_000, "the replay and the gap");
    // The server replays the latest five and names the rest; the client reads those itself.
    assert.deepEqual(errors.map((e) => e.data?.skipped), [{ first: 3, last: 9 }]);
    assert.deepEqual(contents(alice.messages, "far"), ["m1", "m2", "m10", "m11", "m12", "m13", "m14"]);
    const gap = gaps[0]!;
    assert.equal(gap.room, "far");
    assert.deepEqual([gap.first, gap.last, gap.complete], [3, 9, true]);
    assert.deepEqual(
      gap.messages.map((m) => [m.seq, m.content]),
      [3, 4, 5, 6, 7, 8, 9].map((seq) => [seq, `m${seq}`]),
    );
    assert.deepEqual(pages, [{ before: 10, limit: 7 }], "one page, just the range");
    // Live messages follow the replay with no gap, and nothing comes twice.
    await bob.client.send("far", "m15");
    await waitFor(() => alice.messages.length === 8, 5_000, "the live message");
    assert.deepEqual(alice.messages.map((m) => m.seq), [1, 2, 10, 11, 12, 13, 14, 15]);
  } finally {
    alice.client.close();
    bob.client.close();
    await server.kill();
  }
});

test("a gap whose read fails is emitted incomplete, with the error", async () => {
  const server = await TestServer.start({ env: { ROOMCAST_REPLAY_LIMIT: "2" } });
  const alice = connect(server, await server.token("alice"), {
    history: () => Promise.reject(new Error("offline")),
  });
  const bob = connect(server, await server.token("bob"));
  const gaps: GapEvent[] = [];
  alice.client.on("gap", (gap) => gaps.push(gap));
  try {
    await awayWhileSaid(alice, bob, "far", 1, 5);
    await waitFor(() => gaps.length === 1, 10_000, "the gap");
    const gap = gaps[0]!;
    assert.deepEqual([gap.first, gap.last, gap.complete, gap.messages.length], [2, 4, false, 0]);
    assert.equal((gap.error as Error).message, "offline");
    assert.deepEqual(contents(alice.messages, "far"), ["m1", "m5", "m6"]);
  } finally {
    alice.client.close();
    bob.client.close();
    await server.kill();
  }
});

test("a 4001 calls the token provider and reconnects with its new token", async () => {
  const server = await TestServer.start();
  const good = await server.token("carol");
  const reasons: string[] = [];
  const carol = connect(server, "not-a-valid-token", {
    tokenProvider: (reason) => {
      reasons.push(reason);
      return good;
    },
  });
  try {
    await joined(carol.client, "auth", 1);
    assert.deepEqual(reasons, ["unauthorized"]);
    assert.equal(carol.closes[0]?.code, 4001);
    assert.equal(carol.closes[0]?.willRetry, true);
  } finally {
    carol.client.close();
    await server.kill();
  }
});

test("a 4001 without a new token stops instead of retrying", async () => {
  const server = await TestServer.start();
  let calls = 0;
  const dave = connect(server, "not-a-valid-token", {
    tokenProvider: () => {
      calls += 1;
      return "not-a-valid-token"; // the same, refused token: retrying cannot help
    },
  });
  try {
    await waitFor(() => dave.client.state === "closed", 5_000, "the client to give up");
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(calls, 1);
    // The server upgrades, then closes with 4001 (a browser cannot read a refused upgrade).
    assert.deepEqual(dave.states, ["connecting", "open", "closed"]);
    assert.equal(dave.closes.at(-1)?.code, 4001);
  } finally {
    dave.client.close();
    await server.kill();
  }
});

test("token_expiring asks the provider and refreshes in-band without reconnecting", async () => {
  // A 30 s token is inside the default 60 s notice: the server warns at once.
  const server = await TestServer.start();
  const short = await server.token("erin", "30s");
  const fresh = await server.token("erin", "1h");
  const reasons: string[] = [];
  const erin = connect(server, short, {
    tokenProvider: (reason) => {
      reasons.push(reason);
      return fresh;
    },
  });
  const refreshed: number[] = [];
  erin.client.on("refreshed", (event) => refreshed.push(event.data.expires_at));
  try {
    await joined(erin.client, "expiry", 1);
    await waitFor(() => refreshed.length === 1, 10_000, "the server's refreshed");
    assert.deepEqual(reasons, ["expiring"]);
    assert.ok(refreshed[0]! > Date.now() / 1000 + 3000, "the new expiry is the fresh token's");
    assert.deepEqual(erin.states, ["connecting", "open"]);
  } finally {
    erin.client.close();
    await server.kill();
  }
});

test("a 1008 (rate limited) closes for good: no retry loop", async () => {
  const server = await TestServer.start({ env: { ROOMCAST_MESSAGE_RATE: "1", ROOMCAST_MESSAGE_BURST: "1" } });
  const frank = connect(server, await server.token("frank"));
  try {
    await joined(frank.client, "spam", 1);
    const sends = Array.from({ length: 40 }, (_, i) => frank.client.send("spam", `spam ${i}`).catch((err: Error) => err));
    await waitFor(() => frank.client.state === "closed", 10_000, "the 1008 close");
    const outcomes = await withTimeout(Promise.all(sends), 5_000, "every send to settle");
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    assert.equal(frank.closes.length, 1);
    assert.equal(frank.closes[0]!.code, 1008);
    assert.equal(frank.closes[0]!.willRetry, false);
    assert.deepEqual(frank.states, ["connecting", "open", "closed"], "never reconnecting");
    assert.ok(outcomes.some((o) => o instanceof Error), "unsent messages are rejected");
  } finally {
    frank.client.close();
    await server.kill();
  }
});

test("in a batched room the members follow `presence` frames, and in a counts room the count", async () => {
  // One update per 100 ms; every room batched (ROOMCAST_PRESENCE_MODE), then counted.
  for (const mode of ["batched", "counts"] as const) {
    const server = await TestServer.start({ env: { ROOMCAST_PRESENCE_MODE: mode, ROOMCAST_PRESENCE_INTERVAL: "100ms" } });
    const alice = connect(server, await server.token("alice"));
    const bob = connect(server, await server.token("bob"));
    const frames: unknown[] = [];
    alice.client.on("presence", (e) => frames.push(e));
    try {
      await joined(alice.client, "hall", 1);
      bob.client.join("hall");
      if (mode === "batched") {
        await waitFor(() => alice.client.members("hall").length === 2, 5_000, "bob in alice's list through `presence`");
        assert.deepEqual(alice.client.members("hall").map((u) => u.username).sort(), ["Alice", "Bob"]);
        bob.client.leave("hall");
        await waitFor(() => alice.client.members("hall").length === 1, 5_000, "bob's leave through `presence`");
        assert.equal(alice.client.memberCount("hall"), 1);
      } else {
        await waitFor(() => alice.client.memberCount("hall") === 2, 5_000, "the count through `presence`");
        // Counts only: the list stays as the last `user_list` had it.
        assert.deepEqual(alice.client.members("hall").map((u) => u.user_id), ["alice"]);
      }
      assert.ok(frames.length > 0, "presence frames were emitted");
    } finally {
      alice.client.close();
      bob.client.close();
      await server.kill();
    }
  }
});
