// streamcore.js: the browser client of the streamcore protocol (reconnection with backoff,
// offline queue, events, resume of interrupted replies, reasoning, typed errors).
//
//   import { StreamcoreClient } from "/streamcore.js";
//   const client = new StreamcoreClient({ url: "ws://127.0.0.1:8000/ws" });
//   await client.connect();
//   const reply = client.sendMessage("Bonjour !", { onChunk: (text, all) => (el.textContent = all) });
//   const end = await reply.done;          // the AI_MESSAGE_END data
//
// GENERATED from clients/js/src (npm run build in clients/js): do not edit by hand.
// Model text is data: render it with textContent, never innerHTML.

// src/types.ts
var EventType = Object.freeze({
  USER_MESSAGE: "USER_MESSAGE",
  GENERATE_OBJECTIVE: "GENERATE_OBJECTIVE",
  STOP_GENERATION: "STOP_GENERATION",
  UPDATE_OBJECTIVE: "UPDATE_OBJECTIVE",
  PING: "PING",
  RESUME: "RESUME",
  AI_THINKING: "AI_THINKING",
  AI_MESSAGE_START: "AI_MESSAGE_START",
  AI_MESSAGE_CHUNK: "AI_MESSAGE_CHUNK",
  AI_REASONING_CHUNK: "AI_REASONING_CHUNK",
  AI_MESSAGE_END: "AI_MESSAGE_END",
  OBJECTIVE_GENERATED: "OBJECTIVE_GENERATED",
  OBJECTIVE_UPDATED: "OBJECTIVE_UPDATED",
  ERROR: "ERROR",
  PONG: "PONG",
  FOLLOW_UP_QUESTIONS: "FOLLOW_UP_QUESTIONS",
  INDEXING_PROGRESS: "INDEXING_PROGRESS"
});
var WSEventType = EventType;
var ConnectionState = Object.freeze({
  DISCONNECTED: "disconnected",
  CONNECTING: "connecting",
  CONNECTED: "connected",
  RECONNECTING: "reconnecting",
  CLOSED: "closed"
});

// src/events.ts
var Emitter = class {
  constructor() {
    this.handlers = /* @__PURE__ */ new Map();
  }
  /** Subscribe; returns a function that unsubscribes (safe to call twice). */
  on(event, handler) {
    let set = this.handlers.get(event);
    if (!set) this.handlers.set(event, set = /* @__PURE__ */ new Set());
    set.add(handler);
    return () => {
      set.delete(handler);
    };
  }
  /** Subscribe for one event only. */
  once(event, handler) {
    const off = this.on(event, (data, frame) => {
      off();
      handler(data, frame);
    });
    return off;
  }
  emit(event, data, frame) {
    const set = this.handlers.get(event);
    if (!set || set.size === 0) return;
    for (const handler of [...set]) {
      try {
        handler(data, frame);
      } catch (err) {
        console.error("streamcore: handler failed", event, err);
      }
    }
  }
  listenerCount(event) {
    return this.handlers.get(event)?.size ?? 0;
  }
};

