// StreamcoreClient against a real `streamcore serve` (demo provider) on 127.0.0.1.
import net from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import {
  ConnectionLostError,
  EventType,
  QueueFullError,
  RemoteError,
  type Envelope,
  StreamcoreClient,
  type WebSocketConstructor,
} from "../src/index.js";
import {
  Proxy,
  RecordingWebSocket,
  makeClient,
  next,
  sentFrames,
  startServer,
  withTimeout,
  type Server,
} from "./harness.js";

let server: Server;
const clients: StreamcoreClient[] = [];
const proxies: Proxy[] = [];
function client(options: Parameters<typeof makeClient>[0]) {
  const c = makeClient(options);
  clients.push(c);
  return c;
}
async function proxy(target: { port: number } = server) {
  const p = await new Proxy(target).listen();
  proxies.push(p);
  return p;
}

beforeAll(async () => {
  server = await startServer({ delayMs: 15, words: 60 });
});
afterEach(async () => {
  for (const c of clients.splice(0)) c.disconnect();
  for (const p of proxies.splice(0)) await p.close();
});
afterAll(async () => {
  await server?.stop();
});

/** Every frame the client received, and a check that seqs only increase per message. */
function record(c: StreamcoreClient) {
  const frames: Envelope[] = [];
  c.on("*", (f) => frames.push(f));
  return frames;
}
function assertSeqsIncrease(frames: Envelope[]) {
  const last = new Map<string, number>();
  for (const f of frames) {
    const d = f.data as { messageId?: string; seq?: number };
    if (d.messageId === undefined || d.seq === undefined) continue;
    const prev = last.get(d.messageId);
    if (prev !== undefined) expect(d.seq).toBeGreaterThan(prev);
    last.set(d.messageId, d.seq);
  }
}

