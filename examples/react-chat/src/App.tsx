import { useEffect, useRef, useState, type FormEvent } from "react";
import { createChatStore, useChatStream, useWebSocket } from "streamcore-client/react";

// Conversations persist in localStorage; the current one's id travels as conversationId.
const store = createChatStore({ persist: "streamcore-react-chat" });

export function App() {
  const { connectionState, queueSize, rtt } = useWebSocket();
  const { messages, isAIThinking, isAIStreaming, error, sendUserMessage, stopCurrentStreaming } = useChatStream({ store });
  const conversations = store((s) => s.conversations);
  const currentId = store((s) => s.currentConversationId);
  const [input, setInput] = useState("");
  const list = useRef<HTMLDivElement>(null);

  useEffect(() => {
    if (!currentId) store.getState().createConversation("First chat");
  }, [currentId]);
  useEffect(() => {
    const el = list.current;
    if (el) el.scrollTop = el.scrollHeight; // follow the streaming text
  }, [messages]);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const text = input.trim();
    if (!text) return;
    setInput("");
    sendUserMessage(text);
  };

  return (
    <div className="app">
      <aside>
        <button type="button" className="new" onClick={() => store.getState().createConversation(`Chat ${Object.keys(conversations).length + 1}`)}>
          + New chat
        </button>
        <ul>
          {Object.values(conversations)
            .sort((a, b) => b.createdAt - a.createdAt)
            .map((c) => (
              <li key={c.id}>
                <button type="button" className={c.id === currentId ? "current" : ""} onClick={() => store.getState().switchConversation(c.id)}>
                  {c.title}
                </button>
              </li>
            ))}
        </ul>
      </aside>
      <main>
        <header>
          <span className={`state ${connectionState}`} data-testid="state">{connectionState}</span>
          <span>queued {queueSize}</span>
          <span>rtt {rtt === undefined ? "–" : `${Math.round(rtt)} ms`}</span>
        </header>
        <div className="messages" ref={list}>
          {messages.map((m) => (
            <div
              key={m.id}
              className={`msg ${m.role}${m.isStreaming ? " streaming" : ""}${m.isInterrupted ? " interrupted" : ""}`}
              data-done={m.role === "assistant" && !m.isStreaming ? "1" : undefined}
              data-stop-reason={m.stopReason}
            >
              {m.reasoning && (
                <details className="reasoning">
                  <summary>Reasoning</summary>
                  {m.reasoning}
                </details>
              )}
              <span className="text">{m.content}</span>
              {m.isInterrupted && <span className="meta">reconnecting…</span>}
              {m.stopReason && m.stopReason !== "complete" && <span className="meta">[{m.stopReason}]</span>}
            </div>
          ))}
          {isAIThinking && <p className="thinking">The AI is thinking…</p>}
        </div>
        <form onSubmit={submit}>
          <input value={input} onChange={(e) => setInput(e.target.value)} placeholder="Ask something…" aria-label="message" />
          <button type="submit">Send</button>
          {isAIStreaming && (
            <button type="button" className="stop" onClick={stopCurrentStreaming}>
              Stop
            </button>
          )}
        </form>
        {error && <p className="error">{error.message}</p>}
      </main>
    </div>
  );
}
