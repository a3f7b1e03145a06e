// Test harness: a real `streamcore serve` (demo provider) as a child process, a TCP proxy
// that can cut every connection the way a network drop does, and bounded waits.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, writeFileSync, existsSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import WebSocket from "ws";
import { StreamcoreClient, type StreamcoreOptions, type WebSocketConstructor } from "../src/index.js";

export const ROOT = resolve(__dirname, "../../..");
/** Upper bound of any single network wait, ms. */
export const TIMEOUT = 15_000;

function streamcoreBin(): string {
  if (process.env.STREAMCORE_BIN) return process.env.STREAMCORE_BIN;
  const venv = join(ROOT, ".venv/bin/streamcore");
  return existsSync(venv) ? venv : "streamcore";
}

export interface ServerOptions {
  delayMs?: number;
  words?: number;
  reasoning?: boolean;
  /** Extra TOML appended to the config file. */
  toml?: string;
}

export interface Server {
  url: string;
  port: number;
  stop(): Promise<void>;
}

/** Start `streamcore serve --port 0` and wait for its "listening on ws://..." line. */
export async function startServer(opts: ServerOptions = {}): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), "streamcore-js-"));
  const config = join(dir, "streamcore.toml");
  const options = [`delay_ms = ${opts.delayMs ?? 10}`, `words = ${opts.words ?? 30}`];
  if (opts.reasoning) options.push("reasoning = true");
  writeFileSync(
    config,
    `[server]\nhost = "127.0.0.1"\nport = 0\n\n[provider]\nname = "demo"\noptions = { ${options.join(", ")} }\n\n${opts.toml ?? ""}\n`,
  );
  const env = { ...process.env };
  delete env.STREAMCORE_PROVIDER;
  delete env.STREAMCORE_CONFIG;
  const child = spawn(streamcoreBin(), ["serve", "--config", config, "--port", "0", "--log-format", "json", "--log-level", "warning"], {
    stdio: ["ignore", "pipe", "pipe"],
    env,
  });
  let stderr = "";
  child.stderr!.on("data", (b) => (stderr += b.toString()));
  const url = await withTimeout(
    new Promise<string>((resolveUrl, reject) => {
      let out = "";
      child.stdout!.on("data", (b) => {
        out += b.toString();
        const m = /listening on (ws:\/\/\S+)/.exec(out);
        if (m) resolveUrl(m[1]);
      });
      child.on("exit", (code) => reject(new Error(`streamcore serve exited with ${code}: ${stderr}`)));
      child.on("error", reject);
    }),
    20_000,
    "streamcore serve to listen",
  );
  return { url, port: Number(new URL(url).port), stop: () => stopChild(child) };
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return Promise.resolve();
  return withTimeout(
    new Promise<void>((done) => {
      child.once("exit", () => done());
      child.kill("SIGTERM");
    }),
    20_000,
    "streamcore serve to exit",
  ).catch(() => {
    child.kill("SIGKILL");
  });
}

/** A TCP proxy in front of a server: cut() drops every connection like a network failure. */
export class Proxy {
  private server = net.createServer((socket) => this.accept(socket));
  private sockets = new Set<net.Socket>();
  private refusing = false;
  port = 0;
  connections = 0;
  constructor(public target: { port: number }) {}

  async listen(): Promise<this> {
    await new Promise<void>((ok) => this.server.listen(0, "127.0.0.1", ok));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  url(path = "/ws"): string {
    return `ws://127.0.0.1:${this.port}${path}`;
  }

  private accept(socket: net.Socket): void {
    if (this.refusing) {
      socket.destroy();
      return;
    }
    this.connections += 1;
    const upstream = net.connect(this.target.port, "127.0.0.1");
    this.sockets.add(socket).add(upstream);
    socket.pipe(upstream).pipe(socket);
    const drop = () => {
      socket.destroy();
      upstream.destroy();
      this.sockets.delete(socket);
      this.sockets.delete(upstream);
    };
    socket.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
  }

  /** Destroy every open connection (both sides see the TCP connection reset). */
  cut(): void {
    for (const s of this.sockets) s.resetAndDestroy ? s.resetAndDestroy() : s.destroy();
    this.sockets.clear();
  }

  /** Refuse new connections (each accepted one is closed at once) until allow(). */
  refuse(): void {
    this.refusing = true;
  }
  allow(): void {
    this.refusing = false;
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((ok) => this.server.close(() => ok()));
  }
}

/** Frames the client sent, in order (parsed). */
export const sentFrames: Array<{ type: string; id?: string; data: Record<string, unknown> }> = [];

/** The `ws` WebSocket, recording every frame sent (tests inspect `sentFrames`). */
export class RecordingWebSocket extends WebSocket {
  static opened = 0;
  constructor(url: string, protocols?: string | string[]) {
    super(url, protocols);
    RecordingWebSocket.opened += 1;
  }
  override send(data: unknown, ...rest: unknown[]): void {
    try {
      sentFrames.push(JSON.parse(String(data)));
    } catch {
      /* not JSON */
    }
    (super.send as (...a: unknown[]) => void)(data, ...rest);
  }
}

export function makeClient(options: Partial<StreamcoreOptions> & { url: string }): StreamcoreClient {
  return new StreamcoreClient({
    WebSocket: RecordingWebSocket as unknown as WebSocketConstructor,
    reconnectDelay: 50,
    reconnectDelayMax: 500,
    pingInterval: 0,
    timeout: 5000,
    ...options,
  });
}

/** `promise`, or a rejection naming what did not happen within `ms`. */
export function withTimeout<T>(promise: Promise<T>, ms: number = TIMEOUT, what = "the event"): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** The next `event` of `client` (bounded). */
export function next<K extends Parameters<StreamcoreClient["on"]>[0]>(
  client: StreamcoreClient,
  event: K,
  predicate: (data: any) => boolean = () => true,
): Promise<any> {
  let off: () => void = () => {};
  return withTimeout(
    new Promise((ok) => {
      off = client.on(event, (data: unknown) => {
        if (predicate(data)) {
          off();
          ok(data);
        }
      });
    }),
    TIMEOUT,
    String(event),
  ).finally(() => off());
}
