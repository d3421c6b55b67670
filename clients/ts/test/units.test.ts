// The pure parts: backoff windows, close-code classes, token expiry.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff, closeAction, isExpired, tokenExpiry } from "../src/index.js";

test("backoff doubles its window from initialMs up to maxMs, with full jitter", () => {
  const top = new Backoff({ initialMs: 100, maxMs: 1_000, random: () => 0.9999 });
  assert.deepEqual(
    Array.from({ length: 6 }, () => top.next()),
    [99, 199, 399, 799, 999, 999],
  );
  const bottom = new Backoff({ random: () => 0 });
  assert.equal(bottom.next(), 0, "full jitter reaches zero");
  top.reset();
  assert.equal(top.next(), 99);
});

test("close codes: 1001, 1006, 1011, 1013 retry; 1008, 1009, 4000 stop; 4001 needs a new token", () => {
  for (const code of [1001, 1006, 1011, 1013]) assert.equal(closeAction(code), "retry", String(code));
  for (const code of [1008, 1009, 4000]) assert.equal(closeAction(code), "stop", String(code));
  assert.equal(closeAction(4001), "reauth");
  assert.equal(closeAction(1012), "retry");
  assert.equal(closeAction(4321), "stop");
});

test("a JWT's exp is read without checking its signature", () => {
  const payload = (claims: object) => btoa(JSON.stringify(claims)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
  const now = 1_800_000_000_000;
  const token = (exp: number) => `e30.${payload({ sub: "a", exp })}.sig`;
  assert.equal(tokenExpiry(token(1_800_000_100)), 1_800_000_100);
  assert.equal(isExpired(token(1_800_000_100), now), false);
  assert.equal(isExpired(token(1_800_000_003), now), true, "within the margin counts as expired");
  assert.equal(isExpired("opaque", now), false, "unreadable tokens are left to the server");
});