// src/client.ts
var RemoteError = class extends Error {
  constructor(data) {
    super(data.message || data.code);
    this.name = "RemoteError";
    this.code = data.code;
    this.retryable = !!data.retryable;
    this.retryAfter = data.retryAfter;
    this.requestId = data.requestId;
    this.messageId = data.messageId;
    this.data = data;
  }
};
var QueueFullError = class extends Error {
  constructor(max) {
    super(`offline queue is full (${max} messages)`);
    this.code = "QUEUE_FULL";
    this.name = "QueueFullError";
  }
};
var ConnectionLostError = class extends Error {
  constructor(message = "the connection dropped before the reply ended", options) {
    super(message);
    this.code = "CONNECTION_LOST";
    this.name = "ConnectionLostError";
    if (options?.cause !== void 0) this.cause = options.cause;
  }
};
var GenerationStoppedError = class extends Error {
  constructor(stopReason) {
    super(`generation stopped: ${stopReason}`);
    this.stopReason = stopReason;
    this.code = "GENERATION_STOPPED";
    this.name = "GenerationStoppedError";
  }
};
var OPEN = 1;
var ENDED_MEMORY = 256;
var DEFAULTS = {
  reconnect: true,
  reconnectAttempts: 5,
  reconnectDelay: 1e3,
  reconnectDelayMax: 3e4,
  reconnectDecay: 1.5,
  jitter: 0.2,
  timeout: 2e4,
  pingInterval: 3e4,
  token: null,
  maxQueue: 100,
  autoRetry: false,
  maxRetries: 3,
  resume: true,
  debug: false
};
var counter = 0;
var prefix = randomHex(8);
function randomHex(n) {
  const c = globalThis.crypto;
  const bytes = new Uint8Array(Math.ceil(n / 2));
  if (c?.getRandomValues) c.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("").slice(0, n);
}
var newId = (kind) => `${kind}-${prefix}-${(++counter).toString(16)}`;
var StreamcoreClient = class {
  constructor(options) {
    this.connectionState = ConnectionState.DISCONNECTED;
    /** Successful reconnections so far. */
    this.reconnectCount = 0;
    this.events = new Emitter();
    this.queue = [];
    this.requests = /* @__PURE__ */ new Map();
    this.byMessage = /* @__PURE__ */ new Map();
    /** Last seq seen of every message that has not ended: what to RESUME after a reconnect. */
    this.seqs = /* @__PURE__ */ new Map();
    /** Last seq of recently ended messages, so late duplicates are dropped too. */
    this.endedSeqs = /* @__PURE__ */ new Map();
    /** RESUME frame id -> message id, for the RESUMEs the client sent by itself. */
    this.resumes = /* @__PURE__ */ new Map();
    this.pongs = /* @__PURE__ */ new Map();
    this.ws = null;
    this.attempts = 0;
    this.stopped = false;
    this.options = { ...DEFAULTS, ...options };
    for (const [k, v] of Object.entries(options)) {
      if (v === void 0) this.options[k] = DEFAULTS[k];
    }
  }
  get isConnected() {
    return this.connectionState === ConnectionState.CONNECTED;
  }
  /** Frames waiting for a connection. */
  get queueSize() {
    return this.queue.length;
  }
  /** Replies in progress that will be resumed after a reconnect. */
  get unfinishedMessages() {
    return [...this.seqs.keys()];
  }
  /**
   * Subscribe to a server event type, "*" (every frame), or a lifecycle event ("connected",
   * "disconnected", "reconnecting", "reconnect_failed", "state", "queue", "rtt", "resuming").
   * The handler gets the payload and the whole frame. Returns a function that unsubscribes.
   */
  on(event, handler) {
    return this.events.on(event, handler);
  }
  emit(event, data, frame) {
    this.events.emit(event, data, frame);
  }
  setState(state) {
    if (this.connectionState === state) return;
    this.connectionState = state;
    this.emit("state", state);
  }
  log(...args) {
    if (this.options.debug) console.debug("[streamcore]", ...args);
  }
  /**
   * Open the connection; resolves once connected, rejects when reconnection gives up or
   * with ConnectionLostError when disconnect() is called first.
   */
  connect() {
    if (this.isConnected) return Promise.resolve();
    this.stopped = false;
    return new Promise((resolve, reject) => {
      const off = () => {
        off1();
        off2();
        off3();
      };
      const off1 = this.on("connected", () => {
        off();
        resolve();
      });
      const off2 = this.on("reconnect_failed", (e) => {
        off();
        reject(new Error(`could not connect after ${e.attempts} attempts`));
      });
      const off3 = this.on("state", (state) => {
        if (state === ConnectionState.CLOSED && this.stopped) {
          off();
          reject(new ConnectionLostError("the client disconnected"));
        }
      });
      if (!this.ws && this.timer === void 0) this.open();
    });
  }
  /** Close the connection and stop reconnecting; replies in progress fail with ConnectionLostError. */
  disconnect() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = void 0;
    clearInterval(this.pinger);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = () => void 0;
      try {
        ws.close(1e3, "client closed");
      } catch {
      }
      if (this.connectionState === ConnectionState.CONNECTED) {
        this.setState(ConnectionState.DISCONNECTED);
        this.emit("disconnected", { code: 1e3, reason: "client closed" });
      }
    }
    this.failAll(new ConnectionLostError("the client disconnected"));
    this.setState(ConnectionState.CLOSED);
  }
  url() {
    const { url, token } = this.options;
    const reconnecting = this.attempts > 0;
    if (!token && !reconnecting) return url;
    const base = globalThis.location?.href;
    const u = new URL(url, base);
    if (token) u.searchParams.set("token", token);
    if (reconnecting) u.searchParams.set("reconnect", String(this.reconnectCount + 1));
    return u.toString();
  }
  open() {
    this.timer = void 0;
    this.setState(this.attempts || this.reconnectCount ? ConnectionState.RECONNECTING : ConnectionState.CONNECTING);
    const WS = this.options.WebSocket ?? globalThis.WebSocket;
    if (!WS) throw new Error("streamcore: no WebSocket implementation (pass options.WebSocket)");
    let ws;
    try {
      ws = new WS(this.url());
    } catch (err) {
      this.log("cannot open", err);
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    const openTimer = setTimeout(() => ws.close(), this.options.timeout);
    ws.onopen = () => {
      clearTimeout(openTimer);
      if (this.ws !== ws) return;
      if (this.attempts) this.reconnectCount += 1;
      this.attempts = 0;
      this.setState(ConnectionState.CONNECTED);
      const resumed = [];
      if (this.options.resume) {
        for (const [messageId, lastSeq] of this.seqs) {
          const id = newId("resume");
          this.resumes.set(id, messageId);
          ws.send(JSON.stringify({ id, type: EventType.RESUME, timestamp: Date.now(), data: { messageId, lastSeq } }));
          resumed.push(messageId);
          this.emit("resuming", { messageId, lastSeq });
        }
      }
      while (this.queue.length && ws.readyState === OPEN) {
        const { raw, request } = this.queue.shift();
        ws.send(raw);
        if (request) request.sent = true;
      }
      this.emit("queue", this.queue.length);
      if (this.options.pingInterval) {
        this.pinger = setInterval(() => this.ping().catch(() => {
        }), this.options.pingInterval);
      }
      this.emit("connected", { url: this.options.url, reconnects: this.reconnectCount, resumed });
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(String(event.data));
      } catch {
        return;
      }
      if (frame && typeof frame === "object") this.dispatch(frame);
    };
    ws.onerror = () => {
    };
    ws.onclose = (event) => {
      clearTimeout(openTimer);
      if (this.ws !== ws) return;
      clearInterval(this.pinger);
      const wasOpen = this.connectionState === ConnectionState.CONNECTED;
      this.ws = null;
      if (wasOpen) {
        this.setState(ConnectionState.DISCONNECTED);
        this.interrupt();
        this.emit("disconnected", { code: event.code, reason: event.reason });
      }
      if (this.stopped) return;
      if (!this.options.reconnect) {
        this.giveUp(1);
        return;
      }
      this.scheduleReconnect();
    };
  }
  delay(attempt) {
    const { reconnectDelay, reconnectDecay, reconnectDelayMax, jitter } = this.options;
    const base = Math.min(reconnectDelay * Math.pow(reconnectDecay, attempt), reconnectDelayMax);
    return Math.max(0, base * (1 + (Math.random() * 2 - 1) * jitter));
  }
  scheduleReconnect() {
    if (this.attempts >= this.options.reconnectAttempts) {
      this.giveUp(this.attempts);
      return;
    }
    const delay = this.delay(this.attempts);
    this.attempts += 1;
    this.setState(ConnectionState.RECONNECTING);
    this.emit("reconnecting", { attempt: this.attempts, delay });
    this.log("reconnecting in", delay, "ms");
    this.timer = setTimeout(() => this.open(), delay);
  }
  giveUp(attempts) {
    this.setState(ConnectionState.CLOSED);
    this.failAll(new ConnectionLostError("could not reconnect"));
    this.attempts = 0;
    this.emit("reconnect_failed", { attempts });
  }
  /** The connection dropped: keep what can be resumed, fail the rest. */
  interrupt() {
    for (const { reject } of this.pongs.values()) reject(new ConnectionLostError("the connection dropped before the PONG"));
    this.pongs.clear();
    this.resumes.clear();
    for (const request of [...this.requests.values()]) {
      if (!request.sent) continue;
      const resumable = this.options.resume && request.messageId !== void 0 && !request.ended && this.seqs.has(request.messageId);
      if (resumable) {
        request.hooks.onInterrupted?.();
      } else {
        this.fail(request, new ConnectionLostError());
      }
    }
    if (!this.options.resume) this.seqs.clear();
  }
  failAll(err) {
    for (const { reject } of this.pongs.values()) reject(err);
    this.pongs.clear();
    this.resumes.clear();
    this.seqs.clear();
    for (const request of [...this.requests.values()]) if (request.sent) this.fail(request, err);
  }
  fail(request, err) {
    request.rejectEnd(err);
    request.rejectResult(err);
    this.forget(request);
  }
  forget(request) {
    this.requests.delete(request.id);
    if (request.messageId && this.byMessage.get(request.messageId) === request) this.byMessage.delete(request.messageId);
  }
  remember(messageId, seq) {
    this.endedSeqs.set(messageId, seq);
    if (this.endedSeqs.size > ENDED_MEMORY) this.endedSeqs.delete(this.endedSeqs.keys().next().value);
  }
  dispatch(frame) {
    const type = frame.type;
    const data = frame.data ?? {};
    const meta = frame.metadata ?? {};
    const messageId = typeof data.messageId === "string" ? data.messageId : void 0;
    const seq = typeof data.seq === "number" ? data.seq : void 0;
    if (messageId !== void 0 && seq !== void 0) {
      const ended = this.endedSeqs.get(messageId);
      const last = ended ?? this.seqs.get(messageId);
      if (last !== void 0 && seq <= last) {
        this.log("dropped a replayed event", type, messageId, seq);
        return;
      }
      if (ended !== void 0) this.endedSeqs.set(messageId, seq);
      else if (type === EventType.AI_MESSAGE_END) {
        this.seqs.delete(messageId);
        this.remember(messageId, seq);
      } else this.seqs.set(messageId, seq);
    } else if (type === EventType.AI_MESSAGE_END && messageId !== void 0) {
      this.seqs.delete(messageId);
    }
    if (type === EventType.AI_MESSAGE_END && messageId !== void 0) {
      for (const [id, m] of this.resumes) if (m === messageId) this.resumes.delete(id);
    }
    const requestId = meta.requestId ?? (type === EventType.ERROR ? data.requestId : void 0);
    if (type === EventType.ERROR && seq === void 0 && requestId !== void 0 && this.resumes.has(requestId)) {
      const lost = this.resumes.get(requestId);
      this.resumes.delete(requestId);
      this.seqs.delete(lost);
      this.emit("*", frame);
      this.emit(EventType.ERROR, data, frame);
      const request2 = this.byMessage.get(lost);
      if (request2) this.fail(request2, new ConnectionLostError("the reply could not be resumed", { cause: new RemoteError(data) }));
      return;
    }
    this.emit("*", frame);
    this.emit(type, data, frame);
    if (type === EventType.PONG) {
      const pong = this.pongs.get(data.timestamp);
      if (pong) {
        this.pongs.delete(data.timestamp);
        const rtt = nowMs() - pong.t0;
        this.rtt = rtt;
        pong.resolve(rtt);
        this.emit("rtt", rtt);
      }
      return;
    }
    let request = messageId !== void 0 ? this.byMessage.get(messageId) : void 0;
    if (!request && requestId !== void 0) request = this.requests.get(requestId);
    if (!request) return;
    const hooks = request.hooks;
    switch (type) {
      case EventType.AI_THINKING:
      case EventType.FOLLOW_UP_QUESTIONS:
        break;
      // informational: not an answer that settles the request
      case EventType.AI_MESSAGE_START: {
        request.messageId = messageId;
        if (messageId !== void 0) this.byMessage.set(messageId, request);
        hooks.onStart?.(data);
        break;
      }
      case EventType.AI_MESSAGE_CHUNK: {
        const text = String(data.content ?? "");
        request.chunks.push(text);
        hooks.onChunk?.(text, request.chunks.join(""), data);
        break;
      }
      case EventType.AI_REASONING_CHUNK: {
        const text = String(data.content ?? "");
        request.reasoning.push(text);
        hooks.onReasoning?.(text, request.reasoning.join(""), data);
        break;
      }
      case EventType.ERROR: {
        const error = new RemoteError(data);
        const { autoRetry, maxRetries } = this.options;
        if (autoRetry && error.retryable && request.chunks.length === 0 && request.retries < maxRetries && request.type !== EventType.RESUME) {
          request.retries += 1;
          request.retrying = request.messageId !== void 0;
          const wait = error.retryAfter ?? this.delay(request.retries - 1);
          const target = request;
          setTimeout(() => {
            if (!this.requests.has(target.id)) return;
            if (target.messageId && this.byMessage.get(target.messageId) === target) this.byMessage.delete(target.messageId);
            target.messageId = void 0;
            target.sent = false;
            try {
              this.sendRaw(target.raw, target);
            } catch (err) {
              this.fail(target, err);
            }
          }, wait);
          return;
        }
        request.rejectEnd(error);
        request.rejectResult(error);
        if (request.messageId === void 0) this.forget(request);
        break;
      }
      case EventType.AI_MESSAGE_END: {
        const end = data;
        if (request.retrying) {
          request.retrying = false;
          if (request.messageId && this.byMessage.get(request.messageId) === request) this.byMessage.delete(request.messageId);
          return;
        }
        request.ended = true;
        request.endData = end;
        request.resolveEnd(end);
        if (request.type === EventType.GENERATE_OBJECTIVE && end.stopReason === "complete") break;
        request.rejectResult(new GenerationStoppedError(end.stopReason));
        this.forget(request);
        break;
      }
      default:
        request.resolveResult(data);
        this.forget(request);
    }
  }
  sendRaw(raw, request) {
    const ws = this.ws;
    if (ws && ws.readyState === OPEN && this.isConnected && this.queue.length === 0) {
      ws.send(raw);
      if (request) request.sent = true;
      return;
    }
    if (this.queue.length >= this.options.maxQueue) throw new QueueFullError(this.options.maxQueue);
    this.queue.push({ raw, request });
    this.emit("queue", this.queue.length);
  }
  /** Send any frame (queued while offline); returns its id. Throws QueueFullError. */
  send(type, data = {}, id = newId("req")) {
    this.sendRaw(JSON.stringify({ id, type, timestamp: Date.now(), data }));
    return id;
  }
  request(type, data, hooks = {}, id = newId("req")) {
    const raw = JSON.stringify({ id, type, timestamp: Date.now(), data });
    const request = {
      id,
      type,
      raw,
      hooks,
      chunks: [],
      reasoning: [],
      retries: 0,
      retrying: false,
      sent: false,
      ended: false
    };
    request.done = new Promise((resolve, reject) => {
      request.resolveEnd = resolve;
      request.rejectEnd = reject;
    });
    request.result = new Promise((resolve, reject) => {
      request.resolveResult = resolve;
      request.rejectResult = reject;
    });
    request.done.catch(() => {
    });
    request.result.catch(() => {
    });
    this.requests.set(id, request);
    try {
      this.sendRaw(raw, request);
    } catch (err) {
      this.requests.delete(id);
      throw err;
    }
    return request;
  }
  reply(request) {
    return {
      requestId: request.id,
      get messageId() {
        return request.messageId;
      },
      done: request.done,
      text: () => request.chunks.join(""),
      reasoning: () => request.reasoning.join(""),
      stop: () => {
        this.stopGeneration(request.messageId ?? request.id);
      }
    };
  }
  /** Send USER_MESSAGE; returns the streamed Reply. Throws QueueFullError. */
  sendMessage(content, options = {}) {
    const { context, conversationId, ...hooks } = options;
    const data = { content };
    if (context !== void 0) data.context = context;
    if (conversationId) data.conversationId = conversationId;
    return this.reply(this.request(EventType.USER_MESSAGE, data, hooks));
  }
  /** Send GENERATE_OBJECTIVE and stream it; `objective` resolves with the Objective. */
  startObjective(prompt, options = {}) {
    const { difficulty, category, ...hooks } = options;
    const data = { prompt };
    if (difficulty) data.difficulty = difficulty;
    if (category) data.category = category;
    const request = this.request(EventType.GENERATE_OBJECTIVE, data, hooks);
    const objective = request.result.then((d) => d.objective);
    objective.catch(() => {
    });
    return Object.assign(this.reply(request), { objective });
  }
  /** Send GENERATE_OBJECTIVE; resolves with the Objective (rejects if it did not complete). */
  generateObjective(prompt, options = {}) {
    return this.startObjective(prompt, options).objective;
  }
  /** Send UPDATE_OBJECTIVE; resolves with the updated Objective, rejects with RemoteError. */
  async updateObjective(objectiveId, updates) {
    const request = this.request(EventType.UPDATE_OBJECTIVE, { objectiveId, updates });
    return (await request.result).objective;
  }
  /** Send an application frame and resolve with the data of the first event answering it. */
  async call(type, data = {}) {
    return await this.request(type, data).result;
  }
  /**
   * Follow a message by id (after a page reload, in a second tab...): RESUME {messageId,
   * lastSeq}; the Reply presents the events after lastSeq (all of them when absent).
   */
  resume(messageId, lastSeq, hooks = {}) {
    const data = lastSeq === void 0 ? { messageId } : { messageId, lastSeq };
    if (lastSeq !== void 0) this.seqs.set(messageId, lastSeq);
    else this.seqs.delete(messageId);
    this.endedSeqs.delete(messageId);
    const request = this.request(EventType.RESUME, data, hooks);
    request.messageId = messageId;
    this.byMessage.set(messageId, request);
    return this.reply(request);
  }
  /** Stop one generation (message id, or the request id that started it), or all of them. */
  stopGeneration(messageId) {
    if (messageId !== void 0) messageId = this.requests.get(messageId)?.messageId ?? messageId;
    return this.send(EventType.STOP_GENERATION, messageId ? { messageId } : {});
  }
  /** PING the server; resolves with the round-trip time in ms (also kept in `rtt`). */
  ping() {
    let stamp = Date.now();
    while (this.pongs.has(stamp)) stamp += 1;
    return new Promise((resolve, reject) => {
      this.pongs.set(stamp, { resolve, reject, t0: nowMs() });
      try {
        this.send(EventType.PING, { timestamp: stamp });
      } catch (err) {
        this.pongs.delete(stamp);
        reject(err);
      }
    });
  }
};
function nowMs() {
  return typeof performance !== "undefined" ? performance.now() : Date.now();
}

