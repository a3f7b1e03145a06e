// Compile-time drift check: the hand-written wire types (types.ts) against the ones generated
// from the server's msgspec Structs (schema.generated.ts). `npm run typecheck` (part of
// `npm test` via test/drift.test.ts) fails when a field is added, removed, renamed or changes
// optionality on either side, or when a hand-written type stops being assignable to the
// server's. Not part of the build output.

import type * as G from "./schema.generated.js";
import type * as T from "./types.js";

type OptionalKeys<X> = { [K in keyof X]-?: {} extends Pick<X, K> ? K : never }[keyof X];
type RequiredKeys<X> = Exclude<keyof X, OptionalKeys<X>>;
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
/** true when A and B have the same required keys and the same optional keys, and A fits B. */
type Matches<A, B> = Same<RequiredKeys<A>, RequiredKeys<B>> extends true
  ? Same<OptionalKeys<A>, OptionalKeys<B>> extends true
    ? [A] extends [B]
      ? true
      : "not assignable"
    : ["optional keys differ", OptionalKeys<A>, OptionalKeys<B>]
  : ["required keys differ", RequiredKeys<A>, RequiredKeys<B>];

type Each<M, N> = { [K in keyof M & keyof N]: Matches<M[K], N[K]> };
type AllTrue<X> = { [K in keyof X]: X[K] extends true ? true : X[K] };

// Every event type on both sides, and each payload matching.
export const sameClientEvents: Same<keyof T.ClientPayloads, keyof G.GeneratedClientPayloads> = true;
export const sameServerEvents: Same<keyof T.ServerPayloads, keyof G.GeneratedServerPayloads> = true;
export const clientPayloads: AllTrue<Each<T.ClientPayloads, G.GeneratedClientPayloads>> = {
  USER_MESSAGE: true,
  GENERATE_OBJECTIVE: true,
  STOP_GENERATION: true,
  UPDATE_OBJECTIVE: true,
  PING: true,
  RESUME: true,
};
export const serverPayloads: AllTrue<Each<T.ServerPayloads, G.GeneratedServerPayloads>> = {
  AI_THINKING: true,
  AI_MESSAGE_START: true,
  AI_MESSAGE_CHUNK: true,
  AI_REASONING_CHUNK: true,
  AI_MESSAGE_END: true,
  OBJECTIVE_GENERATED: true,
  OBJECTIVE_UPDATED: true,
  ERROR: true,
  PONG: true,
  FOLLOW_UP_QUESTIONS: true,
  INDEXING_PROGRESS: true,
};
export const usage: Matches<T.Usage, G.Usage> = true;
// Constants the client uses at run time.
export const sameEventTypes: Same<T.EventType, G.GeneratedClientPayloads extends unknown ? keyof G.GeneratedClientPayloads | keyof G.GeneratedServerPayloads : never> = true;
