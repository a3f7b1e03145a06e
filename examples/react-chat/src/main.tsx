import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { StreamcoreClient } from "streamcore-client";
import { StreamcoreProvider } from "streamcore-client/react";
import { App } from "./App";
import "./style.css";

// ?ws=ws://host:port/ws picks the server; default: /ws of this origin (proxied by `vite`).
const params = new URLSearchParams(location.search);
const url = params.get("ws") ?? `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const client = new StreamcoreClient({ url, reconnectDelay: 300, reconnectAttempts: 50, pingInterval: 10_000 });
(window as unknown as { streamcore: StreamcoreClient }).streamcore = client;

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <StreamcoreProvider client={client}>
      <App />
    </StreamcoreProvider>
  </StrictMode>,
);
