// A minimal useChat-style client of streamcore's AI SDK route, in Node.js.
//
//   streamcore serve                         # POST /api/chat, GET /api/chat/{id}/stream
//   npm install ai@6                         # once, next to this file
//   node examples/sse_aisdk.mjs http://127.0.0.1:8000 "Bonjour !"
//
// `AbstractChat` is the class `useChat` (React), `@ai-sdk/vue` and `@ai-sdk/svelte` wrap:
// the same transport, the same state updates, minus the framework. In a React page it is
//   const { messages, sendMessage, resumeStream } = useChat({ id, resume: true });
// with the default transport (POST /api/chat) pointed at streamcore.
import { AbstractChat, DefaultChatTransport } from "ai";

const [base = "http://127.0.0.1:8000", prompt = "Bonjour !"] = process.argv.slice(2);

class State {
  status = "ready";
  error = undefined;
  messages = [];
  pushMessage = (m) => (this.messages = [...this.messages, m]);
  popMessage = () => (this.messages = this.messages.slice(0, -1));
  replaceMessage = (i, m) => (this.messages = this.messages.map((old, j) => (j === i ? m : old)));
  snapshot = (thing) => structuredClone(thing);
}

class Chat extends AbstractChat {
  constructor(init) {
    super({ ...init, state: new State() });
  }
}

let shown = 0;
const chat = new Chat({
  transport: new DefaultChatTransport({ api: `${base}/api/chat` }),
  onError: (error) => console.error(`\n[error] ${error.message}`),
  onFinish: ({ message, isDisconnect }) => {
    if (isDisconnect) console.error("\n[connection lost: resuming]");
    else console.log(`\n[finished: ${message.metadata?.stopReason ?? "?"}]`);
  },
});
// Print the assistant's text as it grows (what a page would render).
const timer = setInterval(() => {
  const message = chat.messages.findLast((m) => m.role === "assistant");
  const text = (message?.parts ?? []).filter((p) => p.type === "text").map((p) => p.text).join("");
  if (text.length > shown) {
    process.stdout.write(text.slice(shown));
    shown = text.length;
  }
}, 10);

await chat.sendMessage({ text: prompt });
if (chat.status === "error") await chat.resumeStream(); // GET /api/chat/{id}/stream: replays it
clearInterval(timer);
const message = chat.messages.findLast((m) => m.role === "assistant");
const text = message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
process.stdout.write(text.slice(shown) + "\n");
