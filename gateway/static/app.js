// OpenClaw dashboard: actions through the REST API (with the session's CSRF token) and live views
// (the /v1/live WebSocket, and Server-Sent Events on a task's page). Plain JavaScript, no build step.
"use strict";
(() => {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const page = document.body.dataset.page;
  const TERMINAL = new Set(["succeeded", "failed", "dead", "cancelled", "rejected"]);

  // --- helpers ------------------------------------------------------------------------------------
  let toastTimer = null;
  function toast(message, bad = false) {
    const el = document.getElementById("toast");
    if (!el) return;
    el.textContent = message;
    el.classList.toggle("bad", bad);
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, bad ? 8000 : 4000);
  }

  // An action's "done" is shown again after the reload that shows its effect (the toast was gone by
  // the time the page came back, and a person saw a card vanish without a word).
  function reloadSaying(message, delay) {
    toast(message);
    try { sessionStorage.setItem("claw-toast", message); } catch (_) { /* storage off: no carry-over */ }
    setTimeout(() => location.reload(), delay);
  }
  try {
    const carried = sessionStorage.getItem("claw-toast");
    if (carried) { sessionStorage.removeItem("claw-toast"); toast(carried); }
  } catch (_) { /* storage off */ }

  async function api(method, path, body) {
    const response = await fetch(path, {
      method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let data = null;
    try { data = JSON.parse(text); } catch (_) { /* not JSON */ }
    if (!response.ok) throw new Error(data?.error?.message || `${response.status} ${response.statusText}`);
    return data;
  }

  function throttle(fn, ms) {
    let timer = null;
    return () => {
      if (timer) return;
      timer = setTimeout(() => { timer = null; fn(); }, ms);
    };
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") node.textContent = v; else node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children) node.append(child);
    return node;
  }

  const human = (state) => state.replace(/_/g, " ");
  function ago(epoch) {
    const s = Math.max(0, Date.now() / 1000 - epoch);
    if (s >= 86400) return `${Math.round(s / 86400)}d ago`;
    if (s >= 3600) return `${Math.round(s / 3600)}h ago`;
    if (s >= 60) return `${Math.round(s / 60)}m ago`;
    return `${Math.round(s)}s ago`;
  }
  const pad = (n) => String(n).padStart(2, "0");
  function stamp(epoch) {
    const d = new Date(epoch * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  // The dot by the name shows only on a page that follows the cluster live (a grey dot on a page that
  // never connects read as a lost connection): green while connected, grey while reconnecting.
  function liveDot(on) {
    const dot = document.getElementById("live-dot");
    if (!dot) return;
    dot.hidden = false;
    dot.classList.toggle("on", on);
    dot.title = on ? "live updates: connected" : "live updates: reconnecting";
  }

  // A WebSocket of several subscriptions, reconnecting with a growing pause.
  function live(subscriptions, onMessage) {
    let delay = 500;
    const open = () => {
      const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/live`);
      ws.onopen = () => {
        delay = 500;
        liveDot(true);
        for (const sub of subscriptions) ws.send(JSON.stringify({ op: "subscribe", ...sub }));
      };
      ws.onmessage = (event) => onMessage(JSON.parse(event.data));
      ws.onclose = () => {
        liveDot(false);
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 10000);
      };
    };
    open();
  }

  // --- actions: buttons with data-action POST to the API -------------------------------------------
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-action]");
    if (!button) return;
    event.preventDefault();
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    const body = button.dataset.body ? JSON.parse(button.dataset.body) : {};
    if (button.dataset.prompt) {
      const answer = window.prompt(button.dataset.prompt, "");
      if (answer === null) return;
      if (answer) body.reason = answer;
    }
    if (button.dataset.field) {
      const input = button.closest(".actions")?.querySelector("input.reason");
      const value = input?.value.trim() || "";
      if (button.dataset.require && !value) {
        toast(`Give a ${button.dataset.require} first`, true);
        input?.focus();
        return;
      }
      if (value) body[button.dataset.field] = value;
    }
    button.disabled = true;
    try {
      const reply = await api("POST", button.dataset.action, body);
      if (button.dataset.go === "run" && reply?.run_id) {
        toast(`${button.textContent.trim()}: done`);
        setTimeout(() => { location.href = `/runs/${reply.run_id}`; }, 300);
        return;
      }
      reloadSaying(`${button.textContent.trim()}: done`, 500);
    } catch (error) {
      toast(error.message, true);
      button.disabled = false;
    }
  });

  // --- overview --------------------------------------------------------------------------------------
  function overview() {
    // Finished tasks per 5 s over the last 5 minutes, stacked by outcome: succeeded, failed (failed
    // or dead: the failure rate), other ends (cancelled, rejected).
    const OUTCOMES = [["succeeded", "#2f7de1"], ["failed", "#d64545"], ["other", "#a9b4c2"]];
    const outcome = (state) => (state === "succeeded" ? 0 : state === "failed" || state === "dead" ? 1 : 2);
    const buckets = Array.from({ length: 60 }, () => [0, 0, 0]);
    const canvas = document.getElementById("throughput");
    const draw = () => {
      if (!canvas) return;
      const ctx = canvas.getContext("2d");
      const total = (b) => b[0] + b[1] + b[2];
      const w = canvas.width, h = canvas.height, max = Math.max(1, ...buckets.map(total));
      ctx.clearRect(0, 0, w, h);
      ctx.fillStyle = "#e8edf3";
      ctx.fillRect(0, h - 1, w, 1);
      const bw = w / buckets.length;
      buckets.forEach((b, i) => {
        let y = h - 1;
        b.forEach((n, k) => {
          const bh = (n / max) * (h - 16);
          ctx.fillStyle = OUTCOMES[k][1];
          ctx.fillRect(i * bw + 1, y - bh, bw - 2, bh);
          y -= bh;
        });
      });
      ctx.fillStyle = "#66758a";
      ctx.font = "11px system-ui";
      const shown = buckets.reduce((s, b) => s + total(b), 0);
      if (shown === 0) {
        ctx.fillText("no task has finished since this page opened; bars appear as tasks finish", 4, h / 2);
      } else {
        const failed = buckets.reduce((s, b) => s + b[1], 0);
        ctx.fillText(`max ${max} / 5 s, failed ${Math.round((100 * failed) / shown)} % of ${shown}`, 4, 11);
      }
    };
    setInterval(() => { buckets.shift(); buckets.push([0, 0, 0]); draw(); }, 5000);
    draw();
    const pct = (r) => (r === null || r === undefined ? "-" : `${Math.round(r * 100)} %`);
    const dur = (s) => (s === null || s === undefined ? "-" : s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(1)} s`);
    live([{ topic: "overview" }, { topic: "tasks" }], (message) => {
      if (message.topic === "tasks") {
        if (message.feed.state && TERMINAL.has(message.feed.state)) {
          buckets[buckets.length - 1][outcome(message.feed.state)] += 1;
          draw();
        }
        return;
      }
      if (message.topic !== "overview") return;
      const status = message.status;
      document.querySelectorAll("[data-state-count]").forEach((node) => {
        node.textContent = status.tasks_by_state[node.dataset.stateCount] || 0;
      });
      const w = status.window || {};
      const set = (key, text) => { const n = document.querySelector(`[data-window="${key}"]`); if (n) n.textContent = text; };
      set("finished", w.finished || 0);
      set("completion_rate", pct(w.completion_rate));
      set("failure_rate", pct(w.failure_rate));
      set("run_mean_s", dur(w.run_mean_s));
      const dlq = document.querySelector('[data-field="dlq_messages"]');
      if (dlq) dlq.textContent = status.dlq_messages ?? "-";
      const online = document.getElementById("nodes-online");
      if (online) online.textContent = `${status.nodes_online} of ${status.nodes_total} online`;
      const alerts = document.getElementById("alerts");
      if (alerts) {
        alerts.replaceChildren(...status.alerts.map((a) =>
          el("div", { class: "alert-banner", text: `\u26A0 ${a.message}` })));
      }
    });
  }

  // --- tasks list ------------------------------------------------------------------------------------
  function tasks() {
    const table = document.getElementById("task-table");
    const operator = table?.dataset.operator === "true";
    const progress = new Map();
    const paged = new URLSearchParams(location.search).has("cursor");

    function row(t) {
      const cells = [];
      if (operator) cells.push(el("td", { class: "pick-col" }, el("input", { type: "checkbox", class: "pick", value: t.task_id, "aria-label": "select" })));
      cells.push(el("td", { class: "mono" }, el("a", { href: `/tasks/${t.task_id}`, text: t.task_id.slice(-10) })));
      cells.push(el("td", { text: t.skill }));
      cells.push(el("td", {}, el("span", { class: `badge state-${t.state}`, "data-role": "state", text: human(t.state) })));
      const bar = el("progress", { max: "100", "data-role": "progress" });
      const p = t.state === "succeeded" ? 100 : progress.get(t.task_id);
      if (p !== undefined) bar.value = p;
      cells.push(el("td", {}, bar));
      cells.push(el("td", { class: "wide-only", text: String(t.attempts) }));
      cells.push(el("td", { class: "mono small wide-only", text: t.node_id || "-" }));
      cells.push(el("td", { class: "small wide-only", text: t.tenant || "default" }));
      cells.push(el("td", { class: "wide-only", title: stamp(t.created_at), text: ago(t.created_at) }));
      return el("tr", { "data-task": t.task_id }, ...cells);
    }

    const refresh = throttle(async () => {
      if (!table || paged) return;
      const query = new URLSearchParams({ limit: "50" });
      if (table.dataset.state) query.set("state", table.dataset.state);
      if (table.dataset.skill) query.set("skill", table.dataset.skill);
      if (table.dataset.tenant) query.set("tenant", table.dataset.tenant);
      if (table.dataset.since) query.set("created_after", String(Date.now() / 1000 - Number(table.dataset.since)));
      try {
        const data = await api("GET", `/v1/tasks?${query}`);
        const picked = new Set([...document.querySelectorAll(".pick:checked")].map((c) => c.value));
        const rows = data.tasks.map(row);
        rows.forEach((r) => { const c = r.querySelector(".pick"); if (c && picked.has(c.value)) c.checked = true; });
        table.tBodies[0].replaceChildren(...rows);
        table.hidden = rows.length === 0;
        document.getElementById("bulk")?.toggleAttribute("hidden", rows.length === 0);
        document.getElementById("no-tasks")?.toggleAttribute("hidden", rows.length > 0);
        const total = document.getElementById("task-total");
        if (total && data.total !== null && data.total !== undefined) total.textContent = data.total;
      } catch (error) {
        toast(error.message, true);
      }
    }, 700);
    window.clawRefreshTasks = refresh;

    live([{ topic: "tasks" }], (message) => {
      if (message.topic !== "tasks") return;
      const feed = message.feed;
      if (feed.percent !== undefined && feed.percent !== null) progress.set(feed.task_id, feed.percent);
      const tr = table?.querySelector(`tr[data-task="${feed.task_id}"]`);
      if (!tr) { refresh(); return; }
      if (feed.state) {
        const badge = tr.querySelector('[data-role="state"]');
        badge.className = `badge state-${feed.state}`;
        badge.textContent = human(feed.state);
        if (table.dataset.state && table.dataset.state !== feed.state) refresh();
      }
      const bar = tr.querySelector('[data-role="progress"]');
      const p = feed.state === "succeeded" ? 100 : progress.get(feed.task_id);
      if (bar && p !== undefined) bar.value = p;
      tr.classList.remove("flash");
      void tr.offsetWidth;
      tr.classList.add("flash");
    });

    const form = document.getElementById("submit-form");
    form?.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      let input;
      try { input = JSON.parse(data.get("input") || "{}"); } catch (error) {
        toast(`The input is not JSON: ${error.message}`, true);
        return;
      }
      const task = { skill: data.get("skill"), input, priority: data.get("priority") };
      if (data.get("idempotency_key")) task.idempotency_key = data.get("idempotency_key");
      try {
        const reply = await api("POST", "/v1/tasks", task);
        const result = reply.results[0];
        toast(`Submitted ${result.task_id.slice(-10)}: ${human(result.state)}${result.note ? ` (${result.note})` : ""}`);
        refresh();
      } catch (error) {
        toast(error.message, true);
      }
    });

    document.getElementById("select-all")?.addEventListener("change", (event) => {
      document.querySelectorAll(".pick").forEach((c) => { c.checked = event.target.checked; });
      count();
    });
    const count = () => {
      const n = document.getElementById("selected-count");
      if (n) n.textContent = document.querySelectorAll(".pick:checked").length;
    };
    document.addEventListener("change", (event) => { if (event.target.classList?.contains("pick")) count(); });
    document.querySelectorAll("[data-bulk]").forEach((button) => button.addEventListener("click", async () => {
      const ids = [...document.querySelectorAll(".pick:checked")].map((c) => c.value);
      if (!ids.length) { toast("Select tasks first", true); return; }
      let done = 0;
      const errors = [];
      for (const id of ids) {
        try { await api("POST", `/v1/tasks/${id}/${button.dataset.bulk}`, {}); done += 1; } catch (error) { errors.push(error.message); }
      }
      toast(`${button.dataset.bulk}: ${done} of ${ids.length} done${errors.length ? ` (${errors[0]})` : ""}`, errors.length > 0);
      refresh();
    }));
  }

  // --- one task --------------------------------------------------------------------------------------
  function task() {
    const head = document.getElementById("task-page");
    if (!head) return;
    const id = head.dataset.task;
    const timeline = document.getElementById("timeline");
    const bar = document.getElementById("task-progress");
    const barText = document.getElementById("task-progress-text");
    const badge = document.getElementById("task-state");

    document.querySelectorAll("pre[data-preview]").forEach(async (pre) => {
      try {
        const response = await fetch(pre.dataset.preview, { credentials: "same-origin" });
        let text = await response.text();
        if (!response.ok) throw new Error(`${response.status}: ${text.slice(0, 200)}`);
        if (pre.dataset.kind === "json") {
          try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (error) { /* shown as it is */ }
        }
        pre.textContent = text.length > 65536 ? `${text.slice(0, 65536)}\n…` : text;
      } catch (error) { pre.textContent = error.message; }
    });

    if (head.dataset.finished === "true") return;
    const source = new EventSource(`/v1/tasks/${id}/events?last_event_id=${head.dataset.lastEvent}`);
    liveDot(true);
    source.onerror = () => liveDot(false); // EventSource reconnects by itself, from the last id
    source.onopen = () => liveDot(true);
    source.onmessage = (message) => {
      const e = JSON.parse(message.data);
      if (timeline.querySelector(`[data-event="${e.id}"]`)) return;
      let data = e.data && JSON.stringify(e.data) !== "{}" ? JSON.stringify(e.data) : null;
      if (e.kind === "progress" && e.data && typeof e.data.percent === "number") {
        data = `${Math.round(e.data.percent)} % ${e.data.message || ""}`.trim();
      }
      // As the server renders them (gateway/dashboard.py _event_detail): readable, not raw JSON.
      if (e.kind === "artifact" && e.data && e.data.name) data = `${e.data.name} (${e.data.size ?? "?"} bytes)`;
      if (e.kind === "usage" && e.data && typeof e.data.input_tokens === "number") {
        data = `${e.data.input_tokens} tokens in / ${e.data.output_tokens || 0} out${e.data.model ? `, ${e.data.model}` : ""}`;
      }
      const to = e.to_state && e.to_state !== e.kind ? ` \u2192 ${human(e.to_state)}` : "";
      const item = el("li", { "data-event": String(e.id), class: `kind-${e.kind.replace(/ /g, "-")}` },
        el("span", { class: "when", text: stamp(e.at) }),
        el("span", { class: "what", text: e.kind + to }));
      if (data) item.append(el("span", { class: "data", text: data }));
      timeline.append(item);
      timeline.scrollTop = timeline.scrollHeight;
      if (e.kind === "progress" && e.data && typeof e.data.percent === "number") {
        bar.value = e.data.percent;
        barText.textContent = `${Math.round(e.data.percent)} %`;
      }
      if (e.kind === "started") { bar.removeAttribute("value"); barText.textContent = ""; }
      if (e.to_state) {
        badge.className = `badge big state-${e.to_state}`;
        badge.textContent = human(e.to_state);
      }
    };
    source.addEventListener("end", (message) => {
      source.close();
      liveDot(false);
      const end = JSON.parse(message.data);
      if (end.state === "succeeded") { bar.value = 100; barText.textContent = "100 %"; }
      setTimeout(() => location.reload(), 800); // the result, artifacts and actions of the ended task
    });
  }

  // --- approvals -------------------------------------------------------------------------------------
  function approvals() {
    const shown = new Set([...document.querySelectorAll("[data-task]")].map((n) => n.dataset.task));
    live([{ topic: "tasks" }], (message) => {
      if (message.topic !== "tasks") return;
      const kinds = message.feed.kinds || [];
      if (kinds.includes("held") && !shown.has(message.feed.task_id)) {
        shown.add(message.feed.task_id);
        toast("A new task waits for approval: reload to see it");
      }
    });
  }

  // --- one workflow run: node states polled while it runs -----------------------------------------
  function run() {
    const head = document.getElementById("run-page");
    if (!head || head.dataset.finished === "true") return;
    const id = head.dataset.run;
    liveDot(true);
    const timer = setInterval(async () => {
      let view;
      try { view = await api("GET", `/v1/runs/${id}`); } catch (error) { toast(error.message, true); return; }
      for (const node of view.nodes) {
        const card = document.querySelector(`[data-node="${CSS.escape(node.name)}"]`);
        if (!card) continue;
        card.className = `dag-node state-border-${node.state}`;
        const badge = card.querySelector('[data-role="node-state"]');
        badge.className = `badge state-${node.state}`;
        badge.textContent = node.state;
      }
      const state = document.getElementById("run-state");
      state.className = `badge big state-${view.state}`;
      state.textContent = view.state;
      if (view.finished_at) {
        clearInterval(timer);
        liveDot(false);
        setTimeout(() => location.reload(), 800);
      }
    }, 1500);
  }

  // --- forms that call the API (workflows, schedules, limits) -----------------------------------------
  // Each `form[data-api]` posts its fields, shaped by `data-shape`, to `data-api` (its `{field}`
  // parts filled from the form); then it goes to the new run, or reloads the page.
  const DURATION = { s: 1, m: 60, h: 3600, d: 86400 };
  function seconds(text) {
    const match = /^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$/.exec(text || "");
    if (!match) throw new Error(`'${text}' is not a duration: use e.g. 30s, 15m, 12h or 7d`);
    return Number(match[1]) * (DURATION[match[2] || "s"]);
  }
  function json(text, what) {
    try { return JSON.parse(text || "{}"); } catch (error) { throw new Error(`The ${what} is not JSON: ${error.message}`); }
  }
  const SHAPES = {
    "workflow-run": (f) => ({ input: json(f.input, "input") }),
    "workflow-register": (f) => ({ spec: f.spec }),
    schedule: (f) => {
      const body = { name: f.name, tz: f.tz || "UTC", input: json(f.input, "input") };
      if (f.kind === "cron") body.cron = f.rule;
      else if (f.kind === "every") body.every_s = seconds(f.rule);
      else body.on_event = true;
      body[f.target_kind === "workflow" ? "workflow" : "skill"] = f.target;
      return body;
    },
    limit: (f) => {
      // Said here in the form's words: the coordinator's refusal names the CLI's flags (--rpm ...).
      if (!f.rpm && !f.tpm && !f.concurrency) throw new Error("Give requests per minute, tokens per minute or at once (one at least)");
      const limit = { key: f.key };
      if (f.rpm) { limit.requests = Number(f.rpm); limit.window_s = 60; }
      if (f.tpm) limit.tokens_per_minute = Number(f.tpm);
      if (f.concurrency) limit.concurrency = Number(f.concurrency);
      return { limit };
    },
  };
  document.querySelectorAll("form[data-api]").forEach((form) => form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = Object.fromEntries(new FormData(form).entries());
    const button = form.querySelector("button[type=submit]");
    try {
      const body = SHAPES[form.dataset.shape](fields);
      const path = form.dataset.api.replace(/\{(\w+)\}/g, (_, name) => encodeURIComponent(fields[name] || ""));
      button.disabled = true;
      const reply = await api("POST", path, body);
      if (reply?.run_id) {
        toast(`${button.textContent.trim()}: done`);
        setTimeout(() => { location.href = `/runs/${reply.run_id}`; }, 300);
        return;
      }
      reloadSaying(`${button.textContent.trim()}: done`, 500);
    } catch (error) {
      toast(error.message, true);
      button.disabled = false;
    }
  }));

  if (page === "/") overview();
  else if (page === "/workflows" && document.getElementById("run-page")) run();
  else if (page === "/tasks" && document.getElementById("task-page")) task();
  else if (page === "/tasks") tasks();
  else if (page === "/approvals") approvals();
})();
