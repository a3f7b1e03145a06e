// A minimal AG-UI client of streamcore's /agui route, with @ag-ui/client's HttpAgent.
//
//   streamcore serve                         # POST /agui, GET /agui/{threadId}/stream
//   npm install @ag-ui/client                # once, next to this file
//   node examples/sse_agui.mjs http://127.0.0.1:8000 "Bonjour !"
//
// The agent keeps the thread (threadId) and its messages; every run posts a RunAgentInput
// and applies the AG-UI events streamcore sends (RUN_STARTED, TEXT_MESSAGE_*,
// REASONING_*, CUSTOM, RUN_FINISHED or RUN_ERROR). CopilotKit and other AG-UI front ends
// connect the same way.
import { HttpAgent } from "@ag-ui/client";

const [base = "http://127.0.0.1:8000", prompt = "Bonjour !"] = process.argv.slice(2);

const agent = new HttpAgent({ url: `${base}/agui` });
agent.addMessage({ id: crypto.randomUUID(), role: "user", content: prompt });

await agent.runAgent(
  {},
  {
    onReasoningMessageContentEvent: ({ event }) => process.stderr.write(event.delta),
    onTextMessageContentEvent: ({ event }) => process.stdout.write(event.delta),
    onCustomEvent: ({ event }) => console.log(`\n[${event.name}]`, JSON.stringify(event.value)),
    onRunFinishedEvent: ({ event }) => console.log(`\n[finished: ${event.result?.stopReason}]`),
    onRunErrorEvent: ({ event }) => console.error(`\n[error ${event.code}] ${event.message}`),
  },
);
const reply = agent.messages.findLast((m) => m.role === "assistant");
console.log(`[${agent.messages.length} messages in thread ${agent.threadId}; reply ${reply.content.length} chars]`);
