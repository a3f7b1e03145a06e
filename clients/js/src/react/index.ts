// streamcore-client/react: the seed's hooks and chat store.
export { StreamcoreProvider, useStreamcoreClient, configureStreamcore, getStreamcoreClient, type StreamcoreProviderProps } from "./context.js";
export { useWebSocket, type UseWebSocket } from "./useWebSocket.js";
export { useChatStream, type UseChatStream, type UseChatStreamOptions } from "./useChatStream.js";
export {
  createChatStore,
  getChatStore,
  useChatStore,
  type ChatMessage,
  type ChatState,
  type ChatStore,
  type ChatStoreOptions,
  type Conversation,
} from "./chatStore.js";
