// The real front-end libraries, driven against a streamcore server by tests/test_sse_clients.py.
//
//   node clients.mjs '<json options>'
//
// Options: {mode, base, id, text, runId?, cut?, stop?, token?}. The script prints JSON
// lines on stdout: progress events ({"event": "cut"}, {"event": "replayed"}...) and, last,
// {"event": "result", ...} with the text and reasoning the library reconstructed.
//
// Modes:
//   aisdk-reader  DefaultChatTransport.sendMessages + readUIMessageStream (ai's reader)
//   aisdk-chat    AbstractChat (what useChat runs), optionally cut mid-stream by a network
//                 error and resumed with chat.resumeStream() (GET {api}/{id}/stream), or
//                 stopped through POST {api}/{id}/stop
//   agui          @ag-ui/client HttpAgent.runAgent, optionally cut mid-stream and resumed
//                 with connectAgent() on GET /agui/{threadId}/stream with Last-Event-ID
import { AbstractChat, DefaultChatTransport, readUIMessageStream } from "ai";
import { HttpAgent, runHttpRequest, transformHttpEventStream } from "@ag-ui/client";

const options = JSON.parse(process.argv[2]);
// @ag-ui/client leaves one internal promise rejected when a run's connection breaks:
// recorded (the test checks it is the cut itself) rather than crashing the process.
const unhandled = [];
process.on("unhandledRejection", (reason) => unhandled.push(String(reason?.message ?? reason)));
const emit = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const authHeaders = options.token ? { Authorization: `Bearer ${options.token}` } : {};

