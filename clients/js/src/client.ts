// StreamcoreClient: the seed's WebSocketService + messageHandler for the streamcore protocol.
//
// Automatic reconnection with exponential backoff and jitter, a bounded queue of frames sent
// while offline (flushed in order on reconnect), on(event, handler) returning an unsubscribe
// function, lifecycle events, chunk assembly, auto-retry of retryable errors that came before
// any chunk, typed errors, and resume: every event of a message carries a `seq`; when the
// connection drops, each reply that had started is resumed after the reconnect with
// RESUME {messageId, lastSeq}, and events at or below the last seq seen are dropped, so a
// reply reads as one uninterrupted stream (no text missing or repeated).
//
// Model text is data: render it with textContent, never innerHTML.

import { Emitter } from "./events.js";
import {
  ConnectionState,
  EventType,
  type ClientEventMap,
  type Envelope,
  type ErrorData,
  type GenerateObjectiveData,
  type MessageChunkData,
  type MessageEndData,
  type MessageStartData,
  type Objective,
  type ObjectiveUpdates,
  type ReasoningChunkData,
  type StopReason,
  type UserMessageData,
} from "./types.js";

/** An ERROR from the server. */
export class RemoteError extends Error {
  readonly code: string;
  readonly retryable: boolean;
  /** Milliseconds to wait before retrying, when the server says. */
  readonly retryAfter?: number;
  readonly requestId?: string;
  readonly messageId?: string;
  readonly data: ErrorData;
  constructor(data: ErrorData) {
    super(data.message || data.code);
    this.name = "RemoteError";
    this.code = data.code;
    this.retryable = !!data.retryable;
    this.retryAfter = data.retryAfter;
    this.requestId = data.requestId;
    this.messageId = data.messageId;
    this.data = data;
  }
}

/** The offline queue already holds `maxQueue` frames. */
export class QueueFullError extends Error {
  readonly code = "QUEUE_FULL";
  constructor(max: number) {
    super(`offline queue is full (${max} messages)`);
    this.name = "QueueFullError";
  }
}

/** The connection dropped and the request could not be resumed. */
export class ConnectionLostError extends Error {
  readonly code = "CONNECTION_LOST";
  constructor(message = "the connection dropped before the reply ended", options?: { cause?: unknown }) {
    super(message);
    this.name = "ConnectionLostError";
    if (options?.cause !== undefined) (this as { cause?: unknown }).cause = options.cause;
  }
}

/** A generation ended without completing (stopped, cut by `length`, timed out...). */
export class GenerationStoppedError extends Error {
  readonly code = "GENERATION_STOPPED";
  constructor(readonly stopReason: StopReason | string) {
    super(`generation stopped: ${stopReason}`);
    this.name = "GenerationStoppedError";
  }
}

/** The subset of the WebSocket API the client uses (browsers' WebSocket, the `ws` package...). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface StreamcoreOptions {
  /** ws:// or wss:// URL (relative URLs resolve against the page). */
  url: string;
  reconnect?: boolean;
  /** Consecutive failed attempts before `reconnect_failed`. */
  reconnectAttempts?: number;
  /** ms; the delay before attempt n is reconnectDelay × reconnectDecay^(n-1), capped. */
  reconnectDelay?: number;
  reconnectDelayMax?: number;
  reconnectDecay?: number;
  /** ±fraction of randomness on every delay (0.2: ±20 %). */
  jitter?: number;
  /** ms to open a connection. */
  timeout?: number;
  /** ms between application PINGs (0: none). */
  pingInterval?: number;
  /** JWT, sent as `?token=` (browsers cannot set headers on a WebSocket). */
  token?: string | null;
  /** Frames kept while offline; past it send() throws QueueFullError. */
  maxQueue?: number;
  /** Resend after a retryable ERROR that came before any chunk, waiting retryAfter. */
  autoRetry?: boolean;
  maxRetries?: number;
  /** Resume interrupted replies after a reconnect (default true). */
  resume?: boolean;
  debug?: boolean;
  /** WebSocket implementation (default: globalThis.WebSocket; in Node < 22 pass `ws`). */
  WebSocket?: WebSocketConstructor;
}

