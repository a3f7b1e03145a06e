// @vitest-environment jsdom
// The React bindings (useWebSocket, useChatStream, the chat store) with React Testing Library,
// against a real `streamcore serve`.
import { StrictMode, useEffect, useState } from "react";
import { act, cleanup, render, renderHook, screen, waitFor } from "@testing-library/react";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { EventType, StreamcoreClient } from "../src/index.js";
import { StreamcoreProvider, createChatStore, useChatStream, useWebSocket, type ChatStore } from "../src/react/index.js";
import { Proxy, RecordingWebSocket, makeClient, sentFrames, startServer, withTimeout, type Server } from "./harness.js";

let server: Server;
beforeAll(async () => {
  server = await startServer({ delayMs: 15, words: 40 });
});
afterEach(() => {
  cleanup();
  localStorage.clear();
});
afterAll(async () => {
  await server?.stop();
});

const WAIT = { timeout: 15_000 };
function wrapper(client: StreamcoreClient) {
  return ({ children }: { children: React.ReactNode }) => (
    <StrictMode>
      <StreamcoreProvider client={client}>{children}</StreamcoreProvider>
    </StrictMode>
  );
}

describe("useWebSocket", () => {
  it("connects once under StrictMode, exposes state, and cleans up its subscriptions", async () => {
    const client = makeClient({ url: server.url });
    const before = RecordingWebSocket.opened;
    const ends: string[] = [];
    function Probe() {
      const { isConnected, connectionState, queueSize, on, sendMessage } = useWebSocket();
      useEffect(() => on(EventType.AI_MESSAGE_END, (d) => ends.push(d.messageId)), [on]);
      return (
        <div>
          <span data-testid="state">{connectionState}</span>
          <span data-testid="queue">{queueSize}</span>
          <button disabled={!isConnected} onClick={() => sendMessage("hello from a hook")}>send</button>
        </div>
      );
    }
    const { unmount } = render(<Probe />, { wrapper: wrapper(client) });
    await waitFor(() => expect(screen.getByTestId("state").textContent).toBe("connected"), WAIT);
    expect(RecordingWebSocket.opened - before).toBe(1); // StrictMode's double mount kept one socket
    act(() => screen.getByText("send").click());
    await waitFor(() => expect(ends).toHaveLength(1), WAIT); // one handler despite the double effect
    unmount();
    // The provider released the client: it disconnects, and the handler is gone.
    await waitFor(() => expect(client.connectionState).toBe("closed"), WAIT);
    expect(ends).toHaveLength(1);
  });

  it("has the seed's shape: generateObjective returns an id that stopGeneration stops", async () => {
    const client = makeClient({ url: server.url });
    const { result } = renderHook(() => useWebSocket(), { wrapper: wrapper(client) });
    await waitFor(() => expect(result.current.isConnected).toBe(true), WAIT);
    const ended = withTimeout(new Promise<string>((ok) => client.on(EventType.AI_MESSAGE_END, (d) => ok(d.stopReason))));
    let id = "";
    const started = withTimeout(new Promise<void>((ok) => client.on(EventType.AI_MESSAGE_START, () => ok())));
    act(() => {
      id = result.current.generateObjective("Apprendre le piano", { difficulty: "beginner" });
    });
    expect(id).toMatch(/^req-/);
    await started;
    act(() => result.current.stopGeneration(id));
    expect(await ended).toBe("user_cancelled");
    expect(typeof result.current.queueSize).toBe("number");
    expect(result.current.ws).toBe(client);
  });
});

