// Which StreamcoreClient the hooks use: the one of the nearest <StreamcoreProvider>, else a
// shared client configured once with configureStreamcore() (the seed's getWebSocketService).

import { createContext, useContext, useEffect, useMemo, type ReactNode } from "react";
import { StreamcoreClient, type StreamcoreOptions } from "../client.js";

const Context = createContext<StreamcoreClient | null>(null);

let shared: StreamcoreClient | null = null;
let sharedOptions: StreamcoreOptions | null = null;

/** Options of the shared client used by hooks outside any <StreamcoreProvider>. */
export function configureStreamcore(options: StreamcoreOptions): void {
  sharedOptions = options;
  if (shared && shared.options.url !== options.url) {
    shared.disconnect();
    shared = null;
  }
}

/** The shared client (created on first use; the seed's getWebSocketService). */
export function getStreamcoreClient(options?: StreamcoreOptions): StreamcoreClient {
  if (options) configureStreamcore(options);
  if (!shared) {
    if (!sharedOptions) {
      throw new Error("streamcore: call configureStreamcore({url}) or render a <StreamcoreProvider> first");
    }
    shared = new StreamcoreClient(sharedOptions);
  }
  return shared;
}

// Connections are reference-counted across the components using them. The last release
// disconnects one tick later, so React StrictMode's mount -> unmount -> mount keeps the
// socket instead of closing and reopening it.
const users = new WeakMap<StreamcoreClient, number>();
export function retain(client: StreamcoreClient): () => void {
  users.set(client, (users.get(client) ?? 0) + 1);
  if (client.connectionState === "disconnected" || client.connectionState === "closed") {
    client.connect().catch(() => {
      /* reported through connectionState and "reconnect_failed" */
    });
  }
  let released = false;
  return () => {
    if (released) return;
    released = true;
    users.set(client, (users.get(client) ?? 1) - 1);
    setTimeout(() => {
      if ((users.get(client) ?? 0) <= 0) client.disconnect();
    }, 0);
  };
}

export interface StreamcoreProviderProps {
  /** A client of your own, or options to create one. */
  client?: StreamcoreClient;
  options?: StreamcoreOptions;
  children?: ReactNode;
}

/** Gives the hooks below it one client, connected while the provider is mounted. */
export function StreamcoreProvider({ client, options, children }: StreamcoreProviderProps) {
  const url = options?.url;
  const value = useMemo(() => client ?? new StreamcoreClient(options as StreamcoreOptions), [client, url]); // eslint-disable-line react-hooks/exhaustive-deps
  useEffect(() => retain(value), [value]);
  return <Context.Provider value={value}>{children}</Context.Provider>;
}

/** The client of the nearest provider, else the shared one. */
export function useStreamcoreClient(): StreamcoreClient {
  return useContext(Context) ?? getStreamcoreClient();
}