// A fetch whose current response the test can cut the way a dropped network does (a
// TypeError naming the network), and that remembers the last SSE `id:` it passed on.
function cuttingFetch() {
  const state = { lastEventId: null, cutDone: false };
  let current = null;
  const wrapped = async (url, init) => {
    const response = await fetch(url, init);
    if (!response.body) return response;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    const entry = { controller: null, reader, cut: false };
    const body = new ReadableStream({
      start(controller) {
        entry.controller = controller;
        current = entry;
      },
      async pull(controller) {
        let result;
        try {
          result = await reader.read();
        } catch (error) {
          return entry.cut ? undefined : controller.error(error);
        }
        if (entry.cut) return;
        if (result.done) return controller.close();
        buffer += decoder.decode(result.value, { stream: true });
        let boundary;
        let passed = "";
        while ((boundary = buffer.indexOf("\n\n")) !== -1) {
          const block = buffer.slice(0, boundary + 2);
          buffer = buffer.slice(boundary + 2);
          for (const line of block.split("\n")) {
            if (line.startsWith("id:")) state.lastEventId = line.slice(3).trim();
          }
          passed += block;
        }
        if (passed) controller.enqueue(new TextEncoder().encode(passed));
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    });
    return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
  };
  const cut = () => {
    if (!current || current.cut) return;
    current.cut = true;
    state.cutDone = true;
    current.controller.error(new TypeError("network error: connection cut by the test"));
    current.reader.cancel().catch(() => {});
  };
  return { fetch: wrapped, state, cut };
}

// Resolve once `condition()` holds (checked every few milliseconds).
function when(condition) {
  return new Promise((resolve) => {
    const timer = setInterval(() => {
      if (condition()) {
        clearInterval(timer);
        resolve();
      }
    }, 2);
  });
}

function partsOf(message) {
  const text = message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
  const reasoning = message.parts.filter((p) => p.type === "reasoning").map((p) => p.text).join("");
  const data = message.parts.filter((p) => p.type.startsWith("data-")).map((p) => ({ type: p.type, data: p.data }));
  return { id: message.id, text, reasoning, data, metadata: message.metadata ?? null, kinds: message.parts.map((p) => p.type) };
}

class State {
  constructor() {
    this.status = "ready";
    this.error = undefined;
    this.messages = [];
    this.pushMessage = (m) => (this.messages = this.messages.concat(m));
    this.popMessage = () => (this.messages = this.messages.slice(0, -1));
    this.replaceMessage = (i, m) => (this.messages = [...this.messages.slice(0, i), m, ...this.messages.slice(i + 1)]);
    this.snapshot = (thing) => structuredClone(thing);
  }
}

// What useChat does, without React: AbstractChat over a plain state object.
class Chat extends AbstractChat {
  constructor(init) {
    super({ ...init, state: new State() });
  }
}

async function aisdkReader() {
  const transport = new DefaultChatTransport({ api: `${options.base}/api/chat`, headers: authHeaders });
  const stream = await transport.sendMessages({
    chatId: options.id,
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: undefined,
    messages: [{ id: "u1", role: "user", parts: [{ type: "text", text: options.text }] }],
  });
  const chunks = [];
  let last = null;
  const errors = [];
  const [forReader, forLog] = stream.tee();
  const logging = (async () => {
    for await (const chunk of forLog) chunks.push(chunk.type);
  })();
  for await (const message of readUIMessageStream({ stream: forReader, onError: (e) => errors.push(String(e)) })) last = message;
  await logging;
  emit({ event: "result", ...partsOf(last), chunks, errors });
}

async function aisdkChat() {
  const cutter = cuttingFetch();
  const errors = [];
  let finish = null;
  const chat = new Chat({
    id: options.id,
    transport: new DefaultChatTransport({ api: `${options.base}/api/chat`, headers: authHeaders, fetch: cutter.fetch }),
    onError: (e) => errors.push(String(e.message ?? e)),
    onFinish: ({ isAbort, isDisconnect, isError, finishReason }) => (finish = { isAbort, isDisconnect, isError, finishReason }),
  });
  const assistant = () => chat.messages.filter((m) => m.role === "assistant").at(-1);
  let stopSent = false;
  if (options.stop) {
    // Stop the run itself from another request once some text arrived.
    const stopWhenStreaming = setInterval(async () => {
      const message = assistant();
      if (!stopSent && message && partsOf(message).text.length > 0) {
        stopSent = true;
        clearInterval(stopWhenStreaming);
        const r = await fetch(`${options.base}/api/chat/${encodeURIComponent(options.id)}/stop`, { method: "POST", headers: authHeaders });
        emit({ event: "stopped", status: r.status });
      }
    }, 5);
  }
  const sending = chat.sendMessage({ text: options.text });
  if (options.cut) {
    // Cut the connection once some text was shown: the run is still going on the server.
    await when(() => assistant() && partsOf(assistant()).text.length > 0);
    cutter.cut();
  }
  await sending;
  const before = assistant() ? partsOf(assistant()) : null;
  let resumed = null;
  if (options.cut) {
    emit({ event: "cut", status: chat.status, finish, before });
    const firstFinish = finish;
    // Resume: the AI SDK's GET {api}/{chatId}/stream, which replays the run from its start.
    let announced = false;
    const watch = setInterval(() => {
      const message = assistant();
      if (!announced && message && before && partsOf(message).text.length >= before.text.length && chat.status === "streaming") {
        announced = true;
        emit({ event: "replayed", text: partsOf(message).text });
      }
    }, 2);
    await chat.resumeStream();
    clearInterval(watch);
    resumed = { firstFinish };
  }
  const message = assistant();
  emit({
    event: "result",
    ...partsOf(message),
    status: chat.status,
    finish,
    errors,
    before,
    resumed,
    count: chat.messages.length,
    roles: chat.messages.map((m) => m.role),
  });
}

// AG-UI: an HttpAgent that can also reconnect to its thread's run (connectAgent).
class ResumableAgent extends HttpAgent {
  constructor(config, cutter) {
    super(config);
    this.cutter = cutter;
  }
  connect(input) {
    const headers = { ...this.headers, Accept: "text/event-stream" };
    if (this.cutter.state.lastEventId) headers["Last-Event-ID"] = this.cutter.state.lastEventId;
    const url = `${options.base}/agui/${encodeURIComponent(this.threadId)}/stream`;
    return transformHttpEventStream(runHttpRequest(() => this.fetch(url, { method: "GET", headers })));
  }
}

async function agui() {
  const cutter = cuttingFetch();
  const agent = new ResumableAgent(
    { url: `${options.base}/agui`, threadId: options.id, headers: authHeaders, fetch: cutter.fetch },
    cutter,
  );
  agent.addMessage({ id: "u1", role: "user", content: options.text });
  const events = [];
  const errors = [];
  let cut = false;
  let resumed = false;
  const subscriber = {
    onEvent: ({ event }) => {
      events.push(event.type);
      if (cut && !resumed) {
        resumed = true; // the resumed stream is under way on the server
        emit({ event: "resumed", first: event.type });
      }
    },
    onRunFailed: ({ error }) => {
      errors.push(String(error?.message ?? error));
    },
  };
  let runResult = null;
  const running = agent.runAgent({ runId: options.runId }, subscriber);
  if (options.cut) {
    await when(() => agent.messages.some((m) => m.role === "assistant" && (m.content ?? "").length > 0));
    cutter.cut();
  }
  try {
    runResult = await running;
  } catch (error) {
    errors.push(String(error?.message ?? error));
  }
  const summary = () => {
    const assistant = agent.messages.filter((m) => m.role === "assistant");
    const reasoning = agent.messages.filter((m) => m.role === "reasoning");
    return {
      text: assistant.map((m) => m.content ?? "").join(""),
      reasoning: reasoning.map((m) => m.content ?? "").join(""),
      ids: agent.messages.map((m) => `${m.role}:${m.id}`),
    };
  };
  let before = null;
  if (options.cut) {
    before = { ...summary(), lastEventId: cutter.state.lastEventId };
    emit({ event: "cut", before });
    cut = true;
    try {
      runResult = await agent.connectAgent({}, subscriber);
    } catch (error) {
      errors.push(String(error?.message ?? error));
    }
  }
  emit({ event: "result", ...summary(), before, events, errors, unhandled, result: runResult?.result ?? null });
}

const modes = { "aisdk-reader": aisdkReader, "aisdk-chat": aisdkChat, agui };
try {
  await modes[options.mode]();
} catch (error) {
  emit({ event: "crash", error: String(error?.stack ?? error) });
  process.exitCode = 1;
}
