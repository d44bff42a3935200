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
      h("b", {}, w.id), h("span", { class: `badge phase-${w.phase}` }, w.phase), w.subject,
      w.repo ? h("span", { class: "badge repo", title: "its decision's tasks work in this repository" }, w.repo.name) : null)));
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
    step(`proposal by ${w.started_by} · ${time(w.created_at)}`, h("li", {}, w.subject), w.body ? h("li", {}, w.body) : null,
      w.repo ? h("li", { class: "repo" }, `in repository ${w.repo.name}`) : null),
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
    h("tr", { "data-id": t.task_id, "data-status": t.outcome ?? t.status,
              class: t.task_id === runs.task ? "selected" : "", title: "show its runs",
              onclick: (event) => { if (!event.target.closest("button")) selectTask(t.task_id); } },
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

// ---------------------------------------------------------------- runs: doing now, a task's timeline, the feed
// What each agent's Claude run is doing (the hub's `doing` event, one line per agent),
// the selected task's attempts with their events and result, and the runs' start and
// end announced in the messages feed (`run` events: run.started, run.ended).
const runs = { task: null, doing: [] };

function money(value, digits = 2) {
  return value === null || value === undefined ? "" : `$${Number(value).toFixed(digits)}`;
}

function short(commit) {
  return commit ? String(commit).slice(0, 12) : "-";
}

function renderDoing(data) {
  runs.doing = data.agents || [];
  const list = document.getElementById("doing");
  if (!runs.doing.length) {
    list.replaceChildren(h("li", { class: "muted" }, "nothing running"));
    return;
  }
  list.replaceChildren(...runs.doing.map((a) =>
    h("li", { "data-agent": a.agent, "data-role": a.role ?? "", "data-task": a.task_id,
              "data-kind": a.kind, title: `task #${a.task_id}, attempt ${a.attempt}`,
              onclick: () => selectTask(a.task_id) },
      h("span", { class: "line" }, a.line),
      a.tasks > 1 ? h("span", { class: "muted" }, ` (+${a.tasks - 1} more task${a.tasks > 2 ? "s" : ""})`) : null)));
  if (runs.doing.some((a) => a.task_id === runs.task)) refreshTaskTimeline();
}

function selectTask(id) {
  runs.task = id;
  for (const row of document.querySelectorAll("#tasks tbody tr")) {
    row.classList.toggle("selected", Number(row.dataset.id) === id);
  }
  loadTaskTimeline().catch(showError);
}

function eventLine(e) {
  const figures = [e.turn ? `turn ${e.turn}` : null, e.cost_usd !== null && e.cost_usd !== undefined ? money(e.cost_usd, 4) : null]
    .filter(Boolean).join(", ");
  return h("li", { "data-kind": e.kind, "data-seq": `${e.attempt}.${e.seq}` },
    h("span", { class: "small" }, `${time(e.at)} `), h("b", {}, e.kind), ` ${e.summary}`,
    figures ? h("span", { class: "small" }, ` · ${figures}`) : null);
}

function attemptTitle(n, run, events, task) {
  const resumed = run?.resumed_attempt ?? null;
  const resumedEvent = events.find((e) => e.kind === "resume");
  const how = resumed !== null ? `resumed from attempt ${resumed}` : resumedEvent ? "resumed" : "fresh";
  if (run) {
    return `attempt ${n} · ${how} · ${run.outcome} · ${money(run.cost_usd, 4)}` +
      (run.turns !== null && run.turns !== undefined ? ` · ${run.turns} turn${run.turns === 1 ? "" : "s"}` : "");
  }
  const live = task.status === "running" && n === task.attempt;
  return `attempt ${n} · ${how} · ${live ? "running" : "no ledger row"}`;
}

function workspaceLines(ws) {
  const items = [
    h("li", { class: "ws-branch" }, `repository ${ws.repo} · branch ${ws.branch}`),
    h("li", { class: "ws-base" }, `base ${ws.base_branch} at ${short(ws.base_commit)}`),
  ];
  if (!ws.changed) return [...items, h("li", { class: "ws-nothing" }, "changed nothing")];
  const files = ws.files || [];
  items.push(h("li", { class: "ws-head" }, `head ${short(ws.head)} · ${files.length} file${files.length === 1 ? "" : "s"} changed`));
  if (files.length) items.push(h("li", { class: "ws-files" }, files.join(", ")));
  if (ws.diffstat) items.push(h("li", {}, h("pre", { class: "diffstat" }, ws.diffstat)));
  return items;
}

function resultSteps(t) {
  const out = [];
  const result = t.result;
  const ws = result && typeof result === "object" ? result.workspace : null;
  if (ws && typeof ws === "object") out.push(step("result: the branch", ...workspaceLines(ws)));
  const text = result === null || result === undefined ? null
    : typeof result === "string" ? result
    : typeof result.result === "string" ? result.result : null;
  if (text) out.push(step("result", h("li", { class: "body" }, text.slice(0, 2000))));
  if (t.error) out.push(step("error", h("li", {}, t.error)));
  return out;
}

async function loadTaskTimeline() {
  const id = runs.task;
  const box = document.getElementById("task-timeline");
  if (!id) { box.hidden = true; return; }
  const t = await api(`/tasks/${encodeURIComponent(id)}`);
  if (id !== runs.task) return;
  const byAttempt = new Map();
  for (const e of t.events) {
    if (!byAttempt.has(e.attempt)) byAttempt.set(e.attempt, []);
    byAttempt.get(e.attempt).push(e);
  }
  const ledger = new Map((t.runs || []).filter((r) => r.attempt !== null).map((r) => [r.attempt, r]));
  const attempts = [...new Set([...byAttempt.keys(), ...ledger.keys()])].sort((a, b) => a - b);
  const steps = [
    h("h3", {}, `task #${t.task_id} · ${t.assigned_role ?? "-"} · ${t.outcome ?? t.status}`,
      h("button", { class: "secondary", "data-action": "close", onclick: () => { runs.task = null; box.hidden = true; } }, "close")),
    h("p", { class: "small" }, t.task_description),
    ...attempts.map((n) => {
      const events = byAttempt.get(n) || [];
      return h("div", { class: "step attempt", "data-attempt": n, "data-outcome": ledger.get(n)?.outcome ?? "" },
        h("h4", {}, attemptTitle(n, ledger.get(n), events, t)),
        events.length ? h("ul", {}, events.map(eventLine)) : h("p", { class: "small" }, "no events recorded"));
    }),
    attempts.length ? null : h("p", { class: "small" },
      ["pending", "running"].includes(t.status) ? "no Claude run yet" : "no Claude run"),
    ...resultSteps(t),
  ];
  box.replaceChildren(...steps.filter(Boolean));
  box.dataset.task = t.task_id;
  box.dataset.status = t.outcome ?? t.status;
  box.hidden = false;
}
const refreshTaskTimeline = debounced(loadTaskTimeline, 300);

function runsOnTask(event) {
  if (runs.task !== null && String(runs.task) === event.subject_id) refreshTaskTimeline();
  refreshCharts();
}

function runAnnouncement(event) {
  const d = event.details || {};
  const who = d.role ?? "no role";
  const what = event.action === "run.started"
    ? `run started: ${who}, task #${d.task_id}, attempt ${d.attempt}, ` +
      (d.resumed_attempt ? `resumed from attempt ${d.resumed_attempt}` : "fresh")
    : `run ended: ${who}, task #${d.task_id}, attempt ${d.attempt}: ${d.outcome}, ` +
      `${money(d.cost_usd, 4) || "$0.0000"}, ${d.turns ?? 0} turn${d.turns === 1 ? "" : "s"}`;
  return h("li", { class: "run", "data-run": event.action, "data-task": d.task_id, "data-attempt": d.attempt },
    h("div", { class: "meta" }, `${time(event.at)} · ${event.action}`),
    h("div", {}, what),
    event.action === "run.started" && d.description ? h("div", { class: "body" }, d.description) : null);
}

function runsOnRun(event) {
  const list = document.getElementById("messages");
  list.prepend(runAnnouncement(event));
  while (list.children.length > 200) list.lastChild.remove();
  if (runs.task !== null && String(runs.task) === event.subject_id) refreshTaskTimeline();
  if (event.action === "run.ended") refreshCharts();
}

// ---------------------------------------------------------------- charts
// Two small charts drawn as inline SVG: each role's spend through the day against its
// daily budget (/charts/spend), and tasks finished per minute by outcome over the last
// hour (/charts/finished). Every label is set as text, never as markup.
const SVG = "http://www.w3.org/2000/svg";
const SERIES = ["#2b5fd9", "#c05621", "#2f855a", "#805ad5", "#b83280", "#2c7a7b", "#718096"];
const OUTCOME_COLOURS = { completed: "#1f8a4c", failed: "#c53030", skipped: "#b7791f",
                          cancelled: "#718096", dead: "#742a2a" };

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function drawSpend(chart) {
  const W = 480, H = 190, left = 40, right = 10, top = 10, bottom = 22;
  const plotW = W - left - right, plotH = H - top - bottom;
  const peak = Math.max(0.01, ...chart.roles.map((r) => Math.max(r.spent_usd, r.budget_usd ?? 0))) * 1.1;
  const x = (hour) => left + (hour / 24) * plotW;
  const y = (usd) => top + plotH - (usd / peak) * plotH;
  const parts = [
    svg("line", { x1: left, y1: top + plotH, x2: W - right, y2: top + plotH, class: "axis" }),
    svg("line", { x1: left, y1: top, x2: left, y2: top + plotH, class: "axis" }),
    ...[0, 6, 12, 18, 24].map((hr) => svg("text", { x: x(hr), y: H - 6, class: "tick", "text-anchor": "middle" }, `${hr}h`)),
    svg("text", { x: left - 4, y: top + 8, class: "tick", "text-anchor": "end" }, money(peak)),
    svg("text", { x: left - 4, y: top + plotH, class: "tick", "text-anchor": "end" }, "$0"),
  ];
  chart.roles.forEach((r, i) => {
    const colour = SERIES[i % SERIES.length];
    // hour h's figure is the total by the end of it: the line runs from 0h to now
    const points = [[x(0), y(0)], ...r.hourly.map((usd, hr) => [x(hr + 1), y(usd)])];
    parts.push(svg("polyline", { class: "spend", "data-role": r.role, stroke: colour, fill: "none",
                                  points: points.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" ") }));
    if (r.budget_usd !== null && r.budget_usd !== undefined) {
      parts.push(svg("line", { class: "budget", "data-role": r.role, "data-budget": r.budget_usd, stroke: colour,
                               x1: left, x2: W - right, y1: y(r.budget_usd), y2: y(r.budget_usd) }));
    }
  });
  const legend = chart.roles.map((r, i) => h("li", { "data-role": r.role, "data-spent": r.spent_usd, "data-budget": r.budget_usd ?? "" },
    h("span", { class: "swatch", style: `background:${SERIES[i % SERIES.length]}` }),
    `${r.role} ${money(r.spent_usd)}` + (r.budget_usd === null || r.budget_usd === undefined ? " (no budget)" : ` of ${money(r.budget_usd)}`)));
  return [svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "spend per role today" }, parts),
          h("ul", { class: "legend" }, legend.length ? legend : h("li", { class: "muted" }, "nothing spent today"))];
}

