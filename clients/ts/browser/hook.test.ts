// useRoomcast in Chromium under React.StrictMode, against a real server: one socket, one
// listener, every message once, and nothing left behind on unmount.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { after, test } from "node:test";

import * as esbuild from "esbuild";
import type { Browser } from "playwright-core";

import { RoomcastApi, RoomcastClient } from "../src/index.js";
import { TestServer, killAll, waitFor, withTimeout } from "../test/server.js";
import { launch, shot } from "./harness.js";

let browser: Browser | undefined;
after(async () => {
  await browser?.close();
  await killAll();
});

/** The hook test page, bundled with React's development build (StrictMode double-mounts only there). */
async function bundle(): Promise<string> {
  const result = await esbuild.build({
    entryPoints: [fileURLToPath(new URL("../../browser/hook-app.tsx", import.meta.url))],
    bundle: true,
    write: false,
    format: "esm",
    jsx: "automatic",
    define: { "process.env.NODE_ENV": '"development"' },
    logLevel: "warning",
  });
  return result.outputFiles[0]!.text;
}

test("useRoomcast under StrictMode opens one socket, shows each message once, fills a resume's gap and cleans up on unmount", async () => {
  // A resume replays at most two messages: further behind, the hook's client reads the rest.
  const server = await TestServer.start({ env: { ROOMCAST_REPLAY_LIMIT: "2" } });
  const script = await bundle();
  browser = await launch();
  const page = await (await browser.newContext()).newPage();
  page.setDefaultTimeout(15_000);
  page.on("pageerror", (err) => console.error("page error:", err));
  // Serve the test page from loopback (Chromium's local-network checks refuse a routed page's
  // socket to 127.0.0.1); the socket goes to the real server.
  const html = `<!doctype html><meta charset="utf-8"><div id="root"></div>
<script>
  // Count every socket the page opens.
  window.__sockets = 0;
  const Native = window.WebSocket;
  window.WebSocket = class extends Native { constructor(...args) { super(...args); window.__sockets += 1; } };
</script>
<script type="module" src="/hook.js"></script>`;
  const pages = createServer((request, response) => {
    const js = request.url === "/hook.js";
    response.writeHead(200, { "content-type": js ? "text/javascript" : "text/html" });
    response.end(js ? script : html);
  });
  await new Promise<void>((resolve) => pages.listen(0, "127.0.0.1", resolve));
  after(() => pages.close());
  const origin = `http://127.0.0.1:${(pages.address() as AddressInfo).port}`;
  const token = await server.token("hana");
  const api = new RoomcastApi(server.httpUrl);
  await page.exposeFunction("__readHistory", (room: string, before: number, limit: number) => api.history(token, room, { before, limit }));
  const query = new URLSearchParams({ ws: server.wsUrl, token });
  await page.goto(`${origin}/hook-test?${query}`);
  await page.locator("#status", { hasText: "open" }).waitFor();

  const bob = new RoomcastClient({ url: server.wsUrl, token: await server.token("bob"), heartbeatIntervalMs: 0 });
  try {
    bob.join("hooks");
    await page.locator("#users", { hasText: "bob,hana" }).waitFor();
    const said = ["one", "two", "three", "four", "five"];
    await withTimeout(Promise.all(said.map((text) => bob.send("hooks", text))), 10_000, "bob's acks");
    await page.locator("#messages li", { hasText: "five" }).waitFor();
    await page.locator("#send").click();
    await page.locator("#messages li", { hasText: "from the hook" }).waitFor();
    await new Promise((resolve) => setTimeout(resolve, 500)); // a duplicate would show by now
    assert.deepEqual(await page.locator("#messages li").allTextContents(), [...said, "from the hook"]);
    assert.equal(await page.evaluate(() => (window as unknown as { __sockets: number }).__sockets), 1, "one socket");
    assert.equal(await page.evaluate(() => window.__client?.listenerCount("message")), 1, "one message listener");
    await shot(page, "08-hook-strictmode");

    // Away for three messages where the server replays two: the first of them comes back
    // through the client's read of the skipped range (a `gap`), merged in order by the hook.
    await page.evaluate(() => window.__client!.close());
    const away = ["six", "seven", "eight"];
    await withTimeout(Promise.all(away.map((text) => bob.send("hooks", text))), 10_000, "bob's acks while hana is away");
    await page.evaluate(() => window.__client!.connect());
    await page.locator("#messages li", { hasText: "eight" }).waitFor();
    await page.locator("#messages li", { hasText: "six" }).waitFor();
    await new Promise((resolve) => setTimeout(resolve, 300)); // a duplicate would show by now
    assert.deepEqual(await page.locator("#messages li").allTextContents(), [...said, "from the hook", ...away]);

    await page.locator("#unmount").click();
    await page.waitForFunction(() => window.__client?.state === "closed");
    assert.equal(await page.evaluate(() => window.__client?.listenerCount("message")), 0, "no listener left");
    await waitFor(() => bob.members("hooks").length === 1, 10_000, "hana to leave the room");
  } finally {
    bob.close();
    await server.kill();
  }
});