export interface ReplyHooks {
  onStart?: (data: MessageStartData) => void;
  /** A piece of the answer, and the whole answer so far. */
  onChunk?: (text: string, all: string, data: MessageChunkData) => void;
  /** A piece of the model's reasoning, and the whole reasoning so far. */
  onReasoning?: (text: string, all: string, data: ReasoningChunkData) => void;
  /** The connection dropped mid-reply; it will be resumed after the reconnect. */
  onInterrupted?: () => void;
}

export interface SendMessageOptions extends ReplyHooks {
  context?: unknown;
  /** The conversation whose history the reply continues. */
  conversationId?: string;
}

export interface GenerateObjectiveOptions extends ReplyHooks {
  difficulty?: string;
  category?: string;
}

/** A streamed reply. */
export interface Reply {
  /** The `id` of the frame that asked for it. */
  readonly requestId: string;
  /** Known from AI_MESSAGE_START on. */
  readonly messageId: string | undefined;
  /** The AI_MESSAGE_END data; rejects with RemoteError or ConnectionLostError. */
  readonly done: Promise<MessageEndData>;
  /** The answer so far. */
  text(): string;
  /** The reasoning so far (AI_REASONING_CHUNK), kept apart from the answer. */
  reasoning(): string;
  /** Stop the generation (STOP_GENERATION). */
  stop(): void;
}

export interface ObjectiveRun extends Reply {
  /** The OBJECTIVE_GENERATED objective; rejects with GenerationStoppedError when stopped. */
  readonly objective: Promise<Objective>;
}

interface Pending {
  id: string;
  type: string;
  raw: string;
  hooks: ReplyHooks;
  messageId?: string;
  chunks: string[];
  reasoning: string[];
  retries: number;
  retrying: boolean;
  sent: boolean;
  ended: boolean;
  endData?: MessageEndData;
  resolveEnd: (data: MessageEndData) => void;
  rejectEnd: (err: unknown) => void;
  resolveResult: (data: unknown) => void;
  rejectResult: (err: unknown) => void;
  done: Promise<MessageEndData>;
  result: Promise<unknown>;
}

const OPEN = 1;
const ENDED_MEMORY = 256;

const DEFAULTS = {
  reconnect: true,
  reconnectAttempts: 5,
  reconnectDelay: 1000,
  reconnectDelayMax: 30000,
  reconnectDecay: 1.5,
  jitter: 0.2,
  timeout: 20000,
  pingInterval: 30000,
  token: null as string | null,
  maxQueue: 100,
  autoRetry: false,
  maxRetries: 3,
  resume: true,
  debug: false,
};

let counter = 0;
const prefix = randomHex(8);
function randomHex(n: number): string {
  const c = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto;
  const bytes = new Uint8Array(Math.ceil(n / 2));
  if (c?.getRandomValues) c.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("").slice(0, n);
}
/** A unique frame id, e.g. `req-1a2b3c4d-5`. */
export const newId = (kind: string): string => `${kind}-${prefix}-${(++counter).toString(16)}`;

export class StreamcoreClient {
  readonly options: Required<Omit<StreamcoreOptions, "WebSocket">> & { WebSocket?: WebSocketConstructor };
  connectionState: ConnectionState = ConnectionState.DISCONNECTED;
  /** Successful reconnections so far. */
  reconnectCount = 0;
  /** Round-trip time of the last PING, ms (undefined before the first PONG). */
  rtt: number | undefined;

  private events = new Emitter<ClientEventMap>();
  private queue: Array<{ raw: string; request?: Pending }> = [];
  private requests = new Map<string, Pending>();
  private byMessage = new Map<string, Pending>();
  /** Last seq seen of every message that has not ended: what to RESUME after a reconnect. */
  private seqs = new Map<string, number>();
  /** Last seq of recently ended messages, so late duplicates are dropped too. */
  private endedSeqs = new Map<string, number>();
  /** RESUME frame id -> message id, for the RESUMEs the client sent by itself. */
  private resumes = new Map<string, string>();
  private pongs = new Map<number, { resolve: (rtt: number) => void; reject: (e: unknown) => void; t0: number }>();
  private ws: WebSocketLike | null = null;
  private attempts = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private pinger: ReturnType<typeof setInterval> | undefined;
  private stopped = false;

