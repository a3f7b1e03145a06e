// streamcore.js: a dependency-free browser client for the streamcore protocol.
//
// The seed's WebSocketService, useWebSocket and useChatStream in one ES module: automatic
// reconnection with exponential backoff and jitter, a bounded queue of messages sent while
// offline (flushed in order on reconnect), on(event, handler) subscriptions returning an
// unsubscribe function, chunk assembly, and high-level calls.
//
//   import { StreamcoreClient } from "/streamcore.js";
//   const client = new StreamcoreClient({ url: "ws://127.0.0.1:8000/ws" });
//   await client.connect();
//   const reply = client.sendMessage("Bonjour !", { onChunk: (text, all) => render(all) });
//   const end = await reply.done;          // the AI_MESSAGE_END data
//
// Served by `streamcore serve` at /streamcore.js. Model text is data: render it with
// textContent, never innerHTML.

export const EventType = Object.freeze({
  USER_MESSAGE: "USER_MESSAGE",
  GENERATE_OBJECTIVE: "GENERATE_OBJECTIVE",
  STOP_GENERATION: "STOP_GENERATION",
  UPDATE_OBJECTIVE: "UPDATE_OBJECTIVE",
  PING: "PING",
  AI_THINKING: "AI_THINKING",
  AI_MESSAGE_START: "AI_MESSAGE_START",
  AI_MESSAGE_CHUNK: "AI_MESSAGE_CHUNK",
  AI_MESSAGE_END: "AI_MESSAGE_END",
  OBJECTIVE_GENERATED: "OBJECTIVE_GENERATED",
  OBJECTIVE_UPDATED: "OBJECTIVE_UPDATED",
  ERROR: "ERROR",
  PONG: "PONG",
  FOLLOW_UP_QUESTIONS: "FOLLOW_UP_QUESTIONS",
  INDEXING_PROGRESS: "INDEXING_PROGRESS",
});

export const ConnectionState = Object.freeze({
  DISCONNECTED: "disconnected",
  CONNECTING: "connecting",
  CONNECTED: "connected",
  RECONNECTING: "reconnecting",
  CLOSED: "closed",
});

/** An ERROR from the server. `code`, `retryable`, `retryAfter` (ms), `requestId`. */
export class RemoteError extends Error {
  constructor(data) {
    super(data.message || data.code);
    this.name = "RemoteError";
    this.code = data.code;
    this.retryable = !!data.retryable;
    this.retryAfter = data.retryAfter;
    this.requestId = data.requestId;
  }
}

export class QueueFullError extends Error {
  constructor(max) {
    super(`offline queue is full (${max} messages)`);
    this.name = "QueueFullError";
  }
}

export class ConnectionLostError extends Error {
  constructor() {
    super("the connection dropped before the reply ended");
    this.name = "ConnectionLostError";
  }
}

let counter = 0;
const prefix = Math.random().toString(16).slice(2, 10);
const newId = (kind) => `${kind}-${prefix}-${(++counter).toString(16)}`;

const DEFAULTS = {
  url: "",
  reconnect: true,
  reconnectAttempts: 5,
  reconnectDelay: 1000,
  reconnectDelayMax: 30000,
  reconnectDecay: 1.5,
  jitter: 0.2,
  timeout: 20000,
  pingInterval: 30000,
  token: null,
  maxQueue: 100,
  autoRetry: false,
  maxRetries: 3,
  debug: false,
};

export class StreamcoreClient {
  constructor(options = {}) {
    this.options = { ...DEFAULTS, ...options };
    this.connectionState = ConnectionState.DISCONNECTED;
    this.reconnectCount = 0;
    this._handlers = new Map();
    this._queue = [];
    this._requests = new Map();
    this._byMessage = new Map();
    this._pongs = new Map();
    this._ws = null;
    this._attempts = 0;
    this._timer = null;
    this._pinger = null;
    this._stopped = false;
  }

  get isConnected() {
    return this.connectionState === ConnectionState.CONNECTED;
  }

  get queueSize() {
    return this._queue.length;
  }

