// The ECHO dashboard: plain ES module, no build step, nothing loaded from elsewhere.
// It reads /api/v1 (the token is the HttpOnly cookie set by ?token=...) and follows
// /api/v1/events (SSE): each event refreshes the part of the page it concerns.
// Text from the organisation is only ever set as textContent, never as HTML.

const ROOT_ROLE = "ceo";
const state = {
  roles: [], agents: [], lastMessage: 0, selected: null, seen: new Set(), seenOrder: [],
};

// ---------------------------------------------------------------- helpers
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

async function api(path, options = {}) {
  const response = await fetch(`/api/v1${path}`, {
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    ...options,
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function showError(error) {
  const box = document.getElementById("error");
  box.textContent = String(error.message || error);
  box.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

function debounced(fn, wait = 150) {
  let timer = null;
  return () => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; fn().catch(showError); }, wait);
  };
}

// Each agent's heartbeat age as the console measured it, and when that figure arrived
// (this page's monotonic clock): the age shown is the two added, so it tracks the real
// last heartbeat however the browser's wall clock is set. `agents` and `heartbeats`
// events bring fresh figures about once a second.
const beats = new Map();

function noteBeats(agents) {
  const at = performance.now();
  for (const a of agents) beats.set(a.role, { age: a.heartbeat_age, at });
}

function heartbeatAge(role) {
  const beat = beats.get(role);
  if (!beat || beat.age === null || beat.age === undefined) return "-";
  const seconds = Math.max(beat.age + (performance.now() - beat.at) / 1000, 0);
  return seconds < 90 ? `${seconds.toFixed(0)}s ago` : `${Math.round(seconds / 60)}m ago`;
}

function showBeats() {
  for (const dd of document.querySelectorAll(".heartbeat")) dd.textContent = heartbeatAge(dd.dataset.agent);
}

function time(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "";
}

function fillSelect(select, values, first) {
  const current = select.value;
  select.replaceChildren(h("option", { value: "" }, first), ...values.map((v) => h("option", { value: v }, v)));
  select.value = values.includes(current) ? current : "";
}

// ---------------------------------------------------------------- organisation
function agentCard(a) {
  const restart = h("button", {
    class: "secondary", title: `restart ${a.role}`, "data-action": "restart",
    onclick: async (event) => {
      event.target.disabled = true;
      try { await api(`/agents/${a.role}/restart`, { method: "POST" }); } catch (e) { showError(e); }
      event.target.disabled = false;
    },
  }, "restart");
  return h("div", { class: `agent state-${a.state.replace(/\s+/g, "-")}${a.role === ROOT_ROLE ? " root" : ""}`,
                    "data-role": a.role, "data-state": a.state },
    h("div", { class: "name" }, a.role,
      h("span", { class: `badge state state-${a.state.replace(/\s+/g, "-")}` }, a.state), restart),
    h("dl", {},
      h("dt", {}, "pid"), h("dd", { class: "pid" }, a.pid ?? "-"),
      h("dt", {}, "node"), h("dd", {}, a.host ?? "-"),
      h("dt", {}, "restarts"), h("dd", { class: "restarts" }, a.restarts ?? 0),
      h("dt", {}, "heartbeat"),
      h("dd", { class: "heartbeat", "data-agent": a.role, title: a.last_heartbeat ?? "" }, heartbeatAge(a.role)),
      h("dt", {}, "inbox lag"), h("dd", {}, a.inbox_lag ?? "-"),
      h("dt", {}, "working on"),
      h("dd", { class: "work" }, a.current_task ?? (a.running_tasks ? `${a.running_tasks} task(s)` : "-")),
      a.reason ? [h("dt", {}, "why"), h("dd", {}, a.reason)] : null,
    ));
}

function renderAgents(status) {
  state.agents = status.agents;
  noteBeats(status.agents);
  const org = status.organisation;
  const badge = document.getElementById("org-state");
  badge.textContent = `organisation ${org.state}`;
  badge.className = `badge state-${org.state === "running" ? "ok" : "down"}`;
  const ordered = [...status.agents].sort((x, y) => (x.role === ROOT_ROLE ? -1 : y.role === ROOT_ROLE ? 1 : 0));
  document.getElementById("tree").replaceChildren(...ordered.map(agentCard));
  const roles = status.agents.map((a) => a.role);
  if (roles.join() !== state.roles.join()) {
    state.roles = roles;
    fillSelect(document.querySelector("#task-filters [name=role]"), roles, "any role");
    const to = document.querySelector("#message-form [name=to]");
    to.replaceChildren(h("option", { value: "all" }, "to all"), ...roles.map((r) => h("option", { value: r }, `to ${r}`)));
  }
}

setInterval(showBeats, 500);

// ---------------------------------------------------------------- messages
function messageItem(m) {
  const text = m.body && typeof m.body === "object"
    ? (m.body.text ?? m.body.position ?? m.body.summary ?? (m.body.vote ? `${m.body.vote}: ${m.body.reason ?? ""}` : ""))
    : "";
  return h("li", { "data-id": m.id },
    h("div", { class: "meta" }, `#${m.id} ${time(m.created_at)} · ${m.from_role} → ${m.to_role} · ${m.kind}`),
    h("div", {}, m.subject),
    text ? h("div", { class: "body" }, String(text).slice(0, 400)) : null);
}

async function loadMessages() {
  const fresh = state.lastMessage
    ? await api(`/messages?after=${state.lastMessage}&limit=200`)
    : await api("/messages?limit=50");
  const list = document.getElementById("messages");
  for (const m of fresh) {
    if (m.id <= state.lastMessage) continue;
    state.lastMessage = m.id;
    list.prepend(messageItem(m));
  }
  while (list.children.length > 200) list.lastChild.remove();
  document.getElementById("message-count").textContent = `latest #${state.lastMessage}`;
}
const refreshMessages = debounced(loadMessages, 50);

document.getElementById("message-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  try {
    await api("/messages", { method: "POST", body: JSON.stringify({ subject: form.subject.value, to: form.to.value }) });
    form.subject.value = "";
  } catch (e) { showError(e); }
});

