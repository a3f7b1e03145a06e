// The seed's useWebSocket: connection state, queue size and the protocol's calls.

import { useCallback, useEffect, useMemo, useSyncExternalStore } from "react";
import type { GenerateObjectiveOptions, SendMessageOptions, StreamcoreClient } from "../client.js";
import type { ClientEventMap, ConnectionState, Envelope, ObjectiveUpdates, Objective } from "../types.js";
import { retain, useStreamcoreClient } from "./context.js";

export interface UseWebSocket {
  isConnected: boolean;
  connectionState: ConnectionState;
  /** Frames waiting for a connection. */
  queueSize: number;
  /** Round-trip time of the last PING, ms. */
  rtt: number | undefined;
  /** Send USER_MESSAGE; returns the request id (stop it with stopGeneration(id)). */
  sendMessage: (content: string, options?: SendMessageOptions) => string;
  /** Subscribe to an event; returns the unsubscribe function (return it from useEffect). */
  on: <K extends keyof ClientEventMap>(event: K, handler: (data: ClientEventMap[K], frame?: Envelope) => void) => () => void;
  /** Send GENERATE_OBJECTIVE; returns the request id. The objective arrives as OBJECTIVE_GENERATED. */
  generateObjective: (prompt: string, options?: GenerateObjectiveOptions) => string;
  /** Stop one generation (request or message id), or every one of the connection. */
  stopGeneration: (id?: string) => void;
  updateObjective: (objectiveId: string, updates: ObjectiveUpdates) => Promise<Objective>;
  /** The client itself (the seed's `ws`). */
  ws: StreamcoreClient;
}

export function useWebSocket(): UseWebSocket {
  const client = useStreamcoreClient();
  useEffect(() => retain(client), [client]);

  const subscribe = useCallback(
    (notify: () => void) => {
      const offs = [client.on("state", notify), client.on("queue", notify), client.on("rtt", notify)];
      return () => offs.forEach((off) => off());
    },
    [client],
  );
  const connectionState = useSyncExternalStore(subscribe, () => client.connectionState, () => client.connectionState);
  const queueSize = useSyncExternalStore(subscribe, () => client.queueSize, () => client.queueSize);
  const rtt = useSyncExternalStore(subscribe, () => client.rtt, () => client.rtt);

  return useMemo<UseWebSocket>(
    () => ({
      isConnected: connectionState === "connected",
      connectionState,
      queueSize,
      rtt,
      sendMessage: (content, options) => client.sendMessage(content, options).requestId,
      on: (event, handler) => client.on(event, handler),
      generateObjective: (prompt, options) => client.startObjective(prompt, options).requestId,
      stopGeneration: (id) => {
        client.stopGeneration(id);
      },
      updateObjective: (objectiveId, updates) => client.updateObjective(objectiveId, updates),
      ws: client,
    }),
    [client, connectionState, queueSize, rtt],
  );
}
