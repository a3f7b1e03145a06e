// The seed's chat-store: conversations and their messages in a Zustand store, optionally
// persisted to localStorage. The current conversation's id travels as USER_MESSAGE
// `conversationId`, so the server continues that conversation's history.

import { create, type StoreApi, type UseBoundStore } from "zustand";
import { createJSONStorage, persist } from "zustand/middleware";

export interface ChatMessage {
  id: string;
  role: "user" | "assistant";
  content: string;
  /** The model's reasoning (AI_REASONING_CHUNK), shown apart from the answer. */
  reasoning?: string;
  /** ms since the epoch (a number, so it survives JSON persistence). */
  timestamp: number;
  /** The server's message id, once known. */
  messageId?: string;
  isStreaming?: boolean;
  /** The connection dropped mid-reply; the client is resuming it. */
  isInterrupted?: boolean;
  stopReason?: string;
  error?: string;
}

export interface Conversation {
  id: string;
  title: string;
  messages: ChatMessage[];
  createdAt: number;
  updatedAt: number;
}

export interface ChatState {
  conversations: Record<string, Conversation>;
  currentConversationId: string | null;
  /** Create a conversation, make it current, return its id. */
  createConversation: (title?: string) => string;
  switchConversation: (id: string) => void;
  deleteConversation: (id: string) => void;
  renameConversation: (id: string, title: string) => void;
  addMessage: (conversationId: string, message: ChatMessage) => void;
  updateMessage: (conversationId: string, messageId: string, patch: Partial<ChatMessage>) => void;
  /** Replace a conversation's messages with the result of `update`. */
  setMessages: (conversationId: string, update: (messages: ChatMessage[]) => ChatMessage[]) => void;
  getCurrentConversation: () => Conversation | null;
}

export interface ChatStoreOptions {
  /** localStorage key to persist under (false or absent: in memory only). */
  persist?: string | false;
  /** Make conversation ids (default: crypto.randomUUID()). */
  newId?: () => string;
}

export type ChatStore = UseBoundStore<StoreApi<ChatState>>;

function uuid(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  return c?.randomUUID ? c.randomUUID() : `c-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/** Create a chat store (a Zustand hook: `const s = useStore()`; `useStore.getState()`). */
export function createChatStore(options: ChatStoreOptions = {}): ChatStore {
  const newId = options.newId ?? uuid;
  const init = (set: StoreApi<ChatState>["setState"], get: StoreApi<ChatState>["getState"]): ChatState => {
    const touch = (id: string, change: (c: Conversation) => Partial<Conversation>) =>
      set((s) => {
        const conv = s.conversations[id];
        if (!conv) return s;
        return { conversations: { ...s.conversations, [id]: { ...conv, ...change(conv), updatedAt: Date.now() } } };
      });
    return {
      conversations: {},
      currentConversationId: null,
      createConversation: (title = "New conversation") => {
        const id = newId();
        const now = Date.now();
        set((s) => ({
          conversations: { ...s.conversations, [id]: { id, title, messages: [], createdAt: now, updatedAt: now } },
          currentConversationId: id,
        }));
        return id;
      },
      switchConversation: (id) => {
        if (get().conversations[id]) set({ currentConversationId: id });
      },
      deleteConversation: (id) =>
        set((s) => {
          const { [id]: _gone, ...rest } = s.conversations;
          return { conversations: rest, currentConversationId: s.currentConversationId === id ? null : s.currentConversationId };
        }),
      renameConversation: (id, title) => touch(id, () => ({ title })),
      addMessage: (id, message) => touch(id, (c) => ({ messages: [...c.messages, message] })),
      updateMessage: (id, messageId, patch) =>
        touch(id, (c) => ({ messages: c.messages.map((m) => (m.id === messageId ? { ...m, ...patch } : m)) })),
      setMessages: (id, update) => touch(id, (c) => ({ messages: update(c.messages) })),
      getCurrentConversation: () => {
        const s = get();
        return s.currentConversationId ? s.conversations[s.currentConversationId] ?? null : null;
      },
    };
  };
  if (!options.persist) return create<ChatState>()(init);
  return create<ChatState>()(
    persist(init, {
      name: options.persist,
      storage: createJSONStorage(() => localStorage),
      // A reply cannot still be streaming after a reload: keep its text, drop the flag.
      partialize: (s) => ({
        currentConversationId: s.currentConversationId,
        conversations: Object.fromEntries(
          Object.entries(s.conversations).map(([k, c]) => [
            k,
            { ...c, messages: c.messages.map((m) => (m.isStreaming ? { ...m, isStreaming: false, isInterrupted: false } : m)) },
          ]),
        ),
      }) as unknown as ChatState,
    }),
  );
}

let defaultStore: ChatStore | null = null;
/** The app-wide chat store (persisted under "streamcore-chat" when localStorage exists). */
export function getChatStore(): ChatStore {
  if (!defaultStore) {
    const hasStorage = typeof localStorage !== "undefined";
    defaultStore = createChatStore({ persist: hasStorage ? "streamcore-chat" : false });
  }
  return defaultStore;
}

/** The seed's `useChatStore()`: the app-wide store, or a selection of it. */
export function useChatStore(): ChatState;
export function useChatStore<T>(selector: (s: ChatState) => T): T;
export function useChatStore<T>(selector?: (s: ChatState) => T): T | ChatState {
  const store = getChatStore();
  return selector ? store(selector) : store();
}
