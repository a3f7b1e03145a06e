// The built example app (dist/) in real Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core: no browser download) against a real `streamcore serve` behind a TCP proxy
// that can cut the connection: send, stream, stop, reconnect mid-reply.
import { createReadStream, existsSync, statSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { extname, join, resolve } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Proxy, makeClient, startServer, withTimeout, type Server } from "../../../clients/js/test/harness";

const DIST = resolve(__dirname, "../dist");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const WAIT = 15_000;
const TYPES: Record<string, string> = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css" };

let server: Server;
let proxy: Proxy;
let web: http.Server;
let webPort = 0;
let browser: Browser;
let page: Page;
let pageErrors: string[] = [];

beforeAll(async () => {
  if (!existsSync(join(DIST, "index.html"))) throw new Error("build the example first: npm run build");
  server = await startServer({ delayMs: 30, words: 70 });
  proxy = await new Proxy(server).listen();
  web = http.createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    let file = join(DIST, path === "/" ? "index.html" : path);
    if (!file.startsWith(DIST) || !existsSync(file) || !statSync(file).isFile()) file = join(DIST, "index.html");
    res.writeHead(200, { "Content-Type": TYPES[extname(file)] ?? "application/octet-stream" });
    createReadStream(file).pipe(res);
  });
  await new Promise<void>((ok) => web.listen(0, "127.0.0.1", ok));
  webPort = (web.address() as AddressInfo).port;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

afterEach(async () => {
  await page?.context().close();
  expect(pageErrors).toEqual([]);
});

afterAll(async () => {
  await browser?.close();
  await new Promise((ok) => web?.close(ok));
  await proxy?.close();
  await server?.stop();
});

async function openApp(): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1000, height: 760 } });
  page = await context.newPage();
  pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.goto(`http://127.0.0.1:${webPort}/?ws=${encodeURIComponent(proxy.url())}`);
  await page.waitForSelector("[data-testid=state].connected", { timeout: WAIT });
  return page;
}

async function send(p: Page, text: string) {
  await p.fill("input[aria-label=message]", text);
  await p.click("button[type=submit]");
}

/** The demo provider's reply to `text` on a fresh connection (turn 1): deterministic. */
async function reference(text: string): Promise<string> {
  const c = makeClient({ url: server.url });
  await withTimeout(c.connect());
  const end = await withTimeout(c.sendMessage(text).done);
  c.disconnect();
  return end.content ?? "";
}

describe("example react-chat in Chromium", () => {
  it("sends a message and streams the reply", async () => {
    const p = await openApp();
    await send(p, "How do I learn the piano?");
    await p.waitForSelector(".msg.assistant.streaming", { timeout: WAIT });
    await p.waitForSelector(".msg.assistant[data-done='1']", { timeout: WAIT });
    const text = await p.locator(".msg.assistant .text").last().innerText();
    expect(text).toBe(await reference("How do I learn the piano?"));
    expect(await p.locator(".msg.user").last().innerText()).toContain("How do I learn the piano?");
  });

  it("stops the reply", async () => {
    const p = await openApp();
    await p.click("aside .new");
    await send(p, "A long story please");
    await p.waitForSelector("button.stop", { timeout: WAIT });
    await p.waitForFunction(() => (document.querySelector(".msg.assistant .text")?.textContent ?? "").split(" ").length > 4, null, { timeout: WAIT });
    await p.click("button.stop");
    await p.waitForSelector(".msg.assistant[data-stop-reason='user_cancelled']", { timeout: WAIT });
    expect(await p.locator("button.stop").count()).toBe(0);
  });

  it("finishes a reply once when the connection drops mid-reply", async () => {
    const p = await openApp();
    await p.click("aside .new"); // a fresh conversation: the reply is the turn-1 text
    const before = proxy.connections;
    await send(p, "Keep streaming through a network drop");
    await p.waitForFunction(() => (document.querySelector(".msg.assistant .text")?.textContent ?? "").split(" ").length > 6, null, { timeout: WAIT });
    proxy.cut();
    await p.waitForSelector("[data-testid=state]:not(.connected)", { timeout: WAIT });
    await p.waitForSelector("[data-testid=state].connected", { timeout: WAIT });
    await p.waitForSelector(".msg.assistant[data-done='1']", { timeout: WAIT });
    expect(await p.locator(".msg.assistant").count()).toBe(1);
    const text = await p.locator(".msg.assistant .text").innerText();
    expect(text).toBe(await reference("Keep streaming through a network drop"));
    expect(await p.locator(".msg.assistant").getAttribute("data-stop-reason")).toBe("complete");
    expect(proxy.connections - before).toBe(1); // one reconnection, no reload
  });
});
