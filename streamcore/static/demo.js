// The demo page's logic (a file of its own: the page's CSP allows no inline script).
// Every piece of model text goes through textContent: a reply containing markup shows its
// characters, it is never parsed as HTML.
import { StreamcoreClient, EventType } from "/streamcore.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const client = new StreamcoreClient({
  url: `${scheme}//${location.host}${$("demo-script").dataset.wsPath}`,
  token: params.get("token"),
  reconnectAttempts: Number(params.get("attempts") || 1000),
  reconnectDelay: Number(params.get("delay") || 500),
  reconnectDelayMax: 5000,
  pingInterval: Number(params.get("ping") || 5000),
});
window.streamcore = client; // handy in the console, and for tests

const el = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
};

// --- the chat follows the streaming text, unless the reader scrolled up -------------------
const box = $("messages");
let following = true;
box.addEventListener("scroll", () => {
  following = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
});
function follow() {
  if (following) box.scrollTop = box.scrollHeight;
}

// --- monitor: state, queue, round-trip time, chunks per second ----------------------------
function showState() {
  const state = client.connectionState;
  $("state").textContent = state;
  $("state").className = `badge ${state}`;
  $("queue").textContent = String(client.queueSize);
}
client.on("state", showState);
client.on("queue", showState);
client.on("rtt", (ms) => { $("rtt").textContent = `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`; });
client.on("connected", ({ reconnects }) => {
  $("reconnect").hidden = true;
  showState();
  client.ping().catch(() => {});
  if (reconnects > 0) recheckObjective();
});
client.on("reconnecting", ({ attempt, delay }) => {
  $("reconnect").hidden = false;
  $("reconnect").textContent = `reconnecting: attempt ${attempt} in ${Math.round(delay)} ms`;
});
client.on("reconnect_failed", () => {
  $("reconnect").hidden = false;
  $("reconnect").textContent = "gave up reconnecting: reload the page";
});

class Rate {
  start() { this.n = 0; this.t0 = undefined; this.show(); }
  tick() {
    const now = performance.now();
    if (this.t0 === undefined) this.t0 = now;
    this.n += 1;
    this.show(now);
  }
  show(now = performance.now()) {
    const secs = this.t0 === undefined ? 0 : (now - this.t0) / 1000;
    $("cps").textContent = this.n > 1 && secs > 0 ? `${(this.n / secs).toFixed(1)} chunks/s` : this.n ? `${this.n} chunk` : "–";
  }
}
const rate = new Rate();

// --- errors ------------------------------------------------------------------------------
function showError(text) {
  const line = el("div", "", text);
  $("errors").append(line);
  while ($("errors").children.length > 4) $("errors").firstChild.remove();
}
client.on(EventType.ERROR, (e) => {
  if (e.code === "NOT_FOUND") return; // shown where it matters (a reply or the objective)
  showError(`${e.code}: ${e.message}${e.retryable ? " (retryable)" : ""}`);
});
client.on(EventType.AI_THINKING, () => { $("thinking").textContent = "The AI is thinking…"; });
client.on(EventType.AI_MESSAGE_START, () => { $("thinking").textContent = ""; });
client.on(EventType.FOLLOW_UP_QUESTIONS, ({ questions }) => {
  $("followups").replaceChildren(...questions.map((q) => {
    const b = el("button", "", q);
    b.type = "button";
    b.onclick = () => ask(q);
    return b;
  }));
});

// --- chat ----------------------------------------------------------------------------------
function bubble(role, text) {
  const div = el("div", `msg ${role}`);
  const body = el("span", "text", text);
  div.append(body);
  box.append(div);
  following = true;
  follow();
  return div;
}

