// The chat page served by `roomcast serve` at `/`, in headless Chromium: two people chat, one
// goes offline and comes back, the server restarts under an open page, older history loads on
// scrolling up. Screenshots go to target/web-screenshots/.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import type { Browser, BrowserContext, Page } from "playwright-core";

import { RoomcastClient } from "../src/index.js";
import { TestServer, killAll, waitFor, withTimeout } from "../test/server.js";
import { launch, shot } from "./harness.js";

let server: TestServer;
let browser: Browser;
const contexts: BrowserContext[] = [];

before(async () => {
  // A resume replays at most two messages: further behind, the page reads the rest over HTTP
  // (the client's `gap`), which "a person offline for a while" goes through.
  server = await TestServer.start({ env: { ROOMCAST_REPLAY_LIMIT: "2" } });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await killAll();
});

async function person(viewport = { width: 1280, height: 800 }): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ viewport });
  contexts.push(context);
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.on("pageerror", (err) => console.error("page error:", err));
  await page.goto(server.httpUrl + "/");
  return { context, page };
}

async function register(page: Page, username: string): Promise<void> {
  await page.getByLabel("Username", { exact: true }).fill(username);
  await page.getByLabel("Password", { exact: true }).fill("correct horse battery");
  await page.getByRole("button", { name: "Register", exact: true }).click();
  await page.locator("#me-name", { hasText: username }).waitFor();
}

async function join(page: Page, room: string): Promise<void> {
  await page.getByLabel("Room", { exact: true }).fill(room);
  await page.getByRole("button", { name: "Join", exact: true }).click();
  await page.locator("#room-title", { hasText: `# ${room}` }).waitFor();
  await page.locator("#status[data-state=open]").waitFor();
}

async function say(page: Page, text: string): Promise<void> {
  await page.getByLabel("Message", { exact: true }).fill(text);
  await page.getByRole("button", { name: "Send", exact: true }).click();
  await page.locator("#timeline .message:not(.pending) .text", { hasText: text }).waitFor();
}

/** The texts of the confirmed messages on screen. */
function texts(page: Page): Promise<string[]> {
  return page.locator("#timeline .message:not(.pending) .text").allTextContents();
}