describe("streaming", () => {
  it("streams a reply whose chunks add up to AI_MESSAGE_END content, with increasing seqs", async () => {
    const c = client({ url: server.url });
    const frames = record(c);
    await withTimeout(c.connect());
    const seen: string[] = [];
    const reply = c.sendMessage("How do I learn the piano?", { onChunk: (t) => seen.push(t) });
    const end = await withTimeout(reply.done);
    expect(end.isComplete).toBe(true);
    expect(end.stopReason).toBe("complete");
    expect(seen.join("")).toBe(end.content);
    expect(reply.text()).toBe(end.content);
    expect(reply.messageId).toBe(end.messageId);
    expect(end.content).toContain("You asked: \u201cHow do I learn the piano?\u201d");
    const types = frames.map((f) => f.type);
    expect(types.slice(0, 2)).toEqual([EventType.AI_THINKING, EventType.AI_MESSAGE_START]);
    expect(types.at(-1)).toBe(EventType.AI_MESSAGE_END);
    // The client correlates by requestId until AI_MESSAGE_START, by messageId after it.
    for (const f of frames.filter((f) => f.type !== EventType.AI_MESSAGE_CHUNK)) expect(f.metadata?.requestId).toBe(reply.requestId);
    assertSeqsIncrease(frames);
    expect((frames[1].data as { seq?: number }).seq).toBeTypeOf("number");
  });

  it("stops a reply", async () => {
    const c = client({ url: server.url });
    await withTimeout(c.connect());
    const reply = c.sendMessage("A long story please", { onChunk: (_t, all) => all.split(" ").length > 3 && reply.stop() });
    const end = await withTimeout(reply.done);
    expect(end.stopReason).toBe("user_cancelled");
    expect(end.isComplete).toBe(false);
    expect(reply.text().split(" ").length).toBeLessThan(60);
  });

  it("sends conversationId: each conversation continues its own history", async () => {
    const c = client({ url: server.url });
    await withTimeout(c.connect());
    const ask = (conversationId: string) => withTimeout(c.sendMessage("hello there", { conversationId }).done);
    const a1 = await ask("conv-a");
    const b1 = await ask("conv-b"); // a fresh history: the demo model answers turn 1 the same way
    const a2 = await ask("conv-a"); // turn 2 of conv-a: a different answer
    expect(b1.content).toBe(a1.content);
    expect(a2.content).not.toBe(a1.content);
    const sent = sentFrames.filter((f) => f.type === "USER_MESSAGE" && f.data.content === "hello there");
    expect(sent.slice(-3).map((f) => f.data.conversationId)).toEqual(["conv-a", "conv-b", "conv-a"]);
  });

  it("streams an objective, then resolves it, and updates a step", async () => {
    const c = client({ url: server.url });
    await withTimeout(c.connect());
    const chunks: string[] = [];
    const run = c.startObjective("Apprendre le piano", { difficulty: "beginner", category: "music", onChunk: (t) => chunks.push(t) });
    const objective = await withTimeout(run.objective);
    expect(objective.title).toBe("Apprendre le piano");
    expect(objective.steps.length).toBeGreaterThan(0);
    expect(chunks.length).toBeGreaterThan(1);
    expect((await run.done).stopReason).toBe("complete");
    const updated = await withTimeout(c.updateObjective(objective.id, { steps: [{ id: objective.steps[0].id, completed: true }] }));
    expect(updated.steps[0].completed).toBe(true);
  });

  it("rejects with typed RemoteErrors carrying the code", async () => {
    const c = client({ url: server.url });
    await withTimeout(c.connect());
    const err = await withTimeout(c.updateObjective("no-such-objective", { title: "x" }).catch((e) => e));
    expect(err).toBeInstanceOf(RemoteError);
    expect(["INVALID_MESSAGE", "NOT_FOUND"]).toContain(err.code);
    expect(err.retryable).toBe(false);
    const bad = (await withTimeout(c.call("NO_SUCH_TYPE", {}).catch((e) => e))) as RemoteError;
    expect(bad).toBeInstanceOf(RemoteError);
    expect(bad.code).toBe("INVALID_MESSAGE");
    const run = c.startObjective("stop me", { onStart: () => run.stop() });
    const stopped = await withTimeout(run.objective.catch((e) => e));
    expect(stopped.name).toBe("GenerationStoppedError");
    expect(stopped.stopReason).toBe("user_cancelled");
  });

  it("measures the round-trip time with PING/PONG", async () => {
    const c = client({ url: server.url });
    await withTimeout(c.connect());
    const rtts: number[] = [];
    c.on("rtt", (ms) => rtts.push(ms));
    const rtt = await withTimeout(c.ping());
    expect(rtt).toBeGreaterThanOrEqual(0);
    expect(c.rtt).toBe(rtt);
    expect(rtts).toEqual([rtt]);
  });

  it("on() returns a function that unsubscribes", async () => {
    const c = client({ url: server.url });
    await withTimeout(c.connect());
    let n = 0;
    const off = c.on(EventType.PONG, () => (n += 1));
    await withTimeout(c.ping());
    off();
    off(); // twice is harmless
    await withTimeout(c.ping());
    expect(n).toBe(1);
  });
});