function drawFinished(chart) {
  const W = 480, H = 150, left = 28, right = 10, top = 10, bottom = 22;
  const plotW = W - left - right, plotH = H - top - bottom;
  const perMinute = chart.counts.map((c) => Object.values(c).reduce((a, b) => a + b, 0));
  const peak = Math.max(1, ...perMinute);
  const slot = plotW / chart.minutes;
  const parts = [
    svg("line", { x1: left, y1: top + plotH, x2: W - right, y2: top + plotH, class: "axis" }),
    svg("text", { x: left - 4, y: top + 8, class: "tick", "text-anchor": "end" }, peak),
    svg("text", { x: left, y: H - 6, class: "tick" }, `-${chart.minutes}m`),
    svg("text", { x: W - right, y: H - 6, class: "tick", "text-anchor": "end" }, "now"),
  ];
  chart.counts.forEach((counts, i) => {
    let base = top + plotH;
    for (const outcome of chart.outcomes) {
      const n = counts[outcome] || 0;
      if (!n) continue;
      const height = (n / peak) * plotH;
      base -= height;
      parts.push(svg("rect", { class: "bar", "data-minute": i - chart.minutes + 1, "data-outcome": outcome, "data-n": n,
                               x: (left + i * slot + 0.5).toFixed(1), y: base.toFixed(1),
                               width: Math.max(slot - 1, 1).toFixed(1), height: height.toFixed(1),
                               fill: OUTCOME_COLOURS[outcome] || "#4a5568" },
                           svg("title", {}, `${n} ${outcome}`)));
    }
  });
  const legend = chart.outcomes.map((o) => h("li", { "data-outcome": o, "data-n": chart.total[o] },
    h("span", { class: "swatch", style: `background:${OUTCOME_COLOURS[o] || "#4a5568"}` }), `${o} ${chart.total[o]}`));
  return [svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "tasks finished per minute" }, parts),
          h("ul", { class: "legend" }, legend.length ? legend : h("li", { class: "muted" }, "no task finished in the last hour"))];
}

async function loadCharts() {
  const [spend, finished] = await Promise.all([api("/charts/spend"), api("/charts/finished?minutes=60")]);
  document.getElementById("spend-chart").replaceChildren(...drawSpend(spend));
  document.getElementById("spend-chart-day").textContent = `${spend.day}, ${spend.timezone}`;
  document.getElementById("finished-chart").replaceChildren(...drawFinished(finished));
  document.getElementById("charts-panel").dataset.drawn = String((Number(document.getElementById("charts-panel").dataset.drawn) || 0) + 1);
}
const refreshCharts = debounced(loadCharts, 3000);  // at most every 3 s, however busy
setInterval(() => refreshCharts(), 60_000);  // the last hour's window moves on

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
  on("task", (event) => { refreshTasks(); refreshSummary(); runsOnTask(event); });
  on("run", (event) => runsOnRun(event));
  source.addEventListener("doing", (e) => renderDoing(JSON.parse(e.data)));
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
    loadCharts(),
    loadApprovals(),
  ]).catch(showError);
  document.body.dataset.ready = "1";
}

start();