async function expectOnce(page: Page, wanted: string[], ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const shown = await texts(page);
    if (wanted.every((w) => shown.includes(w))) break;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${JSON.stringify(wanted)}; the page shows ${JSON.stringify(shown)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await new Promise((resolve) => setTimeout(resolve, 500)); // a late duplicate would show by now
  const shown = await texts(page);
  for (const w of wanted) assert.equal(shown.filter((s) => s === w).length, 1, `"${w}" once in ${JSON.stringify(shown)}`);
}

test("two people register, join the same room and chat", async () => {
  const ann = await person();
  await shot(ann.page, "01-sign-in");
  await register(ann.page, "ann");
  const ben = await person();
  await register(ben.page, "ben");
  await join(ann.page, "lobby");
  await join(ben.page, "lobby");
  await ann.page.locator("#member-list li", { hasText: "ben" }).waitFor();
  await say(ann.page, "Hi Ben! Welcome to the lobby.");
  await say(ben.page, "Hey Ann — this page is quick. Ünïcödé works.");
  await say(ann.page, "It reconnects by itself, too.");
  await expectOnce(ben.page, ["Hi Ben! Welcome to the lobby.", "Hey Ann — this page is quick. Ünïcödé works.", "It reconnects by itself, too."]);
  await expectOnce(ann.page, ["Hey Ann — this page is quick. Ünïcödé works."]);
  // The room list shows occupancy (refreshed every 10 s and after a join).
  await ben.page.reload();
  await ben.page.locator("#room-list .room", { hasText: "lobby" }).locator(".occupancy", { hasText: "2" }).waitFor();
  await ben.page.locator("#status[data-state=open]").waitFor();
  await expectOnce(ben.page, ["Hi Ben! Welcome to the lobby."]);
  await shot(ann.page, "02-chat");
  const phone = await ben.context.newPage();
  await phone.setViewportSize({ width: 390, height: 760 });
  await phone.goto(server.httpUrl + "/");
  await phone.locator("#status[data-state=open]").waitFor();
  await expectOnce(phone, ["It reconnects by itself, too."]);
  await shot(phone, "03-chat-narrow");
  await phone.close();
});

test("a person offline for a while sees everything said meanwhile, once", async () => {
  const cat = await person();
  await register(cat.page, "cat");
  const dan = await person();
  await register(dan.page, "dan");
  await join(cat.page, "offline");
  await join(dan.page, "offline");
  await say(cat.page, "going into a tunnel");
  await expectOnce(dan.page, ["going into a tunnel"]);

  await cat.context.setOffline(true);
  // Three while she is away, one more than the server replays: the first comes back through
  // the page's read of the skipped range, the other two with the resume.
  const said = ["are you there?", "the train must be in the tunnel", "see you on the other side"];
  for (const text of said) await say(dan.page, text);
  // Offline, the socket's frames stop: the client's probe (a ping after the browser's
  // `offline` event) drops the connection within 5 s, and it waits for `online` to come back.
  await cat.page.locator("#status[data-state=reconnecting]").waitFor({ timeout: 15_000 });
  await cat.page.locator("#banner").waitFor({ state: "visible" });
  assert.deepEqual(await texts(cat.page), ["going into a tunnel"], "nothing arrived while offline");
  await shot(cat.page, "04-offline");
  await cat.context.setOffline(false);
  await expectOnce(cat.page, ["going into a tunnel", ...said]);
  await cat.page.locator("#status[data-state=open]").waitFor();
  assert.deepEqual(await texts(cat.page), ["going into a tunnel", ...said], "in order");
});

test("older history loads on scrolling up", async () => {
  const token = await server.token("bot");
  const bot = new RoomcastClient({ url: server.wsUrl, token, heartbeatIntervalMs: 0 });
  try {
    bot.join("archive");
    await waitFor(() => bot.state === "open", 10_000, "the bot to connect");
    const acks = Array.from({ length: 120 }, (_, i) => bot.send("archive", `archived message ${i + 1}`));
    await withTimeout(Promise.all(acks), 20_000, "120 acks");
  } finally {
    bot.close();
  }
  const eve = await person();
  await register(eve.page, "eve");
  await join(eve.page, "archive");
  await eve.page.locator("#timeline .text", { hasText: "archived message 120" }).waitFor();
  assert.ok(!(await texts(eve.page)).includes("archived message 1"), "the join brings only recent history");
  for (let i = 0; i < 20 && !(await texts(eve.page)).includes("archived message 1"); i++) {
    await eve.page.locator("#scroller").evaluate((el) => (el.scrollTop = 0));
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  const shown = await texts(eve.page);
  assert.equal(shown.length, 120);
  assert.deepEqual(shown, Array.from({ length: 120 }, (_, i) => `archived message ${i + 1}`));
  await eve.page.locator("#history-status", { hasText: "beginning" }).waitFor();
  await eve.page.locator("#scroller").evaluate((el) => (el.scrollTop = 0));
  await shot(eve.page, "05-history-top");
});

test("a server restart under an open page shows the banner, then clears it, and chat goes on", async () => {
  const fay = await person();
  await register(fay.page, "fay");
  const gus = await person();
  await register(gus.page, "gus");
  await join(fay.page, "restart");
  await join(gus.page, "restart");
  await say(fay.page, "before the restart");

  await server.kill();
  await fay.page.getByText("Reconnecting…", { exact: false }).first().waitFor();
  await fay.page.locator("#banner").waitFor({ state: "visible" });
  await fay.page.getByLabel("Message", { exact: true }).fill("sent while the server was down");
  await fay.page.getByRole("button", { name: "Send", exact: true }).click();
  await shot(fay.page, "06-reconnecting");
  await server.restart();
  await fay.page.locator("#banner").waitFor({ state: "hidden", timeout: 30_000 });
  await fay.page.locator("#status[data-state=open]").waitFor();
  await gus.page.locator("#banner").waitFor({ state: "hidden", timeout: 30_000 });
  await expectOnce(gus.page, ["before the restart", "sent while the server was down"]);
  await say(gus.page, "back again");
  await expectOnce(fay.page, ["before the restart", "sent while the server was down", "back again"]);
  await shot(fay.page, "07-after-restart");
});
