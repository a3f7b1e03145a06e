// The seed's useChatStream: the messages of a chat, streamed in as they come.
//
// Each reply is followed through the client's per-request callbacks, so two chats on one
// connection never mix their chunks, and a reply interrupted by a dropped connection is
// resumed by the client and keeps filling the same message.

import { useCallback, useEffect, useRef, useState, useSyncExternalStore } from "react";
import type { Reply, SendMessageOptions } from "../client.js";
import type { ChatMessage, ChatStore } from "./chatStore.js";
import { retain, useStreamcoreClient } from "./context.js";

export interface UseChatStreamOptions {
  /** Keep messages in this store (its current conversation), else in component state. */
  store?: ChatStore;
  /** Sent as `conversationId` (default: the store's current conversation, if any). */
  conversationId?: string;
  /** Messages to start with (component state only). */
  initialMessages?: ChatMessage[];
  /** Called once per finished reply (complete, stopped or failed). */
  onFinish?: (message: ChatMessage) => void;
}

export interface UseChatStream {
  messages: ChatMessage[];
  /** Sent, no reply text yet. */
  isAIThinking: boolean;
  /** A reply is streaming. */
  isAIStreaming: boolean;
  /** The last error (RemoteError, ConnectionLostError, QueueFullError...), cleared by the next send. */
  error: Error | null;
  sendUserMessage: (content: string, options?: Pick<SendMessageOptions, "context">) => void;
  stopCurrentStreaming: () => void;
  clearMessages: () => void;
}

let seq = 0;
const localId = (kind: string) => `${kind}-${Date.now().toString(36)}-${(++seq).toString(36)}`;

const EMPTY: ChatMessage[] = [];

export function useChatStream(options: UseChatStreamOptions = {}): UseChatStream {
  const client = useStreamcoreClient();
  useEffect(() => retain(client), [client]);
  const { store } = options;

  // Messages live in the store's current conversation, or in this component.
  const [local, setLocal] = useState<ChatMessage[]>(options.initialMessages ?? EMPTY);
  const noStore = useCallback(() => () => {}, []);
  const storeMessages = useSyncExternalStore(
    store ? store.subscribe : noStore,
    () => (store ? store.getState().getCurrentConversation()?.messages ?? EMPTY : EMPTY),
    () => EMPTY,
  );
  const messages = store ? storeMessages : local;

  const optionsRef = useRef(options);
  optionsRef.current = options;
  const current = useRef<Reply | null>(null);
  const [phase, setPhase] = useState<"idle" | "thinking" | "streaming">("idle");
  const [error, setError] = useState<Error | null>(null);

  const sendUserMessage = useCallback(
    (content: string, sendOptions: Pick<SendMessageOptions, "context"> = {}) => {
      const opts = optionsRef.current;
      let conversationId = opts.conversationId;
      let update: (fn: (m: ChatMessage[]) => ChatMessage[]) => void;
      if (opts.store) {
        const state = opts.store.getState();
        const conv = conversationId ?? state.currentConversationId ?? state.createConversation(content.slice(0, 40));
        conversationId = conv;
        update = (fn) => opts.store!.getState().setMessages(conv, fn);
      } else {
        update = setLocal;
      }
      const userMsg: ChatMessage = { id: localId("user"), role: "user", content, timestamp: Date.now() };
      const aiId = localId("ai");
      const patch = (p: Partial<ChatMessage>) => update((ms) => ms.map((m) => (m.id === aiId ? { ...m, ...p } : m)));
      setError(null);
      let reply: Reply;
      try {
        reply = client.sendMessage(content, {
          ...sendOptions,
          conversationId,
          onStart: (d) => {
            setPhase("streaming");
            patch({ messageId: d.messageId });
          },
          onChunk: (_t, all) => {
            setPhase("streaming");
            patch({ content: all, isInterrupted: false });
          },
          onReasoning: (_t, all) => patch({ reasoning: all, isInterrupted: false }),
          onInterrupted: () => patch({ isInterrupted: true }),
        });
      } catch (err) {
        setError(err as Error);
        update((ms) => [...ms, userMsg]);
        return;
      }
      current.current = reply;
      setPhase("thinking");
      update((ms) => [
        ...ms,
        userMsg,
        { id: aiId, role: "assistant", content: "", timestamp: Date.now(), isStreaming: true },
      ]);
      const finish = (p: Partial<ChatMessage>) => {
        const text = reply.text();
        const reasoning = reply.reasoning();
        const final: Partial<ChatMessage> = { isStreaming: false, isInterrupted: false, content: text, ...p };
        if (reasoning) final.reasoning = reasoning;
        patch(final);
        if (current.current === reply) {
          current.current = null;
          setPhase("idle");
        }
        optionsRef.current.onFinish?.({
          id: aiId, role: "assistant", timestamp: Date.now(), ...final, content: final.content ?? text,
        } as ChatMessage);
      };
      reply.done.then(
        (end) => finish({ content: end.content ?? reply.text(), stopReason: end.stopReason, messageId: end.messageId }),
        (err: Error & { code?: string }) => {
          setError(err);
          finish({ error: err.message, stopReason: err.code ?? err.name });
        },
      );
    },
    [client],
  );

  const stopCurrentStreaming = useCallback(() => {
    current.current?.stop();
  }, []);

  const clearMessages = useCallback(() => {
    const opts = optionsRef.current;
    const state = opts.store?.getState();
    if (state?.currentConversationId) state.setMessages(state.currentConversationId, () => []);
    else setLocal([]);
  }, []);

  return {
    messages,
    isAIThinking: phase === "thinking",
    isAIStreaming: phase === "streaming",
    error,
    sendUserMessage,
    stopCurrentStreaming,
    clearMessages,
  };
}
