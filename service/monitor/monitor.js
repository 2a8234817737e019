/* turnwise live call monitor.
 *
 * Reads GET /v1/dialogues (the live calls, refreshed every few seconds), GET /v1/dialogues/{id} (a call's
 * window and summary when it is selected) and WS /v1/events?types=alert,turn,ended (scored turns, alerts
 * and ended calls as they happen). The API key the user enters stays in this tab's sessionStorage; it is
 * sent as `Authorization: Bearer <key>` and, on the WebSocket, as the subprotocol `bearer.<key>`.
 * Every piece of call text goes into the page as a text node: nothing is parsed as HTML.
 */
"use strict";

(() => {
  const KEY_STORE = "turnwise.monitor.key";
  const LIST_EVERY_MS = 3000;
  const SEVERITY = { info: 1, warning: 2, critical: 3 };
  const SEVERITY_NAME = ["", "info", "warning", "critical"];
  const SVG = "http://www.w3.org/2000/svg";
  const base = new URL(".", location.href); // the service root, also behind a path prefix

  const state = {
    key: sessionStorage.getItem(KEY_STORE) || "",
    calls: new Map(), // dialogue_id -> the list's row, updated by events between refreshes
    selected: null, // dialogue_id shown in the detail panel
    detail: null,
    ws: null,
    wsRetry: 0,
    wsTimer: null,
    authFailed: false,
    dirty: false,
  };

  const $ = (sel) => document.querySelector(sel);
  const rows = new Map(); // dialogue_id -> <tr>

  // ---- DOM helpers: children are nodes or strings (strings become text nodes) --------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    setAttrs(node, attrs);
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(name, String(value));
    }
  }

  // ---- formatting ---------------------------------------------------------------------------------
  const pct = (p) => (typeof p === "number" ? `${Math.round(p * 100)}%` : "");
  const signed = (v) => (v > 0 ? "+" : v < 0 ? "\u2212" : "") + Math.abs(v).toFixed(2);

  function ago(unixS) {
    if (typeof unixS !== "number") return "";
    const s = Math.max(0, Date.now() / 1000 - unixS);
    if (s < 5) return "just now";
    if (s < 60) return `${Math.floor(s)} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    return clock(unixS);
  }

  const clock = (unixS) => new Date(unixS * 1000).toLocaleTimeString([], { hour12: false });

  function labelChip(task, label, probability, compact = false) {
    const text = Array.isArray(label) ? label.join(", ") || "none" : String(label);
    const p = typeof probability === "number" ? pct(probability) : "";
    return el("span", { class: "label", dataset: { task, label: text }, title: `${task}: ${text} ${p}`.trim() },
      compact ? null : el("span", { class: "task" }, task), el("span", { class: "value" }, text),
      p && !compact ? el("span", { class: "p" }, p) : null);
  }

  // {task: label} + {task: {label: p}} -> {task: {label, probability}}
  function latestOf(labels, scores) {
    const out = {};
    for (const [task, label] of Object.entries(labels || {})) {
      const p = typeof label === "string" && scores && scores[task] ? scores[task][label] : undefined;
      out[task] = { label, probability: p };
    }
    return out;
  }

  function sentimentOf(scores) {
    const s = scores && scores.sentiment;
    if (!s || typeof s.positive !== "number" || typeof s.negative !== "number") return null;
    return s.positive - s.negative;
  }

  // ---- notices and connection state ---------------------------------------------------------------
  function notice(text, kind = "error") {
    const box = $("#notice");
    box.textContent = text;
    box.dataset.kind = kind;
    box.hidden = !text;
  }

  function setConn(stateName, text) {
    const pill = $("#conn");
    pill.dataset.state = stateName;
    pill.textContent = text;
  }

  // ---- the API ------------------------------------------------------------------------------------
  class HttpError extends Error {
    constructor(status, message) {
      super(message || `HTTP ${status}`);
      this.status = status;
    }
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    if (state.key) headers.Authorization = `Bearer ${state.key}`;
    const resp = await fetch(new URL(path, base), { headers, cache: "no-store" });
    if (!resp.ok) {
      let message = "";
      try {
        message = (await resp.json()).error || "";
      } catch (_) { /* not JSON */ }
      throw new HttpError(resp.status, message);
    }
    return resp.json();
  }

  function failed(err) {
    if (err instanceof HttpError && err.status === 401) {
      state.authFailed = true;
      closeEvents();
      setConn("off", "not connected");
      notice(state.key
        ? "401 unauthenticated: the API key was not accepted. Enter a valid key above."
        : "401 unauthenticated: this service needs an API key. Enter it above.");
      $("#api-key").focus();
    } else if (err instanceof HttpError) {
      notice(`The service answered ${err.status}${err.message ? `: ${err.message}` : ""}.`);
    } else {
      notice(`Cannot reach the service (${err.message || err}). Retrying.`);
    }
  }

  // ---- the list of calls ----------------------------------------------------------------------------
  async function refreshList() {
    if (state.authFailed) return;
    let body;
    try {
      body = await api("v1/dialogues");
    } catch (err) {
      failed(err);
      return;
    }
    notice("");
    const seen = new Set();
    for (const d of body.dialogues || []) {
      seen.add(d.dialogue_id);
      const call = ensureCall(d.dialogue_id);
      const rank = Math.max(call.alerts > 0 ? call.rank : 0, SEVERITY[d.max_severity] || 0,
        SEVERITY[d.last_alert && d.last_alert.severity] || 0);
      Object.assign(call, d, { rank: d.alerts > 0 ? rank : 0, ended: false });
    }
    const recent = Date.now() - 2 * LIST_EVERY_MS;
    for (const [id, call] of state.calls) {
      if (!seen.has(id) && call.touched < recent && id !== state.selected) state.calls.delete(id);
    }
    render();
    connectEvents();
    if (state.selected && !eventsLive()) loadDetail(state.selected);
  }

  function ensureCall(id) {
    let call = state.calls.get(id);
    if (!call) {
      call = { dialogue_id: id, last_seq: -1, updated_at: null, turns_scored: 0, latest: {}, alerts: 0,
        last_alert: null, rank: 0, ended: false, touched: 0 };
      state.calls.set(id, call);
    }
    return call;
  }

  function renderList() {
    const calls = [...state.calls.values()].sort((a, b) => (b.updated_at || 0) - (a.updated_at || 0));
    const tbody = $("#calls tbody");
    for (const [id, tr] of rows) {
      if (!state.calls.has(id)) {
        tr.remove();
        rows.delete(id);
      }
    }
    calls.forEach((call, i) => {
      let tr = rows.get(call.dialogue_id);
      if (!tr) {
        tr = el("tr", { tabindex: "0", dataset: { dialogue: call.dialogue_id } });
        tr.addEventListener("click", () => select(call.dialogue_id));
        tr.addEventListener("keydown", (e) => {
          if (e.key === "Enter" || e.key === " ") {
            e.preventDefault();
            select(call.dialogue_id);
          }
        });
        rows.set(call.dialogue_id, tr);
      }
      fillRow(tr, call);
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    $("#no-calls").hidden = calls.length > 0;
    $("#call-count").textContent = calls.length ? `(${calls.length})` : "";
  }

  function fillRow(tr, call) {
    tr.classList.toggle("selected", call.dialogue_id === state.selected);
    tr.classList.toggle("ended", call.ended);
    const chips = el("div", { class: "chips" });
    for (const [task, v] of Object.entries(call.latest || {})) chips.append(labelChip(task, v.label, v.probability, true));
    const severity = SEVERITY_NAME[call.rank] || null;
    const badge = el("span", { class: "badge", dataset: severity ? { severity } : {},
      title: call.last_alert ? `last: ${call.last_alert.rule} (${call.last_alert.severity})` : "no alerts" },
      String(call.alerts || 0));
    tr.replaceChildren(
      el("td", { class: "call-id" }, call.dialogue_id),
      el("td", { class: "when", title: call.updated_at ? new Date(call.updated_at * 1000).toString() : "" },
        call.ended ? "ended" : ago(call.updated_at)),
      el("td", { class: "col-labels" }, chips),
      el("td", { class: "num" }, String(call.turns_scored || 0)),
      el("td", {}, badge));
  }

  // ---- the selected call ---------------------------------------------------------------------------
  function newDetail(id) {
    return { id, turns: new Map(), trend: new Map(), alerts: new Map(), counts: {}, countedTo: -1,
      live: new Map(), firstSeq: null, missing: false, items: new Map() };
  }

  function select(id) {
    if (state.selected === id) return;
    state.selected = id;
    state.detail = newDetail(id);
    $("#transcript").replaceChildren();
    if (location.hash.slice(1) !== id) history.replaceState(null, "", `#${encodeURIComponent(id)}`);
    render();
    loadDetail(id);
  }

  async function loadDetail(id) {
    let body;
    try {
      body = await api(`v1/dialogues/${encodeURIComponent(id)}`);
    } catch (err) {
      if (state.selected !== id) return;
      if (err instanceof HttpError && err.status === 404) {
        state.detail.missing = true;
        render();
      } else {
        failed(err);
      }
      return;
    }
    if (state.selected !== id) return;
    const d = state.detail;
    d.missing = false;
    for (const t of body.window || []) {
      if (!d.turns.has(t.seq)) d.turns.set(t.seq, { seq: t.seq, speaker: t.speaker, text: t.text });
      d.firstSeq = d.firstSeq === null ? t.seq : Math.min(d.firstSeq, t.seq);
    }
    const last = body.last_result;
    if (last && d.turns.has(last.seq) && !d.turns.get(last.seq).labels) {
      Object.assign(d.turns.get(last.seq), { labels: last.labels, scores: last.scores });
    }
    const summary = body.summary || {};
    for (const t of summary.turns || []) {
      const known = d.turns.get(t.seq);
      if (known && !known.labels) Object.assign(known, { labels: t.labels, scores: t.scores });
    }
    d.counts = summary.label_counts || {};
    d.countedTo = typeof body.last_seq === "number" ? body.last_seq : -1;
    d.turnsScored = summary.turns_scored;
    for (const p of summary.sentiment_trend || []) d.trend.set(p.seq, p.value);
    for (const a of summary.alerts || []) addAlert(d, a);
    render();
  }

  function addAlert(d, a) {
    d.alerts.set(`${a.rule}@${a.seq}`, a);
  }

  // ---- events ----------------------------------------------------------------------------------------
  function onEvent(ev) {
    if (!ev || typeof ev.dialogue_id !== "string") return;
    const call = ensureCall(ev.dialogue_id);
    call.touched = Date.now();
    const d = state.detail && state.detail.id === ev.dialogue_id ? state.detail : null;
    if (ev.type === "turn") {
      if (ev.seq > call.last_seq) {
        call.turns_scored = (call.turns_scored || 0) + 1;
        call.last_seq = ev.seq;
        call.latest = latestOf(ev.labels, ev.scores);
      }
      call.updated_at = ev.at || Date.now() / 1000;
      call.ended = false;
      if (d) {
        const known = d.turns.get(ev.seq);
        d.turns.set(ev.seq, { seq: ev.seq, speaker: ev.speaker, text: ev.text, labels: ev.labels,
          scores: ev.scores, fresh: !known });
        d.live.set(ev.seq, ev.labels || {});
        const v = sentimentOf(ev.scores);
        if (v !== null) d.trend.set(ev.seq, v);
        d.missing = false;
      }
    } else if (ev.type === "alert") {
      call.alerts = (call.alerts || 0) + 1;
      call.last_alert = { rule: ev.rule, severity: ev.severity };
      call.rank = Math.max(call.rank || 0, SEVERITY[ev.severity] || 0);
      if (d) addAlert(d, ev);
    } else if (ev.type === "ended") {
      call.ended = true;
    } else {
      return;
    }
    render();
  }

  const eventsLive = () => state.ws !== null && state.ws.readyState === WebSocket.OPEN;

  function eventsUrl() {
    const url = new URL("v1/events", base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("types", "alert,turn,ended");
    return url.toString();
  }

  function connectEvents() {
    if (state.authFailed || state.wsTimer !== null) return;
    if (state.ws && state.ws.readyState <= WebSocket.OPEN) return;
    const protocols = state.key ? ["turnwise", `bearer.${state.key}`] : ["turnwise"];
    let ws;
    try {
      ws = new WebSocket(eventsUrl(), protocols);
    } catch (err) {
      setConn("off", "not connected");
      notice("This API key cannot be sent on a WebSocket (it must be plain ASCII without spaces or commas).");
      return;
    }
    state.ws = ws;
    setConn("retry", "connecting\u2026");
    ws.onopen = () => {
      state.wsRetry = 0;
      setConn("live", "live");
      if (state.selected) loadDetail(state.selected); // catch up on what happened while disconnected
    };
    ws.onmessage = (msg) => {
      let ev;
      try {
        ev = JSON.parse(msg.data);
      } catch (_) {
        return;
      }
      onEvent(ev);
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      state.ws = null;
      if (state.authFailed) return;
      const delay = Math.min(10000, 500 * 2 ** state.wsRetry++);
      setConn("retry", `reconnecting in ${Math.ceil(delay / 1000)} s`);
      state.wsTimer = setTimeout(() => {
        state.wsTimer = null;
        refreshList(); // a refused handshake is opaque to a browser: the REST call tells a 401 apart
      }, delay);
    };
  }

  function closeEvents() {
    if (state.wsTimer !== null) clearTimeout(state.wsTimer);
    state.wsTimer = null;
    const ws = state.ws;
    state.ws = null;
    if (ws) ws.close(1000);
  }

  // ---- detail rendering ------------------------------------------------------------------------------
  function renderDetail() {
    const d = state.detail;
    $("#detail").hidden = !d;
    if (!d) return;
    const call = state.calls.get(d.id);
    $("#detail-title").textContent = d.id;
    const scored = call ? call.turns_scored : d.turnsScored;
    const status = d.missing || (call && call.ended) ? "ended or expired"
      : call && call.updated_at ? `last activity ${ago(call.updated_at)}` : "";
    $("#detail-meta").textContent = [scored ? `${scored} turns scored` : "", status].filter(Boolean).join(" \u00b7 ");
    const note = $("#window-note");
    note.hidden = !(d.firstSeq > 0);
    note.textContent = d.firstSeq > 0 ? `Turns before #${d.firstSeq} are outside the service's window.` : "";
    renderTranscript(d);
    renderTrend(d);
    renderAlerts(d);
    renderCounts(d);
  }

  function alertedSeqs(d) {
    const bySeq = new Map();
    for (const a of d.alerts.values()) bySeq.set(a.seq, Math.max(bySeq.get(a.seq) || 0, SEVERITY[a.severity] || 0));
    return bySeq;
  }

  function renderTranscript(d) {
    const list = $("#transcript");
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const alerted = alertedSeqs(d);
    const seqs = [...d.turns.keys()].sort((a, b) => a - b);
    seqs.forEach((seq, i) => {
      const t = d.turns.get(seq);
      let li = d.items.get(seq);
      const sig = `${t.text}|${JSON.stringify(t.labels || null)}|${alerted.get(seq) || 0}`;
      if (!li || li.dataset.sig !== sig) {
        const fresh = el("li", { class: "turn", dataset: { seq: String(seq), speaker: t.speaker, sig } },
          el("div", { class: "who" }, t.speaker, el("span", { class: "seq" }, `#${seq}`)),
          el("div", { class: "text" }, t.text));
        if (t.labels) {
          const chips = el("div", { class: "chips" });
          for (const [task, label] of Object.entries(t.labels)) {
            const p = typeof label === "string" && t.scores && t.scores[task] ? t.scores[task][label] : undefined;
            chips.append(labelChip(task, label, p));
          }
          fresh.append(chips);
        }
        if (alerted.get(seq)) {
          fresh.classList.add("alerted");
          fresh.dataset.severity = SEVERITY_NAME[alerted.get(seq)];
        }
        if (t.fresh) fresh.classList.add("fresh");
        t.fresh = false;
        if (li) li.replaceWith(fresh);
        li = fresh;
        d.items.set(seq, li);
      }
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
    });
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  function renderTrend(d) {
    const box = $("#trend");
    const points = [...d.trend.entries()].sort((a, b) => a[0] - b[0]);
    if (!points.length) {
      box.replaceChildren(el("p", { class: "empty" }, "No sentiment scores yet."));
      return;
    }
    const W = 360, H = 150, L = 30, R = 12, T = 10, B = 22;
    const lo = points[0][0], hi = points[points.length - 1][0];
    const x = (seq) => (hi === lo ? (L + W - R) / 2 : L + ((seq - lo) / (hi - lo)) * (W - L - R));
    const y = (v) => T + ((1 - Math.max(-1, Math.min(1, v))) / 2) * (H - T - B);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": "Sentiment per turn: P(positive) minus P(negative), from -1 to +1" });
    chart.append(
      svg("title", {}, "Sentiment per turn: P(positive) \u2212 P(negative)"),
      svg("rect", { class: "area-pos", x: L, y: T, width: W - L - R, height: (H - T - B) / 2 }),
      svg("rect", { class: "area-neg", x: L, y: y(0), width: W - L - R, height: (H - T - B) / 2 }),
      svg("line", { class: "zero", x1: L, x2: W - R, y1: y(0), y2: y(0) }),
      svg("text", { x: L - 6, y: y(1) + 4, "text-anchor": "end" }, "+1"),
      svg("text", { x: L - 6, y: y(0) + 4, "text-anchor": "end" }, "0"),
      svg("text", { x: L - 6, y: y(-1) + 4, "text-anchor": "end" }, "\u22121"),
      svg("text", { x: L, y: H - 6 }, `#${lo}`),
      svg("text", { x: W - R, y: H - 6, "text-anchor": "end" }, `#${hi}`));
    if (points.length > 1) {
      chart.append(svg("polyline", { class: "line", points: points.map(([s, v]) => `${x(s)},${y(v)}`).join(" ") }));
    }
    for (const [seq, v] of points) {
      const dot = svg("circle", { class: `dot ${v > 0.15 ? "pos" : v < -0.15 ? "neg" : "mid"}`, cx: x(seq),
        cy: y(v), r: 3.5 });
      dot.append(svg("title", {}, `#${seq}: ${signed(v)}`));
      chart.append(dot);
    }
    const [lastSeq, lastV] = points[points.length - 1];
    box.replaceChildren(chart, el("p", { class: "hint" }, `latest (#${lastSeq}): ${signed(lastV)}`));
  }

  function renderAlerts(d) {
    const alerts = [...d.alerts.values()].sort((a, b) => (b.at || 0) - (a.at || 0) || b.seq - a.seq);
    $("#alerts").replaceChildren(...alerts.map((a) => {
      const labels = Object.entries(a.labels || {}).map(([task, label]) => labelChip(task, label,
        typeof label === "string" && a.scores && a.scores[task] ? a.scores[task][label] : undefined));
      const li = el("li", { tabindex: "0", title: "Show this turn in the transcript",
        dataset: { rule: a.rule, seq: String(a.seq), severity: a.severity } },
        el("span", { class: "sev", dataset: { severity: a.severity } }, a.severity),
        el("span", { class: "rule" }, a.rule),
        el("span", { class: "where" }, `turn #${a.seq}${a.at ? ` \u00b7 ${clock(a.at)}` : ""}`),
        labels.length ? el("div", { class: "chips" }, ...labels) : null);
      li.addEventListener("click", () => showTurn(d, a.seq));
      li.addEventListener("keydown", (e) => e.key === "Enter" && showTurn(d, a.seq));
      return li;
    }));
    $("#no-alerts").hidden = alerts.length > 0;
    $("#alert-count").textContent = alerts.length ? `(${alerts.length})` : "";
  }

  function showTurn(d, seq) {
    const li = d.items.get(seq);
    if (!li) return;
    li.scrollIntoView({ block: "center", behavior: "smooth" });
    li.classList.remove("fresh");
    void li.offsetWidth; // restart the highlight
    li.classList.add("fresh");
  }

  function renderCounts(d) {
    const counts = {};
    for (const [task, byLabel] of Object.entries(d.counts)) counts[task] = { ...byLabel };
    for (const [seq, labels] of d.live) {
      if (seq <= d.countedTo) continue;
      for (const [task, label] of Object.entries(labels)) {
        for (const one of Array.isArray(label) ? label : [label]) {
          counts[task] = counts[task] || {};
          counts[task][one] = (counts[task][one] || 0) + 1;
        }
      }
    }
    const tasks = Object.entries(counts);
    $("#label-counts").replaceChildren(...(tasks.length ? tasks.map(([task, byLabel]) => el("div",
      { class: "task-row", dataset: { task } }, el("div", { class: "task-name" }, task),
      ...Object.entries(byLabel).sort((a, b) => b[1] - a[1]).map(([label, n]) => el("span",
        { class: "label", dataset: { label } }, el("span", { class: "value" }, label), el("span", { class: "p" }, n)))))
      : [el("p", { class: "empty" }, "None yet.")]));
  }

  // ---- wiring --------------------------------------------------------------------------------------
  function render() {
    if (state.dirty) return;
    state.dirty = true;
    requestAnimationFrame(() => {
      state.dirty = false;
      renderList();
      renderDetail();
    });
  }

  function useKey(key) {
    state.key = key;
    if (key) sessionStorage.setItem(KEY_STORE, key);
    else sessionStorage.removeItem(KEY_STORE);
    $("#api-key").value = "";
    $("#api-key").placeholder = key ? "saved in this tab" : "Bearer key";
    state.authFailed = false;
    state.wsRetry = 0;
    closeEvents();
    notice("");
    refreshList().then(() => {
      if (state.selected && !state.authFailed) loadDetail(state.selected);
    });
  }

  $("#key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    useKey($("#api-key").value.trim());
  });
  $("#forget-key").addEventListener("click", () => useKey(""));
  $("#close-detail").addEventListener("click", () => {
    state.selected = null;
    state.detail = null;
    history.replaceState(null, "", location.pathname + location.search);
    render();
  });

  $("#api-key").placeholder = state.key ? "saved in this tab" : "Bearer key";
  setInterval(refreshList, LIST_EVERY_MS);
  setInterval(render, 1000); // "last activity" keeps counting
  refreshList();
  if (location.hash.length > 1) select(decodeURIComponent(location.hash.slice(1)));
})();