// src/schema.generated.ts
var CLIENT_EVENT_TYPES = ["USER_MESSAGE", "GENERATE_OBJECTIVE", "STOP_GENERATION", "UPDATE_OBJECTIVE", "PING", "RESUME"];
var SERVER_EVENT_TYPES = ["AI_THINKING", "AI_MESSAGE_START", "AI_MESSAGE_CHUNK", "AI_REASONING_CHUNK", "AI_MESSAGE_END", "OBJECTIVE_GENERATED", "OBJECTIVE_UPDATED", "ERROR", "PONG", "FOLLOW_UP_QUESTIONS", "INDEXING_PROGRESS"];
var ERROR_CODES = { RATE_LIMIT: true, INVALID_MESSAGE: false, AUTH_FAILED: false, GENERATION_FAILED: true, TIMEOUT: true, SERVER_ERROR: true, NOT_FOUND: false };
var STOP_REASONS = ["complete", "user_cancelled", "length", "timeout", "error", "server_shutdown"];
export {
  CLIENT_EVENT_TYPES,
  ConnectionLostError,
  ConnectionState,
  ERROR_CODES,
  Emitter,
  EventType,
  GenerationStoppedError,
  QueueFullError,
  RemoteError,
  SERVER_EVENT_TYPES,
  STOP_REASONS,
  StreamcoreClient,
  WSEventType,
  newId
};