  constructor(options: StreamcoreOptions) {
    this.options = { ...DEFAULTS, ...options } as StreamcoreClient["options"];
    for (const [k, v] of Object.entries(options)) {
      if (v === undefined) (this.options as Record<string, unknown>)[k] = (DEFAULTS as Record<string, unknown>)[k];
    }
  }

  get isConnected(): boolean {
    return this.connectionState === ConnectionState.CONNECTED;
  }

  /** Frames waiting for a connection. */
  get queueSize(): number {
    return this.queue.length;
  }

  /** Replies in progress that will be resumed after a reconnect. */
  get unfinishedMessages(): string[] {
    return [...this.seqs.keys()];
  }

  /**
   * Subscribe to a server event type, "*" (every frame), or a lifecycle event ("connected",
   * "disconnected", "reconnecting", "reconnect_failed", "state", "queue", "rtt", "resuming").
   * The handler gets the payload and the whole frame. Returns a function that unsubscribes.
   */
  on<K extends keyof ClientEventMap>(event: K, handler: (data: ClientEventMap[K], frame?: Envelope) => void): () => void {
    return this.events.on(event, handler as (data: ClientEventMap[K], frame?: unknown) => void);
  }

  private emit<K extends keyof ClientEventMap>(event: K, data: ClientEventMap[K], frame?: Envelope): void {
    this.events.emit(event, data, frame);
  }

  private setState(state: ConnectionState): void {
    if (this.connectionState === state) return;
    this.connectionState = state;
    this.emit("state", state);
  }

  private log(...args: unknown[]): void {
    if (this.options.debug) console.debug("[streamcore]", ...args);
  }

  /**
   * Open the connection; resolves once connected, rejects when reconnection gives up or
   * with ConnectionLostError when disconnect() is called first.
   */
  connect(): Promise<void> {
    if (this.isConnected) return Promise.resolve();
    this.stopped = false;
    return new Promise<void>((resolve, reject) => {
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
      if (!this.ws && this.timer === undefined) this.open();
    });
  }