// ---------------------------------------------------------------- workflows
async function loadWorkflows() {
  const rows = await api("/workflows?limit=20");
  if (!state.selected && rows.length) state.selected = rows[0].id;
  document.getElementById("workflows").replaceChildren(...rows.map((w) =>
    h("li", { "data-id": w.id, class: w.id === state.selected ? "selected" : "",
              onclick: () => { state.selected = w.id; loadWorkflows().catch(showError); } },
      h("b", {}, w.id), h("span", { class: `badge phase-${w.phase}` }, w.phase), w.subject)));
  if (state.selected) await loadTimeline();
}
const refreshWorkflows = debounced(loadWorkflows, 100);

function step(title, ...items) {
  return h("div", { class: "step" }, h("h4", {}, title), items.length ? h("ul", {}, items) : null);
}

async function loadTimeline() {
  const id = state.selected;
  const data = await api(`/workflows/${encodeURIComponent(id)}`);
  if (id !== state.selected) return;
  const w = data.workflow;
  const said = (kind) => data.messages.filter((m) => m.kind === kind);
  const rounds = {};
  for (const m of said("discussion")) (rounds[m.body.round] ??= []).push(m);
  const steps = [
    step(`proposal by ${w.started_by} · ${time(w.created_at)}`, h("li", {}, w.subject), w.body ? h("li", {}, w.body) : null),
    step("who took part, and why", ...data.participants.map((p) =>
      h("li", {}, `${p.role}: ${p.participate ? "joins" : "declines"} (${p.decider}${p.confidence != null ? `, ${Number(p.confidence).toFixed(2)}` : ""}) — ${p.reason}`))),
    ...Object.keys(rounds).sort().map((r) => step(`positions, round ${r}`, ...rounds[r].map((m) =>
      h("li", {}, `${m.from_role}: ${m.body.position ?? ""}`)))),
    said("vote").length ? step("votes", ...said("vote").map((m) => h("li", {}, `${m.from_role}: ${m.body.vote} — ${m.body.reason ?? ""}`))) : null,
  ];
  if (data.decision) {
    const d = data.decision;
    steps.push(h("div", { class: "step", id: "decision", "data-outcome": d.outcome },
      h("h4", {}, `decision by ${d.decided_by}`),
      h("div", { class: "decision" }, `${d.outcome} (vote: ${d.consensus}, ${d.source}): ${d.summary}`)));
  }
  if (data.tasks.length) {
    steps.push(step("tasks and results", ...data.tasks.map((t) =>
      h("li", {}, `#${t.task_id} ${t.role ?? "-"}: ${t.status}${t.cost_usd != null ? ` · $${Number(t.cost_usd).toFixed(4)}` : ""} — ${t.error ?? (typeof t.result === "string" ? t.result : JSON.stringify(t.result ?? ""))}`.slice(0, 300)))));
  }
  steps.push(h("p", { class: "small" }, `phase ${w.phase}${w.phase === "discussing" ? ` (round ${w.round})` : ""}`));
  document.getElementById("timeline").replaceChildren(...steps.filter(Boolean));
}
const refreshTimeline = debounced(loadTimeline, 100);