describe("reconnection", () => {
  // The seed's own test ("should reconnect automatically"), with the drop done by the network
  // and the wait on the 'connected' event instead of a fixed sleep.
  it("should reconnect automatically", async () => {
    const p = await proxy();
    const ws = client({ url: p.url(), reconnectDelay: 100 });
    await withTimeout(ws.connect());
    expect(ws.isConnected).toBe(true);
    const disconnected = next(ws, "disconnected");
    p.cut(); // simulate a disconnection
    await disconnected;
    expect(ws.isConnected).toBe(false);
    await next(ws, "connected");
    expect(ws.isConnected).toBe(true);
    expect(ws.reconnectCount).toBe(1);
  });

  it("emits the lifecycle events and gives up after reconnectAttempts", async () => {
    const p = await proxy();
    const c = client({ url: p.url(), reconnectAttempts: 2, reconnectDelay: 20 });
    const events: string[] = [];
    for (const e of ["connected", "disconnected", "reconnecting", "reconnect_failed"] as const) c.on(e, () => events.push(e));
    await withTimeout(c.connect());
    p.refuse();
    const failed = next(c, "reconnect_failed");
    p.cut();
    expect((await failed).attempts).toBe(2);
    expect(events).toEqual(["connected", "disconnected", "reconnecting", "reconnecting", "reconnect_failed"]);
    expect(c.connectionState).toBe("closed");
  });

  it("queues messages while offline (bounded) and flushes them in order on reconnect", async () => {
    const p = await proxy();
    const c = client({ url: p.url(), maxQueue: 2, reconnectAttempts: 100, reconnectDelay: 30, reconnectDelayMax: 60 });
    await withTimeout(c.connect());
    p.refuse();
    const down = next(c, "disconnected");
    p.cut();
    await down;
    const first = c.sendMessage("first while offline");
    const second = c.sendMessage("second while offline");
    expect(c.queueSize).toBe(2);
    expect(() => c.sendMessage("one too many")).toThrow(QueueFullError);
    const order: string[] = [];
    c.on(EventType.AI_MESSAGE_END, (d) => order.push(d.content ?? ""));
    p.allow();
    const [e1, e2] = await withTimeout(Promise.all([first.done, second.done]));
    expect(c.queueSize).toBe(0);
    expect(e1.content).toContain("first while offline");
    expect(e2.content).toContain("second while offline");
  });

  it("retries a retryable error that came before any chunk (RATE_LIMIT)", async () => {
    const limited = await startServer({
      delayMs: 5,
      words: 12,
      toml: "[limits]\nmax_concurrent_generations = 1\nretry_after_ms = 200\n",
    });
    try {
      const c = client({ url: limited.url, autoRetry: true, maxRetries: 30 });
      await withTimeout(c.connect());
      const errors: string[] = [];
      c.on(EventType.ERROR, (e) => errors.push(e.code));
      const a = c.sendMessage("first");
      const b = c.sendMessage("second");
      const [ea, eb] = await withTimeout(Promise.all([a.done, b.done]));
      expect(ea.stopReason).toBe("complete");
      expect(eb.stopReason).toBe("complete");
      expect(errors).toContain("RATE_LIMIT");
      expect(eb.content).toContain("second");
    } finally {
      await limited.stop();
    }
  });
});

describe("disconnect", () => {
  it("while the socket is still connecting, closes it without an unhandled error", async () => {
    // A server that accepts the TCP connection and never answers the handshake.
    const held: net.Socket[] = [];
    let accepted!: () => void;
    const acceptedP = new Promise<void>((r) => (accepted = r));
    const silent = net.createServer((sock) => {
      held.push(sock);
      accepted();
    });
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const port = (silent.address() as net.AddressInfo).port;
    let socket: WebSocket | undefined;
    class Capturing extends RecordingWebSocket {
      constructor(url: string, protocols?: string | string[]) {
        super(url, protocols);
        socket = this;
      }
    }
    const c = new StreamcoreClient({
      url: `ws://127.0.0.1:${port}/ws`,
      WebSocket: Capturing as unknown as WebSocketConstructor,
      reconnect: false,
      pingInterval: 0,
      timeout: 5000,
    });
    try {
      const connecting = c.connect().catch((e: unknown) => e);
      await withTimeout(acceptedP, undefined, "the TCP connection");
      expect(socket?.readyState).toBe(WebSocket.CONNECTING);
      // ws reports the aborted handshake as an error event, then close: with no error
      // listener left, that error was thrown from a callback and close never came.
      const closed = new Promise((r) => socket?.once("close", r));
      c.disconnect();
      await withTimeout(closed, undefined, "the aborted socket's close event");
      expect(await withTimeout(connecting, undefined, "connect() to settle")).toBeInstanceOf(ConnectionLostError);
      expect(c.connectionState).toBe("closed");
    } finally {
      for (const sock of held) sock.destroy();
      await new Promise((r) => silent.close(r));
    }
  });
});