describe("useChatStream", () => {
  it("streams a reply into messages with the thinking and streaming flags", async () => {
    const client = makeClient({ url: server.url });
    const flags = new Set<string>();
    const { result } = renderHook(
      () => {
        const chat = useChatStream();
        if (chat.isAIThinking) flags.add("thinking");
        if (chat.isAIStreaming) flags.add("streaming");
        return chat;
      },
      { wrapper: wrapper(client) },
    );
    await waitFor(() => expect(client.isConnected).toBe(true), WAIT);
    act(() => result.current.sendUserMessage("How do I learn the piano?"));
    expect(result.current.messages.map((m) => m.role)).toEqual(["user", "assistant"]);
    expect(result.current.messages[1].isStreaming).toBe(true);
    await waitFor(() => expect(result.current.messages[1].isStreaming).toBe(false), WAIT);
    const ai = result.current.messages[1];
    expect(ai.stopReason).toBe("complete");
    expect(ai.content).toContain("You asked: \u201cHow do I learn the piano?\u201d");
    expect(flags).toEqual(new Set(["thinking", "streaming"]));
    expect(result.current.isAIStreaming).toBe(false);
    expect(result.current.isAIThinking).toBe(false);
  });

  it("stops the current stream", async () => {
    const client = makeClient({ url: server.url });
    const { result } = renderHook(() => useChatStream(), { wrapper: wrapper(client) });
    await waitFor(() => expect(client.isConnected).toBe(true), WAIT);
    act(() => result.current.sendUserMessage("A long story please"));
    await waitFor(() => expect(result.current.isAIStreaming).toBe(true), WAIT);
    act(() => result.current.stopCurrentStreaming());
    await waitFor(() => expect(result.current.messages[1].isStreaming).toBe(false), WAIT);
    expect(result.current.messages[1].stopReason).toBe("user_cancelled");
  });

  it("finishes a reply once when the connection drops mid-reply (resume)", async () => {
    const p = await new Proxy(server).listen();
    try {
      const client = makeClient({ url: p.url() });
      const finished: string[] = [];
      const { result } = renderHook(() => useChatStream({ onFinish: (m) => finished.push(m.content) }), { wrapper: wrapper(client) });
      await waitFor(() => expect(client.isConnected).toBe(true), WAIT);
      let cut = false;
      const off = client.on(EventType.AI_MESSAGE_CHUNK, (d) => {
        if (!cut && d.index === 4) {
          cut = true;
          p.cut();
        }
      });
      act(() => result.current.sendUserMessage("Keep going through a drop"));
      await waitFor(() => expect(result.current.messages[1]?.isStreaming).toBe(false), WAIT);
      off();
      const reference = makeClient({ url: server.url });
      await withTimeout(reference.connect());
      const ref = await withTimeout(reference.sendMessage("Keep going through a drop").done);
      reference.disconnect();
      expect(cut).toBe(true);
      expect(result.current.messages[1].content).toBe(ref.content);
      expect(result.current.messages[1].stopReason).toBe("complete");
      expect(finished).toEqual([ref.content]);
    } finally {
      await p.close();
    }
  });

  it("keeps messages in the chat store, per conversation, and sends its id as conversationId", async () => {
    const client = makeClient({ url: server.url });
    const store: ChatStore = createChatStore({ persist: "test-chat" });
    const first = store.getState().createConversation("Piano");
    function Chat() {
      const { messages, sendUserMessage, isAIStreaming, isAIThinking } = useChatStream({ store });
      const [n, setN] = useState(0);
      return (
        <div>
          <ul>{messages.map((m) => <li key={m.id} data-role={m.role}>{m.content}</li>)}</ul>
          <span data-testid="busy">{String(isAIStreaming || isAIThinking)}</span>
          <button onClick={() => { setN(n + 1); sendUserMessage(`question ${n}`); }}>ask</button>
        </div>
      );
    }
    render(<Chat />, { wrapper: wrapper(client) });
    await waitFor(() => expect(client.isConnected).toBe(true), WAIT);
    act(() => screen.getByText("ask").click());
    await waitFor(() => expect(store.getState().conversations[first].messages[1]?.isStreaming).toBe(false), WAIT);
    const second = act(() => store.getState().createConversation("Guitar"));
    void second;
    const secondId = store.getState().currentConversationId!;
    expect(screen.queryAllByRole("listitem")).toHaveLength(0); // the new conversation is empty
    act(() => screen.getByText("ask").click());
    await waitFor(() => expect(store.getState().conversations[secondId].messages[1]?.isStreaming).toBe(false), WAIT);
    act(() => store.getState().switchConversation(first));
    expect(screen.getAllByRole("listitem")).toHaveLength(2);
    const sent = sentFrames.filter((f) => f.type === "USER_MESSAGE").slice(-2);
    expect(sent.map((f) => f.data.conversationId)).toEqual([first, secondId]);
    // Persisted: a new store with the same key reads the conversations back.
    const saved = JSON.parse(localStorage.getItem("test-chat")!);
    expect(Object.keys(saved.state.conversations).sort()).toEqual([first, secondId].sort());
    const reloaded = createChatStore({ persist: "test-chat" });
    await waitFor(() => expect(reloaded.getState().conversations[first]?.messages).toHaveLength(2), WAIT);
    expect(reloaded.getState().conversations[first].messages[1].isStreaming).toBe(false);
  });
});