document.getElementById("workflow-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    const made = await api("/workflows", { method: "POST", body: JSON.stringify({
      subject: form.subject.value, body: form.body.value, rounds: Number(form.rounds.value || 2) }) });
    state.selected = made.workflow_id;
    form.subject.value = ""; form.body.value = "";
    await loadWorkflows();
  } catch (e) { showError(e); }
  button.disabled = false;
});

// ---------------------------------------------------------------- tasks and spend
function taskButtons(t) {
  const act = (verb) => async (event) => {
    event.target.disabled = true;
    try { await api(`/tasks/${t.task_id}/${verb}`, { method: "POST" }); await loadTasks(); } catch (e) { showError(e); }
  };
  return [
    ["failed", "skipped", "dead", "cancelled"].includes(t.outcome ?? t.status) ? h("button", { "data-action": "retry", onclick: act("retry") }, "retry") : null,
    ["pending", "running", "awaiting_approval"].includes(t.status) ? h("button", { class: "secondary", "data-action": "cancel", onclick: act("cancel") }, "cancel") : null,
  ];
}

async function loadTasks() {
  const filters = document.getElementById("task-filters");
  const query = new URLSearchParams({ limit: "100" });
  if (filters.status.value) query.set("status", filters.status.value);
  if (filters.role.value) query.set("role", filters.role.value);
  const rows = await api(`/tasks?${query}`);
  document.querySelector("#tasks tbody").replaceChildren(...rows.map((t) =>
    h("tr", { "data-id": t.task_id, "data-status": t.outcome ?? t.status },
      h("td", {}, t.task_id), h("td", {}, h("span", { class: `badge state-${t.outcome ?? t.status}` }, t.outcome ?? t.status)),
      h("td", {}, t.assigned_role ?? "-"), h("td", { class: "desc", title: t.error ?? "" }, t.task_description),
      h("td", {}, `${t.attempt}/${t.max_retries + 1}`), h("td", {}, t.cost_usd != null ? `$${Number(t.cost_usd).toFixed(4)}` : ""),
      h("td", {}, taskButtons(t)))));
}
const refreshTasks = debounced(loadTasks, 150);
document.getElementById("task-filters").addEventListener("change", () => loadTasks().catch(showError));

async function loadSummary() {
  const summary = await api("/summary");
  document.getElementById("task-counts").textContent =
    Object.entries(summary.tasks).filter(([, n]) => n).map(([s, n]) => `${s} ${n}`).join(" · ");
  document.getElementById("spend-total").textContent = `spend $${summary.spend.total_usd.toFixed(4)}`;
  document.querySelector("#spend tbody").replaceChildren(...summary.spend.roles.map((r) =>
    h("tr", {}, h("td", {}, r.role ?? "-"), h("td", {}, r.runs), h("td", {}, `$${Number(r.cost_usd).toFixed(4)}`),
    h("td", {}, `$${Number(r.spent_today_usd ?? 0).toFixed(2)}` +
      (r.budget_usd === null || r.budget_usd === undefined ? "" : ` of $${Number(r.budget_usd).toFixed(2)}`)))));
}
const refreshSummary = debounced(loadSummary, 300);

