// streamcore-client: the typed client of the streamcore WebSocket protocol.
export * from "./types.js";
export * from "./client.js";
export { Emitter } from "./events.js";
export { ERROR_CODES, STOP_REASONS, CLIENT_EVENT_TYPES, SERVER_EVENT_TYPES } from "./schema.generated.js";
