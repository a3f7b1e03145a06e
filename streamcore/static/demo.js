// The demo page's logic (a file of its own: the page's CSP allows no inline script).
import { StreamcoreClient, EventType } from "/streamcore.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const client = new StreamcoreClient({
  url: `${scheme}//${location.host}${document.getElementById("demo-script").dataset.wsPath}`,
  token: params.get("token"),
  reconnectAttempts: Number(params.get("attempts") || 1000),
  reconnectDelay: Number(params.get("delay") || 500),
  reconnectDelayMax: 5000,
});
window.streamcore = client; // handy in the console, and for tests

// Every piece of model text goes through textContent: a reply containing markup shows
// its characters, it is never parsed as HTML.
function bubble(role, text) {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  div.textContent = text;
  $("messages").append(div);
  $("messages").scrollTop = $("messages").scrollHeight;
  return div;
}

function showState() {
  const state = client.connectionState;
  $("state").textContent = state;
  $("state").className = `badge ${state}`;
  $("queue").textContent = String(client.queueSize);
}
client.on("state", showState);
client.on("queue", showState);
client.on("connected", () => { $("reconnect").hidden = true; showState(); });
client.on("reconnecting", ({ attempt, delay }) => {
  $("reconnect").hidden = false;
  $("reconnect").textContent = `reconnecting: attempt ${attempt} in ${Math.round(delay)} ms`;
});
client.on(EventType.AI_THINKING, () => { $("thinking").textContent = "The AI is thinking…"; });
client.on(EventType.AI_MESSAGE_START, () => { $("thinking").textContent = ""; });
client.on(EventType.ERROR, (e) => {
  const line = document.createElement("div");
  line.textContent = `${e.code}: ${e.message}${e.retryable ? " (retryable)" : ""}`;
  $("errors").append(line);
});
client.on(EventType.FOLLOW_UP_QUESTIONS, ({ questions }) => {
  $("followups").replaceChildren(...questions.map((q) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = q;
    b.onclick = () => ask(q);
    return b;
  }));
});

let current = null;
function ask(text) {
  bubble("user", text);
  const ai = bubble("ai", "");
  ai.classList.add("streaming");
  $("stop").disabled = false;
  current = client.sendMessage(text, { onChunk: (_, all) => { ai.textContent = all; } });
  showState();
  current.done.then((end) => {
    ai.textContent = end.content ?? ai.textContent;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = end.stopReason === "complete" ? "" : `[${end.stopReason}]`;
    if (meta.textContent) ai.append(meta);
  }).catch((err) => {
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = `[${err.code || err.name}]`;
    ai.append(meta);
  }).finally(() => {
    ai.classList.remove("streaming");
    ai.dataset.done = "1";
    $("stop").disabled = true;
    $("thinking").textContent = "";
  });
}

$("chat").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("input").value.trim();
  if (!text) return;
  $("input").value = "";
  ask(text);
});
$("stop").addEventListener("click", () => current && current.stop());

function renderObjective(objective) {
  const box = $("objective");
  const title = document.createElement("h3");
  title.textContent = objective.title;
  const desc = document.createElement("p");
  desc.textContent = `${objective.description} (${objective.difficulty}, ${objective.category})`;
  const list = document.createElement("ol");
  for (const step of objective.steps) {
    const li = document.createElement("li");
    li.className = step.completed ? "done" : "";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = step.completed;
    box.onchange = async () => {
      const updated = await client.updateObjective(objective.id, { steps: [{ id: step.id, completed: box.checked }] });
      renderObjective(updated);
    };
    const label = document.createElement("span");
    label.textContent = ` ${step.title}: ${step.description}`;
    li.append(box, label);
    list.append(li);
  }
  box.replaceChildren(title, desc, list);
  box.dataset.id = objective.id;
}

$("objective-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("generate").disabled = true;
  $("objective").textContent = "Generating…";
  try {
    const objective = await client.generateObjective($("objective-prompt").value, {
      difficulty: $("difficulty").value || undefined,
      category: $("category").value || undefined,
    });
    renderObjective(objective);
  } catch (err) {
    $("objective").textContent = `Failed: ${err.message}`;
  } finally {
    $("generate").disabled = false;
  }
});

showState();
client.connect().catch(() => showState());