describe("resume", () => {
  it("resumes a reply cut mid-stream: one uninterrupted text, nothing repeated or missing", async () => {
    const p = await proxy();
    const c = client({ url: p.url() });
    const frames = record(c);
    await withTimeout(c.connect());
    const pieces: string[] = [];
    let cut = false;
    const disconnected = next(c, "disconnected");
    const resuming = next(c, "resuming");
    const reply = c.sendMessage("Tell me about resuming streams", {
      onChunk: (t) => {
        pieces.push(t);
        if (!cut && pieces.length === 5) {
          cut = true;
          p.cut();
        }
      },
    });
    await disconnected;
    const resumed = await resuming;
    expect(resumed.messageId).toBe(reply.messageId);
    const end = await withTimeout(reply.done);
    expect(end.stopReason).toBe("complete");
    expect(pieces.join("")).toBe(end.content);
    expect(reply.text()).toBe(end.content);
    assertSeqsIncrease(frames);
    expect(frames.filter((f) => f.type === EventType.AI_MESSAGE_END)).toHaveLength(1);
    expect(sentFrames.some((f) => f.type === "RESUME" && f.data.messageId === reply.messageId)).toBe(true);
    // The demo model is deterministic: the same question on a fresh connection, same text.
    const fresh = client({ url: server.url });
    await withTimeout(fresh.connect());
    const again = await withTimeout(fresh.sendMessage("Tell me about resuming streams").done);
    expect(end.content).toBe(again.content);
    expect(p.connections).toBe(2);
  });

  it("resumes after several drops in one reply", async () => {
    const p = await proxy();
    const c = client({ url: p.url() });
    await withTimeout(c.connect());
    const pieces: string[] = [];
    const reply = c.sendMessage("Drop me twice", {
      onChunk: (t) => {
        pieces.push(t);
        if (pieces.length === 3 || pieces.length === 12) p.cut();
      },
    });
    const end = await withTimeout(reply.done);
    expect(pieces.join("")).toBe(end.content);
    expect(end.stopReason).toBe("complete");
    expect(p.connections).toBeGreaterThanOrEqual(3);
  });

  it("a reply the new server does not know fails with ConnectionLostError (NOT_FOUND)", async () => {
    const other = await startServer({ delayMs: 15, words: 60 });
    try {
      const p = await proxy();
      const c = client({ url: p.url() });
      await withTimeout(c.connect());
      let n = 0;
      const reply = c.sendMessage("Lost on the way", {
        onChunk: () => {
          if (++n === 3) {
            p.target = other; // the next connection reaches a server that never saw this run
            p.cut();
          }
        },
      });
      const err = await withTimeout(reply.done.catch((e) => e));
      expect(err).toBeInstanceOf(ConnectionLostError);
      expect((err.cause as RemoteError).code).toBe("NOT_FOUND");
      expect(c.unfinishedMessages).toEqual([]);
    } finally {
      await other.stop();
    }
  });

  it("follows a message by id from a second connection (resume())", async () => {
    const a = client({ url: server.url });
    await withTimeout(a.connect());
    let started!: (id: string) => void;
    const messageId = new Promise<string>((ok) => (started = ok));
    const original = a.sendMessage("Follow me", { onStart: (d) => started(d.messageId) });
    const id = await withTimeout(messageId);
    const b = client({ url: server.url });
    await withTimeout(b.connect());
    const follower = b.resume(id);
    const [e1, e2] = await withTimeout(Promise.all([original.done, follower.done]));
    expect(follower.text()).toBe(e1.content);
    expect(e2.content).toBe(e1.content);
  });

  it("reports an unknown message to resume() as NOT_FOUND", async () => {
    const c = client({ url: server.url });
    await withTimeout(c.connect());
    const err = await withTimeout(c.resume("msg-does-not-exist", 3).done.catch((e) => e));
    expect(err).toBeInstanceOf(RemoteError);
    expect(err.code).toBe("NOT_FOUND");
  });
});