let current = null;
function ask(text) {
  bubble("user", text);
  const ai = bubble("ai", "");
  const body = ai.querySelector(".text");
  ai.classList.add("streaming");
  let details = null;
  const reasoningBlock = (all) => {
    if (!details) {
      details = el("details", "reasoning");
      details.open = true;
      const summary = el("summary", "", "Reasoning");
      summary.addEventListener("click", () => { details.dataset.touched = "1"; }); // the reader decides now
      details.append(summary, el("div", "reasoning-text"));
      ai.prepend(details);
    }
    details.querySelector(".reasoning-text").textContent = all;
  };
  $("stop").disabled = false;
  rate.start();
  let reply;
  try {
    reply = client.sendMessage(text, {
      onReasoning: (_, all) => { ai.classList.remove("interrupted"); reasoningBlock(all); follow(); },
      onChunk: (_, all) => {
        if (details && details.open && !details.dataset.touched) details.open = false; // the answer begins
        ai.classList.remove("interrupted");
        body.textContent = all;
        rate.tick();
        follow();
      },
      onInterrupted: () => { ai.classList.add("interrupted"); },
    });
  } catch (err) {
    ai.classList.remove("streaming");
    ai.append(el("span", "meta", `[${err.code || err.name}]`));
    ai.dataset.done = "1";
    $("stop").disabled = true;
    return;
  }
  current = reply;
  ai.dataset.requestId = reply.requestId;
  showState();
  reply.done.then((end) => {
    // What was shown is what streamed: never patched from the final content, so a resume
    // that lost or repeated text would show (the tests compare it with end.content).
    ai.dataset.endContent = end.content ?? "";
    if (end.stopReason !== "complete") ai.append(el("span", "meta", `[${end.stopReason}]`));
  }).catch((err) => {
    ai.append(el("span", "meta", `[${err.code || err.name}]`));
  }).finally(() => {
    if (details) details.querySelector("summary").textContent = `Reasoning (${reply.reasoning().split(/\s+/).filter(Boolean).length} words)`;
    ai.classList.remove("streaming", "interrupted");
    ai.dataset.done = "1";
    if (current === reply) {
      current = null;
      $("stop").disabled = true;
      $("thinking").textContent = "";
    }
    follow();
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

// --- objective -------------------------------------------------------------------------
let objective = null;
let objectiveRun = null;

function renderObjective(obj) {
  objective = obj;
  const host = $("objective");
  host.classList.remove("stale");
  const title = el("h3", "", obj.title);
  const desc = el("p", "", `${obj.description} (${obj.difficulty}, ${obj.category})`);
  const list = el("ol");
  for (const step of obj.steps) {
    const li = el("li", step.completed ? "done" : "");
    const check = el("input");
    check.type = "checkbox";
    check.checked = step.completed;
    check.onchange = () => toggleStep(obj, step, check, li);
    li.append(check, el("span", "", ` ${step.title}: ${step.description}`));
    list.append(li);
  }
  host.replaceChildren(title, desc, list, el("div", "error objective-error"));
  host.dataset.id = obj.id;
}

async function toggleStep(obj, step, check, li) {
  const wanted = check.checked;
  check.disabled = true;
  $("objective").querySelector(".objective-error").textContent = "";
  try {
    const updated = await client.updateObjective(obj.id, { steps: [{ id: step.id, completed: wanted }] });
    renderObjective(updated);
  } catch (err) {
    // The server did not take it: the checkbox goes back to what the server has.
    check.checked = !wanted;
    check.disabled = false;
    li.className = check.checked ? "done" : "";
    const where = $("objective").querySelector(".objective-error");
    if (where) where.textContent = `Could not update the step: ${err.code ? `${err.code}: ` : ""}${err.message}`;
    if (err.code === "NOT_FOUND" || /unknown objective/i.test(err.message)) markStale();
  }
}

function markStale() {
  const host = $("objective");
  if (!objective || host.classList.contains("stale")) return;
  host.classList.add("stale");
  for (const check of host.querySelectorAll("input[type=checkbox]")) check.disabled = true;
  host.append(el("div", "notice stale-notice",
    "The server no longer knows this objective (it restarted, or this was another session). Generate a new one to keep tracking it."));
}

// After a reconnect, ask the server whether it still has the objective (an empty update
// changes nothing but its updatedAt); if not, say so instead of offering dead checkboxes.
async function recheckObjective() {
  if (!objective || $("objective").classList.contains("stale")) return;
  try {
    renderObjective(await client.updateObjective(objective.id, {}));
  } catch {
    markStale();
  }
}

$("objective-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("generate").disabled = true;
  $("objective-stop").disabled = false;
  $("objective-status").textContent = "Generating…";
  const stream = $("objective-stream");
  stream.hidden = false;
  stream.textContent = "";
  rate.start();
  let run;
  try {
    run = objectiveRun = client.startObjective($("objective-prompt").value, {
      difficulty: $("difficulty").value || undefined,
      category: $("category").value || undefined,
      onChunk: (_, all) => { stream.textContent = all; stream.scrollTop = stream.scrollHeight; rate.tick(); },
    });
    const obj = await run.objective;
    stream.hidden = true;
    $("objective-status").textContent = "";
    renderObjective(obj);
  } catch (err) {
    $("objective-status").textContent = err.stopReason === "user_cancelled"
      ? "Generation stopped."
      : `Failed: ${err.code ? `${err.code}: ` : ""}${err.message}`;
  } finally {
    if (objectiveRun === run) objectiveRun = null;
    $("generate").disabled = false;
    $("objective-stop").disabled = true;
  }
});
$("objective-stop").addEventListener("click", () => objectiveRun && objectiveRun.stop());

showState();
client.connect().catch(() => showState());