// ---------------------------------------------------------------- approvals (issue 23)
// Pending requests first, with what was asked shown in full (the tool's input as JSON);
// Approve lets the call run once, Deny needs a reason, which the resumed run is told.
function approvalItem(a) {
  const decide = (verb) => async (event) => {
    const item = event.target.closest("li");
    const body = verb === "deny" ? { reason: item.querySelector("input[name=reason]").value } : undefined;
    if (verb === "deny" && !body.reason.trim()) { showError(new Error("a denial needs a reason")); return; }
    for (const b of item.querySelectorAll("button")) b.disabled = true;
    try {
      await api(`/approvals/${a.id}/${verb}`, { method: "POST", body: body ? JSON.stringify(body) : undefined });
    } catch (e) { showError(e); }
    await Promise.all([loadApprovals(), loadTasks()]).catch(showError);
  };
  const decided = a.state === "pending" ? null
    : h("span", { class: "small" }, ` ${a.state}${a.decided_by ? ` by ${a.decided_by}` : ""}${a.reason && a.state !== "approved" ? `: ${a.reason}` : ""}`);
  return h("li", { "data-id": a.id, "data-state": a.state, class: "approval" },
    h("div", {}, h("span", { class: `badge state-${a.state}` }, a.state), ` #${a.id} ${a.kind} · ${a.role ?? "-"}`,
      a.task_id ? ` · task ${a.task_id}` : "", ` · ${time(a.requested_at)}`, decided),
    h("div", { class: "summary" }, a.summary),
    h("pre", { class: "approval-input" }, JSON.stringify(a.input, null, 2)),
    a.state === "pending" ? h("div", { class: "row" },
      h("button", { "data-action": "approve", onclick: decide("approve") }, "Approve"),
      h("input", { name: "reason", placeholder: "reason to deny", "aria-label": "reason to deny" }),
      h("button", { class: "secondary", "data-action": "deny", onclick: decide("deny") }, "Deny")) : null);
}

async function loadApprovals() {
  const rows = await api("/approvals?limit=50");
  const pending = rows.filter((a) => a.state === "pending");
  document.getElementById("approval-count").textContent = pending.length ? `${pending.length} waiting` : "";
  document.getElementById("approvals").replaceChildren(
    ...[...pending, ...rows.filter((a) => a.state !== "pending").slice(0, 10)].map(approvalItem));
}
const refreshApprovals = debounced(loadApprovals, 150);

// ---------------------------------------------------------------- live events
function firstTime(seq) {
  if (seq === undefined || seq === null) return true;
  if (state.seen.has(seq)) return false;
  state.seen.add(seq);
  state.seenOrder.push(seq);
  if (state.seenOrder.length > 5000) state.seen.delete(state.seenOrder.shift());
  return true;
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/v1/events");
  source.onopen = () => { live.textContent = "live"; live.className = "badge live-on"; };
  source.onerror = () => { live.textContent = "reconnecting"; live.className = "badge live-off"; };
  source.addEventListener("agents", (e) => renderAgents(JSON.parse(e.data)));
  source.addEventListener("heartbeats", (e) => { noteBeats(JSON.parse(e.data).agents); showBeats(); });
  const on = (name, fn) => source.addEventListener(name, (e) => {
    const event = JSON.parse(e.data);
    if (firstTime(event.seq)) fn(event);
  });
  on("message", (event) => {
    refreshMessages();
    if (event.details && event.details.thread_id === state.selected) refreshTimeline();
  });
  on("task", () => { refreshTasks(); refreshSummary(); });
  on("workflow", () => refreshWorkflows());
  on("decision", () => refreshWorkflows());
  on("agent", () => {});
  on("approval", () => { refreshApprovals(); refreshTasks(); });
  return source;
}

async function start() {
  connect();
  await Promise.all([
    api("/agents").then(renderAgents), loadMessages(), loadWorkflows(), loadTasks(), loadSummary(),
    loadApprovals(),
  ]).catch(showError);
  document.body.dataset.ready = "1";
}

start();
