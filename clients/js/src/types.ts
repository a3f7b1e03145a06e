// The wire protocol of docs/SPEC.md as TypeScript types (the seed's services/websocket/types.ts).
//
// Field names and optionality follow the server's msgspec Structs exactly: src/drift-check.ts
// makes the compiler compare these hand-written types with src/schema.generated.ts, which is
// generated from streamcore/protocol.py. Types here are narrower where the spec is (stop
// reasons, error codes, the objective).

import { ERROR_CODES, STOP_REASONS } from "./schema.generated.js";

/** Envelope `type` values, both directions (the seed's WSEventType). */
export const EventType = Object.freeze({
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
  INDEXING_PROGRESS: "INDEXING_PROGRESS",
} as const);
export type EventType = (typeof EventType)[keyof typeof EventType];
/** The seed's name for the same constants. */
export const WSEventType = EventType;

export type ErrorCode = keyof typeof ERROR_CODES;
export type StopReason = (typeof STOP_REASONS)[number];

/** Every frame, both directions. */
export interface Envelope<T extends string = string, D = unknown> {
  id: string;
  type: T;
  timestamp: number;
  data: D;
  metadata?: EnvelopeMetadata;
}

export interface EnvelopeMetadata {
  /** The `id` of the client frame that caused this event. */
  requestId?: string;
  userId?: string;
  sessionId?: string;
  [key: string]: unknown;
}

// --- client -> server -----------------------------------------------------------------

export interface UserMessageData {
  content: string;
  /** Application data about the user's situation (never the operator's instructions). */
  context?: unknown;
  /** The conversation whose history the reply continues. */
  conversationId?: string;
}

export interface GenerateObjectiveData {
  prompt: string;
  difficulty?: string;
  category?: string;
}

export interface StopGenerationData {
  /** A message id (or the request id that started it); absent: every stream of the connection. */
  messageId?: string;
}

export interface UpdateObjectiveData {
  objectiveId: string;
  updates: ObjectiveUpdates;
}

export interface PingData {
  timestamp: number;
}

export interface ResumeData {
  messageId: string;
  /** Replay the events after this seq (absent: all of them, from AI_MESSAGE_START). */
  lastSeq?: number;
}

// --- server -> client -----------------------------------------------------------------

export interface ThinkingData {
  timestamp: number;
}

export interface MessageStartData {
  messageId: string;
  seq: number;
  model?: string;
}

export interface MessageChunkData {
  messageId: string;
  /** Never empty. */
  content: string;
  /** Counts up from 0 within the message (replayed text may be merged: do not rely on it across a resume). */
  index: number;
  seq: number;
}

export interface ReasoningChunkData {
  messageId: string;
  content: string;
  seq: number;
}

export interface Usage {
  promptTokens?: number;
  completionTokens?: number;
  totalTokens?: number;
  reasoningTokens?: number;
}

export interface MessageEndData {
  messageId: string;
  /** True only for stopReason "complete". */
  isComplete: boolean;
  stopReason: StopReason;
  seq: number;
  /** The whole text of the message. */
  content?: string;
  usage?: Usage;
}

export interface ObjectiveStep {
  id: string;
  title: string;
  description: string;
  completed: boolean;
}

export interface Objective {
  id: string;
  title: string;
  description: string;
  category: string;
  difficulty: string;
  steps: ObjectiveStep[];
  createdAt: number;
  updatedAt: number;
}

export interface ObjectiveUpdates {
  title?: string;
  description?: string;
  category?: string;
  difficulty?: string;
  /** Merged by id; `{id, remove: true}` deletes a step; an entry without id appends one. */
  steps?: Array<Partial<Omit<ObjectiveStep, "id">> & { id?: string; remove?: boolean }>;
  [key: string]: unknown;
}

export interface ObjectiveGeneratedData {
  objective: Objective;
  /** Milliseconds. */
  generationTime: number;
  /** The stream that produced it. */
  messageId?: string;
  seq?: number;
}

export interface ObjectiveUpdatedData {
  objective: Objective;
}

export interface ErrorData {
  code: ErrorCode | (string & {});
  message: string;
  retryable: boolean;
  requestId?: string;
  /** Milliseconds. */
  retryAfter?: number;
  messageId?: string;
  seq?: number;
}

export interface PongData {
  timestamp: number;
}

export interface FollowUpQuestionsData {
  messageId: string;
  questions: string[];
  seq?: number;
}

/** Payload of each client frame type. */
export interface ClientPayloads {
  USER_MESSAGE: UserMessageData;
  GENERATE_OBJECTIVE: GenerateObjectiveData;
  STOP_GENERATION: StopGenerationData;
  UPDATE_OBJECTIVE: UpdateObjectiveData;
  PING: PingData;
  RESUME: ResumeData;
}

/** Payload of each server event type. */
export interface ServerPayloads {
  AI_THINKING: ThinkingData;
  AI_MESSAGE_START: MessageStartData;
  AI_MESSAGE_CHUNK: MessageChunkData;
  AI_REASONING_CHUNK: ReasoningChunkData;
  AI_MESSAGE_END: MessageEndData;
  OBJECTIVE_GENERATED: ObjectiveGeneratedData;
  OBJECTIVE_UPDATED: ObjectiveUpdatedData;
  ERROR: ErrorData;
  PONG: PongData;
  FOLLOW_UP_QUESTIONS: FollowUpQuestionsData;
  /** Application-defined, broadcast (the RAG seed). */
  INDEXING_PROGRESS: unknown;
}

export type ServerEventType = keyof ServerPayloads;
export type ClientEventType = keyof ClientPayloads;
/** A server frame, discriminated on `type`. */
export type ServerFrame = { [K in ServerEventType]: Envelope<K, ServerPayloads[K]> }[ServerEventType];

// --- the client's own events ----------------------------------------------------------

export const ConnectionState = Object.freeze({
  DISCONNECTED: "disconnected",
  CONNECTING: "connecting",
  CONNECTED: "connected",
  RECONNECTING: "reconnecting",
  CLOSED: "closed",
} as const);
export type ConnectionState = (typeof ConnectionState)[keyof typeof ConnectionState];

export interface LifecyclePayloads {
  connected: { url: string; reconnects: number; resumed: string[] };
  disconnected: { code: number; reason: string };
  reconnecting: { attempt: number; delay: number };
  reconnect_failed: { attempts: number };
  state: ConnectionState;
  queue: number;
  /** Round-trip time of the last PING, ms. */
  rtt: number;
  /** A RESUME went out for an interrupted message. */
  resuming: { messageId: string; lastSeq?: number };
}

/** Everything `on()` can subscribe to: server event types, lifecycle events, "*". */
export type ClientEventMap = ServerPayloads & LifecyclePayloads & { "*": Envelope };