  /** Close the connection and stop reconnecting; replies in progress fail with ConnectionLostError. */
  disconnect(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    clearInterval(this.pinger);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      // Closing a socket still connecting reports an error event (Node's ws emits it,
      // browsers fire it): swallowed here, or an emitter without a listener throws it.
      ws.onerror = () => undefined;
      try {
        ws.close(1000, "client closed");
      } catch {
        /* already closing */
      }
      if (this.connectionState === ConnectionState.CONNECTED) {
        this.setState(ConnectionState.DISCONNECTED);
        this.emit("disconnected", { code: 1000, reason: "client closed" });
      }
    }
    this.failAll(new ConnectionLostError("the client disconnected"));
    this.setState(ConnectionState.CLOSED);
  }

  private url(): string {
    const { url, token } = this.options;
    const reconnecting = this.attempts > 0;
    if (!token && !reconnecting) return url;
    const base = (globalThis as { location?: { href: string } }).location?.href;
    const u = new URL(url, base);
    if (token) u.searchParams.set("token", token);
    // Reported so the server can count reconnections (docs/SPEC.md, Connection).
    if (reconnecting) u.searchParams.set("reconnect", String(this.reconnectCount + 1));
    return u.toString();
  }

  private open(): void {
    this.timer = undefined;
    this.setState(this.attempts || this.reconnectCount ? ConnectionState.RECONNECTING : ConnectionState.CONNECTING);
    const WS = this.options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) throw new Error("streamcore: no WebSocket implementation (pass options.WebSocket)");
    let ws: WebSocketLike;
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
      // Resume every reply that was interrupted, then flush the offline queue in order.
      const resumed: string[] = [];
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
        const { raw, request } = this.queue.shift()!;
        ws.send(raw);
        if (request) request.sent = true;
      }
      this.emit("queue", this.queue.length);
      if (this.options.pingInterval) {
        this.pinger = setInterval(() => this.ping().catch(() => {}), this.options.pingInterval);
      }
      this.emit("connected", { url: this.options.url, reconnects: this.reconnectCount, resumed });
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      let frame: Envelope;
      try {
        frame = JSON.parse(String(event.data));
      } catch {
        return;
      }
      if (frame && typeof frame === "object") this.dispatch(frame);
    };
    ws.onerror = () => {
      /* onclose follows */
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

  private delay(attempt: number): number {
    const { reconnectDelay, reconnectDecay, reconnectDelayMax, jitter } = this.options;
    const base = Math.min(reconnectDelay * Math.pow(reconnectDecay, attempt), reconnectDelayMax);
    return Math.max(0, base * (1 + (Math.random() * 2 - 1) * jitter));
  }

  private scheduleReconnect(): void {
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

  private giveUp(attempts: number): void {
    this.setState(ConnectionState.CLOSED);
    this.failAll(new ConnectionLostError("could not reconnect"));
    this.attempts = 0;
    this.emit("reconnect_failed", { attempts });
  }

  /** The connection dropped: keep what can be resumed, fail the rest. */
  private interrupt(): void {
    for (const { reject } of this.pongs.values()) reject(new ConnectionLostError("the connection dropped before the PONG"));
    this.pongs.clear();
    this.resumes.clear();
    for (const request of [...this.requests.values()]) {
      if (!request.sent) continue; // still queued: goes out after the reconnect
      const resumable =
        this.options.resume && request.messageId !== undefined && !request.ended && this.seqs.has(request.messageId);
      if (resumable) {
        request.hooks.onInterrupted?.();
      } else {
        this.fail(request, new ConnectionLostError());
      }
    }
    if (!this.options.resume) this.seqs.clear();
  }

  private failAll(err: Error): void {
    for (const { reject } of this.pongs.values()) reject(err);
    this.pongs.clear();
    this.resumes.clear();
    this.seqs.clear();
    for (const request of [...this.requests.values()]) if (request.sent) this.fail(request, err);
  }

  private fail(request: Pending, err: unknown): void {
    request.rejectEnd(err);
    request.rejectResult(err);
    this.forget(request);
  }

  private forget(request: Pending): void {
    this.requests.delete(request.id);
    if (request.messageId && this.byMessage.get(request.messageId) === request) this.byMessage.delete(request.messageId);
  }

  private remember(messageId: string, seq: number): void {
    this.endedSeqs.set(messageId, seq);
    if (this.endedSeqs.size > ENDED_MEMORY) this.endedSeqs.delete(this.endedSeqs.keys().next().value as string);
  }

  private dispatch(frame: Envelope): void {
    const type = frame.type;
    const data = (frame.data ?? {}) as Record<string, unknown>;
    const meta = frame.metadata ?? {};
    const messageId = typeof data.messageId === "string" ? data.messageId : undefined;
    const seq = typeof data.seq === "number" ? data.seq : undefined;

    // The resume cursor: an event at or below the last seq seen was already presented.
    if (messageId !== undefined && seq !== undefined) {
      const ended = this.endedSeqs.get(messageId);
      const last = ended ?? this.seqs.get(messageId);
      if (last !== undefined && seq <= last) {
        this.log("dropped a replayed event", type, messageId, seq);
        return;
      }
      if (ended !== undefined) this.endedSeqs.set(messageId, seq);
      else if (type === EventType.AI_MESSAGE_END) {
        this.seqs.delete(messageId);
        this.remember(messageId, seq);
      } else this.seqs.set(messageId, seq);
    } else if (type === EventType.AI_MESSAGE_END && messageId !== undefined) {
      this.seqs.delete(messageId);
    }
    if (type === EventType.AI_MESSAGE_END && messageId !== undefined) {
      for (const [id, m] of this.resumes) if (m === messageId) this.resumes.delete(id);
    }

    const requestId = (meta.requestId as string | undefined) ?? (type === EventType.ERROR ? (data.requestId as string | undefined) : undefined);

    // A RESUME the client sent by itself failed (NOT_FOUND: expired, or unknown to this server).
    // An ERROR with a seq is the resumed run's own failure (it echoes the RESUME's id too).
    if (type === EventType.ERROR && seq === undefined && requestId !== undefined && this.resumes.has(requestId)) {
      const lost = this.resumes.get(requestId)!;
      this.resumes.delete(requestId);
      this.seqs.delete(lost);
      this.emit("*", frame);
      this.emit(EventType.ERROR, data as unknown as ErrorData, frame);
      const request = this.byMessage.get(lost);
      if (request) this.fail(request, new ConnectionLostError("the reply could not be resumed", { cause: new RemoteError(data as unknown as ErrorData) }));
      return;
    }

    this.emit("*", frame);
    this.emit(type as keyof ClientEventMap, data as never, frame);

    if (type === EventType.PONG) {
      const pong = this.pongs.get(data.timestamp as number);
      if (pong) {
        this.pongs.delete(data.timestamp as number);
        const rtt = nowMs() - pong.t0;
        this.rtt = rtt;
        pong.resolve(rtt);
        this.emit("rtt", rtt);
      }
      return;
    }

    let request = messageId !== undefined ? this.byMessage.get(messageId) : undefined;
    if (!request && requestId !== undefined) request = this.requests.get(requestId);
    if (!request) return;
    const hooks = request.hooks;
    switch (type) {
      case EventType.AI_THINKING:
      case EventType.FOLLOW_UP_QUESTIONS:
        break; // informational: not an answer that settles the request
      case EventType.AI_MESSAGE_START: {
        request.messageId = messageId;
        if (messageId !== undefined) this.byMessage.set(messageId, request);
        hooks.onStart?.(data as unknown as MessageStartData);
        break;
      }
      case EventType.AI_MESSAGE_CHUNK: {
        const text = String(data.content ?? "");
        request.chunks.push(text);
        hooks.onChunk?.(text, request.chunks.join(""), data as unknown as MessageChunkData);
        break;
      }
      case EventType.AI_REASONING_CHUNK: {
        const text = String(data.content ?? "");
        request.reasoning.push(text);
        hooks.onReasoning?.(text, request.reasoning.join(""), data as unknown as ReasoningChunkData);
        break;
      }
      case EventType.ERROR: {
        const error = new RemoteError(data as unknown as ErrorData);
        const { autoRetry, maxRetries } = this.options;
        if (autoRetry && error.retryable && request.chunks.length === 0 && request.retries < maxRetries && request.type !== EventType.RESUME) {
          request.retries += 1;
          request.retrying = request.messageId !== undefined;
          const wait = error.retryAfter ?? this.delay(request.retries - 1);
          const target = request;
          setTimeout(() => {
            if (!this.requests.has(target.id)) return;
            if (target.messageId && this.byMessage.get(target.messageId) === target) this.byMessage.delete(target.messageId);
            target.messageId = undefined;
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
        if (request.messageId === undefined) this.forget(request);
        break;
      }
      case EventType.AI_MESSAGE_END: {
        const end = data as unknown as MessageEndData;
        if (request.retrying) {
          request.retrying = false;
          if (request.messageId && this.byMessage.get(request.messageId) === request) this.byMessage.delete(request.messageId);
          return;
        }
        request.ended = true;
        request.endData = end;
        request.resolveEnd(end);
        if (request.type === EventType.GENERATE_OBJECTIVE && end.stopReason === "complete") break; // OBJECTIVE_GENERATED follows
        request.rejectResult(new GenerationStoppedError(end.stopReason));
        this.forget(request);
        break;
      }
      default: // OBJECTIVE_GENERATED, OBJECTIVE_UPDATED, application replies
        request.resolveResult(data);
        this.forget(request);
    }
  }

  private sendRaw(raw: string, request?: Pending): void {
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
  send(type: string, data: unknown = {}, id: string = newId("req")): string {
    this.sendRaw(JSON.stringify({ id, type, timestamp: Date.now(), data }));
    return id;
  }

  private request(type: string, data: unknown, hooks: ReplyHooks = {}, id = newId("req")): Pending {
    const raw = JSON.stringify({ id, type, timestamp: Date.now(), data });
    const request = {
      id, type, raw, hooks, chunks: [], reasoning: [], retries: 0, retrying: false, sent: false, ended: false,
    } as unknown as Pending;
    request.done = new Promise<MessageEndData>((resolve, reject) => {
      request.resolveEnd = resolve;
      request.rejectEnd = reject;
    });
    request.result = new Promise<unknown>((resolve, reject) => {
      request.resolveResult = resolve;
      request.rejectResult = reject;
    });
    // Callers may await only one of the two: neither may surface as an unhandled rejection.
    request.done.catch(() => {});
    request.result.catch(() => {});
    this.requests.set(id, request);
    try {
      this.sendRaw(raw, request);
    } catch (err) {
      this.requests.delete(id);
      throw err;
    }
    return request;
  }

  private reply(request: Pending): Reply {
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
      },
    };
  }

  /** Send USER_MESSAGE; returns the streamed Reply. Throws QueueFullError. */
  sendMessage(content: string, options: SendMessageOptions = {}): Reply {
    const { context, conversationId, ...hooks } = options;
    const data: UserMessageData = { content };
    if (context !== undefined) data.context = context;
    if (conversationId) data.conversationId = conversationId;
    return this.reply(this.request(EventType.USER_MESSAGE, data, hooks));
  }

  /** Send GENERATE_OBJECTIVE and stream it; `objective` resolves with the Objective. */
  startObjective(prompt: string, options: GenerateObjectiveOptions = {}): ObjectiveRun {
    const { difficulty, category, ...hooks } = options;
    const data: GenerateObjectiveData = { prompt };
    if (difficulty) data.difficulty = difficulty;
    if (category) data.category = category;
    const request = this.request(EventType.GENERATE_OBJECTIVE, data, hooks);
    const objective = request.result.then((d) => (d as { objective: Objective }).objective);
    objective.catch(() => {});
    return Object.assign(this.reply(request), { objective });
  }

  /** Send GENERATE_OBJECTIVE; resolves with the Objective (rejects if it did not complete). */
  generateObjective(prompt: string, options: GenerateObjectiveOptions = {}): Promise<Objective> {
    return this.startObjective(prompt, options).objective;
  }

  /** Send UPDATE_OBJECTIVE; resolves with the updated Objective, rejects with RemoteError. */
  async updateObjective(objectiveId: string, updates: ObjectiveUpdates): Promise<Objective> {
    const request = this.request(EventType.UPDATE_OBJECTIVE, { objectiveId, updates });
    return ((await request.result) as { objective: Objective }).objective;
  }

  /** Send an application frame and resolve with the data of the first event answering it. */
  async call<T = unknown>(type: string, data: unknown = {}): Promise<T> {
    return (await this.request(type, data).result) as T;
  }

  /**
   * Follow a message by id (after a page reload, in a second tab...): RESUME {messageId,
   * lastSeq}; the Reply presents the events after lastSeq (all of them when absent).
   */
  resume(messageId: string, lastSeq?: number, hooks: ReplyHooks = {}): Reply {
    const data = lastSeq === undefined ? { messageId } : { messageId, lastSeq };
    if (lastSeq !== undefined) this.seqs.set(messageId, lastSeq);
    else this.seqs.delete(messageId);
    this.endedSeqs.delete(messageId);
    const request = this.request(EventType.RESUME, data, hooks);
    request.messageId = messageId;
    this.byMessage.set(messageId, request);
    return this.reply(request);
  }

  /** Stop one generation (message id, or the request id that started it), or all of them. */
  stopGeneration(messageId?: string): string {
    if (messageId !== undefined) messageId = this.requests.get(messageId)?.messageId ?? messageId;
    return this.send(EventType.STOP_GENERATION, messageId ? { messageId } : {});
  }

  /** PING the server; resolves with the round-trip time in ms (also kept in `rtt`). */
  ping(): Promise<number> {
    let stamp = Date.now();
    while (this.pongs.has(stamp)) stamp += 1;
    return new Promise<number>((resolve, reject) => {
      this.pongs.set(stamp, { resolve, reject, t0: nowMs() });
      try {
        this.send(EventType.PING, { timestamp: stamp });
      } catch (err) {
        this.pongs.delete(stamp);
        reject(err);
      }
    });
  }
}

function nowMs(): number {
  return typeof performance !== "undefined" ? performance.now() : Date.now();
}
