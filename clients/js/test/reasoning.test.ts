// Reasoning ("thinking") text: AI_REASONING_CHUNK, kept apart from the answer, resumed too.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventType } from "../src/index.js";
import { Proxy, makeClient, startServer, withTimeout, type Server } from "./harness.js";

let server: Server | null = null;
let unsupported = "";

beforeAll(async () => {
  try {
    server = await startServer({ delayMs: 10, words: 30, reasoning: true });
  } catch (err) {
    // The demo provider's `reasoning` option lands separately; until then this file skips.
    if (!/reasoning/.test(String(err))) throw err;
    unsupported = String(err).split("\n")[0];
  }
});
afterAll(async () => {
  await server?.stop();
});

describe("reasoning", () => {
  it("exposes reasoning separately from the answer", async (ctx) => {
    if (!server) return ctx.skip(unsupported);
    const c = makeClient({ url: server.url });
    await withTimeout(c.connect());
    const reasoning: string[] = [];
    const answer: string[] = [];
    const order: string[] = [];
    c.on(EventType.AI_REASONING_CHUNK, () => order.push("r"));
    c.on(EventType.AI_MESSAGE_CHUNK, () => order.push("a"));
    const reply = c.sendMessage("Think first", { onReasoning: (t) => reasoning.push(t), onChunk: (t) => answer.push(t) });
    const end = await withTimeout(reply.done);
    expect(reasoning.length).toBeGreaterThan(0);
    expect(reply.reasoning()).toBe(reasoning.join(""));
    expect(answer.join("")).toBe(end.content);
    expect(end.content).not.toContain(reply.reasoning());
    expect(order[0]).toBe("r"); // the demo provider reasons first
    c.disconnect();
  });

  it("resumes a reply cut during its reasoning", async (ctx) => {
    if (!server) return ctx.skip(unsupported);
    const p = await new Proxy(server).listen();
    const c = makeClient({ url: p.url() });
    await withTimeout(c.connect());
    const reasoning: string[] = [];
    const reply = c.sendMessage("Think first", {
      onReasoning: (t) => {
        reasoning.push(t);
        if (reasoning.length === 2) p.cut();
      },
    });
    const end = await withTimeout(reply.done);
    const plain = makeClient({ url: server.url });
    await withTimeout(plain.connect());
    const ref = plain.sendMessage("Think first");
    const refEnd = await withTimeout(ref.done);
    expect(reasoning.join("")).toBe(ref.reasoning());
    expect(reply.text()).toBe(refEnd.content);
    expect(end.content).toBe(refEnd.content);
    c.disconnect();
    plain.disconnect();
    await p.close();
  });
});