  /** Subscribe to a server event type, "*" (every frame), or a lifecycle event
   * ("connected", "disconnected", "reconnecting", "reconnect_failed", "state").
   * Returns a function that unsubscribes. */
  on(event, handler) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(handler);
    return () => this._handlers.get(event)?.delete(handler);
  }

  _emit(event, data) {
    for (const handler of [...(this._handlers.get(event) || [])]) {
      try {
        handler(data);
      } catch (err) {
        console.error("streamcore: handler failed", event, err);
      }
    }
  }

  _setState(state) {
    if (this.connectionState === state) return;
    this.connectionState = state;
    this._emit("state", state);
  }

  _log(...args) {
    if (this.options.debug) console.debug("[streamcore]", ...args);
  }

  /** Open the connection; resolves once connected (or rejects when giving up). */
  connect() {
    this._stopped = false;
    return new Promise((resolve, reject) => {
      const off1 = this.on("connected", () => { off1(); off2(); resolve(); });
      const off2 = this.on("reconnect_failed", (e) => { off1(); off2(); reject(new Error(`could not connect after ${e.attempts} attempts`)); });
      this._open();
    });
  }

  /** Close the connection and stop reconnecting. */
  disconnect() {
    this._stopped = true;
    clearTimeout(this._timer);
    clearInterval(this._pinger);
    if (this._ws) this._ws.close(1000, "client closed");
    this._setState(ConnectionState.CLOSED);
  }

  _url() {
    const { url, token } = this.options;
    if (!token) return url;
    const u = new URL(url, location.href);
    u.searchParams.set("token", token); // browsers cannot set headers on a WebSocket
    return u.toString();
  }

  _open() {
    this._setState(this._attempts || this.reconnectCount ? ConnectionState.RECONNECTING : ConnectionState.CONNECTING);
    let ws;
    try {
      ws = new WebSocket(this._url());
    } catch (err) {
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    const openTimer = setTimeout(() => ws.close(), this.options.timeout);
    ws.onopen = () => {
      clearTimeout(openTimer);
      if (this._attempts) this.reconnectCount += 1;
      this._attempts = 0;
      this._setState(ConnectionState.CONNECTED);
      // Flush the offline queue in order before anything new goes out.
      while (this._queue.length && ws.readyState === WebSocket.OPEN) {
        const { raw, request } = this._queue.shift();
        ws.send(raw);
        if (request) request.sent = true;
      }
      if (this.options.pingInterval) {
        this._pinger = setInterval(() => this.ping().catch(() => {}), this.options.pingInterval);
      }
      this._emit("connected", { url: this.options.url, reconnects: this.reconnectCount });
    };
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this._dispatch(frame);
    };
    ws.onclose = (event) => {
      clearTimeout(openTimer);
      clearInterval(this._pinger);
      const wasOpen = this.connectionState === ConnectionState.CONNECTED;
      this._ws = null;
      if (wasOpen) {
        this._setState(ConnectionState.DISCONNECTED);
        this._failStreams();
        this._emit("disconnected", { code: event.code, reason: event.reason });
      }
      if (this._stopped) return;
      if (!this.options.reconnect) {
        this._setState(ConnectionState.CLOSED);
        this._emit("reconnect_failed", { attempts: 1 });
        return;
      }
      this._scheduleReconnect();
    };
  }

  _delay(attempt) {
    const { reconnectDelay, reconnectDecay, reconnectDelayMax, jitter } = this.options;
    const base = Math.min(reconnectDelay * Math.pow(reconnectDecay, attempt), reconnectDelayMax);
    return Math.max(0, base * (1 + (Math.random() * 2 - 1) * jitter));
  }

  _scheduleReconnect() {
    if (this._attempts >= this.options.reconnectAttempts) {
      this._setState(ConnectionState.CLOSED);
      this._emit("reconnect_failed", { attempts: this._attempts });
      return;
    }
    const delay = this._delay(this._attempts);
    this._attempts += 1;
    this._setState(ConnectionState.RECONNECTING);
    this._emit("reconnecting", { attempt: this._attempts, delay });
    this._log("reconnecting in", delay, "ms");
    this._timer = setTimeout(() => this._open(), delay);
  }

  _failStreams() {
    for (const request of [...this._requests.values()]) {
      if (request.sent) {
        request.fail(new ConnectionLostError());
        this._forget(request);
      }
    }
  }

  _forget(request) {
    this._requests.delete(request.id);
    if (request.messageId) this._byMessage.delete(request.messageId);
  }

  _dispatch(frame) {
    const type = frame.type;
    const data = frame.data || {};
    const meta = frame.metadata || {};
    this._emit("*", frame);
    this._emit(type, data);
    if (type === EventType.PONG) {
      const resolve = this._pongs.get(data.timestamp);
      if (resolve) {
        this._pongs.delete(data.timestamp);
        resolve();
      }
      return;
    }
    const rid = meta.requestId || (type === EventType.ERROR ? data.requestId : undefined);
    let request = rid ? this._requests.get(rid) : undefined;
    if (!request && data.messageId) request = this._byMessage.get(data.messageId);
    if (!request) return;
    switch (type) {
      case EventType.AI_THINKING:
      case EventType.FOLLOW_UP_QUESTIONS:
        break; // informational: not an answer that settles the request
      case EventType.AI_MESSAGE_START:
        request.messageId = data.messageId;
        this._byMessage.set(data.messageId, request);
        request.onStart?.(data);
        break;
      case EventType.AI_MESSAGE_CHUNK:
        request.chunks.push(data.content);
        request.onChunk?.(data.content, request.chunks.join(""), data);
        break;
      case EventType.ERROR: {
        const error = new RemoteError(data);
        if (this.options.autoRetry && error.retryable && request.chunks.length === 0 && request.retries < this.options.maxRetries) {
          request.retries += 1;
          request.retrying = request.messageId !== undefined;
          const wait = error.retryAfter ?? this._delay(request.retries - 1);
          setTimeout(() => {
            if (request.messageId) this._byMessage.delete(request.messageId);
            request.messageId = undefined;
            this._sendRaw(JSON.stringify(request.frame), request);
          }, wait);
          return;
        }
        request.fail(error);
        if (request.messageId === undefined) this._forget(request);
        break;
      }
      case EventType.AI_MESSAGE_END:
        if (request.retrying) {
          request.retrying = false;
          return;
        }
        request.end(data);
        if (request.frame.type !== EventType.GENERATE_OBJECTIVE || data.stopReason !== "complete") this._forget(request);
        break;
      default: // OBJECTIVE_GENERATED, OBJECTIVE_UPDATED, application replies
        request.reply(type, data);
        this._forget(request);
    }
  }

  _sendRaw(raw, request) {
    const ws = this._ws;
    if (ws && ws.readyState === WebSocket.OPEN && this._queue.length === 0) {
      ws.send(raw);
      if (request) request.sent = true;
      return;
    }
    if (this._queue.length >= this.options.maxQueue) throw new QueueFullError(this.options.maxQueue);
    this._queue.push({ raw, request });
    this._emit("queue", this._queue.length);
  }

  /** Send any frame (queued while offline); returns its id. Throws QueueFullError. */
  send(type, data = {}, id = newId("req")) {
    this._sendRaw(JSON.stringify({ id, type, timestamp: Date.now(), data }));
    return id;
  }

  _request(type, data, hooks = {}) {
    const frame = { id: newId("req"), type, timestamp: Date.now(), data };
    const request = {
      id: frame.id, frame, messageId: undefined, chunks: [], retries: 0, retrying: false, sent: false, ...hooks,
    };
    request.done = new Promise((resolve, reject) => {
      request.end = resolve;
      request.fail = reject;
    });
    request.result = new Promise((resolve, reject) => {
      request.reply = (kind, payload) => resolve(payload);
      const fail = request.fail;
      request.fail = (err) => { fail(err); reject(err); };
    });
    request.done.catch(() => {});
    request.result.catch(() => {});
    this._requests.set(request.id, request);
    try {
      this._sendRaw(JSON.stringify(frame), request);
    } catch (err) {
      this._requests.delete(request.id);
      throw err;
    }
    return request;
  }

  /** Send USER_MESSAGE. Returns {requestId, done (Promise of AI_MESSAGE_END data), stop(), text()}. */
  sendMessage(content, { context, onChunk, onStart } = {}) {
    const data = { content };
    if (context !== undefined) data.context = context;
    const request = this._request(EventType.USER_MESSAGE, data, { onChunk, onStart });
    return {
      requestId: request.id,
      get messageId() { return request.messageId; },
      done: request.done,
      text: () => request.chunks.join(""),
      stop: () => this.stopGeneration(request.messageId || request.id),
    };
  }

  /** Send GENERATE_OBJECTIVE; resolves with the Objective. */
  async generateObjective(prompt, { difficulty, category, onChunk } = {}) {
    const data = { prompt };
    if (difficulty) data.difficulty = difficulty;
    if (category) data.category = category;
    const request = this._request(EventType.GENERATE_OBJECTIVE, data, { onChunk });
    this.lastObjectiveRequest = request;
    const end = await request.done;
    if (end.stopReason !== "complete") throw new Error(`generation stopped: ${end.stopReason}`);
    return (await request.result).objective;
  }

  /** Send UPDATE_OBJECTIVE; resolves with the updated Objective. */
  async updateObjective(objectiveId, updates) {
    const request = this._request(EventType.UPDATE_OBJECTIVE, { objectiveId, updates });
    return (await request.result).objective;
  }

  /** Stop one generation (message id or request id), or every generation of the connection. */
  stopGeneration(messageId) {
    return this.send(EventType.STOP_GENERATION, messageId ? { messageId } : {});
  }

  /** PING the server; resolves with the round-trip time in ms. */
  ping() {
    let stamp = Date.now();
    while (this._pongs.has(stamp)) stamp += 1;
    const t0 = performance.now();
    return new Promise((resolve) => {
      this._pongs.set(stamp, () => resolve(performance.now() - t0));
      this.send(EventType.PING, { timestamp: stamp });
    });
  }
}
