/* journal-replay run timeline: builds the Gantt from JT_ROWS on load. No network, no libraries.
 *
 * Rows with the same key form one step. Each attempt (a `started` row and the outcome after it,
 * or a lone outcome row for a step that never waited) is one `.bar` element, placed in percent
 * of the plot's width so that zooming only changes that width, never the 10,000 bars. */
(function () {
  "use strict";
  const began = performance.now();
  const F = {};
  JT_FIELDS.forEach((name, i) => { F[name] = i; });
  const rows = JT_ROWS;
  const run = JSON.parse(document.getElementById("jt-run").textContent);
  const meta = JSON.parse(document.getElementById("jt-meta").textContent);
  const KINDS = new Set(meta.kinds);
  const LANE_PAD = 4, MAX_PLOT_PX = 2e7, DASH = "\u2014";
  const MARKER_NOTES = {
    "replay.fork": "The code took another path than the recording here, and the run went on " +
      "with on_divergence=\"fork\": the rows after the cut are kept, no longer served.",
    "replay.retry": "The run failed, and was retried in place once its cause was fixed " +
      "(replay.retry / journal retry). The marker holds the recorded failure; the superseded " +
      "rows (the failed step and what was cut short) ran again after it.",
    "replay.stop": "A journaled(...) block was stopped from outside while it ran: the rows its " +
      "cleanup wrote are superseded, so a resume finds the run as the stop left it.",
  };
  const $ = (id) => document.getElementById(id);
  const scroller = $("scroller"), plot = $("plot"), axis = $("axis"), labels = $("labels");
  const detail = $("detail");
  const labelWidth = () => labels.offsetWidth;

  // -- attempts: one per started row, or per outcome row that had none ---------------------------
  const attempts = [], forks = [], byKey = new Map(), open = new Map();
  let tMin = 0, tMax = 0;
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i], key = r[F.key], t = r[F.t];
    if (t < tMin) tMin = t;
    if (t > tMax) tMax = t;
    if (r[F.kind] === "fork") { forks.push(i); continue; }
    let a = open.get(key);
    if (r[F.status] === "started") {
      if (a) { a.end = t; a.restartedAt = i; }  // the earlier attempt never got an outcome
      a = { key, first: i, last: -1, start: t, end: null, status: "open" };
      open.set(key, a);
      add(a);
    } else if (a) {
      open.delete(key);
      Object.assign(a, { last: i, end: t, status: r[F.status] });
    } else {
      add({ key, first: -1, last: i, start: t, end: t, status: r[F.status] });
    }
  }
  function add(a) {
    a.index = attempts.length;
    attempts.push(a);
    let same = byKey.get(a.key);
    if (!same) byKey.set(a.key, (same = []));
    same.push(a.index);
  }
  const tEnd = Math.max(tMax, meta.end_ms == null ? tMax : meta.end_ms);
  for (const a of open.values()) if (a.end === null) a.end = tEnd;
  // Right margin: room for the last bar, and more for attempts that run off the edge.
  const span = Math.max(tEnd - tMin, 1) * (open.size ? 1.06 : 1.02);
  const pct = (t) => ((t - tMin) / span) * 100;
  const headRow = (a) => rows[a.first >= 0 ? a.first : a.last];

  // A divergence fork supersedes the rows from `superseded_from_seq` up to its marker.
  for (const i of forks) {
    const fork = parsed(rows[i][F.payload]);
    if (!fork || typeof fork.superseded_from_seq !== "number") continue;
    const lo = fork.superseded_from_seq, hi = rows[i][F.seq];
    for (const a of attempts) {
      const seq = headRow(a)[F.seq];
      if (seq >= lo && seq < hi) a.supersededBy = i;
    }
  }

  // -- lanes: one per task path, in path order, with sub-rows only where attempts overlap -------
  const laneOf = (key) => {
    const cut = key.lastIndexOf(":");
    return cut < 0 ? key : key.slice(0, cut);
  };
  const lanes = new Map();
  const laneFor = (key) => {
    const path = laneOf(key);
    let lane = lanes.get(path);
    if (!lane) lanes.set(path, (lane = { path, ends: [], top: 0 }));
    return lane;
  };
  for (const a of attempts) {
    const lane = laneFor(a.key);
    let sub = lane.ends.findIndex((end) => end <= a.start);
    if (sub < 0) sub = lane.ends.push(0) - 1;
    lane.ends[sub] = a.end;
    a.lane = lane;
    a.sub = sub;
  }
  // A divergence fork sits on its step's lane; a retry's or a stop's marker on the workflow's.
  const markerLane = (r) => (r[F.key].includes(":") ? r[F.key] : "0:0");
  for (const i of forks) laneFor(markerLane(rows[i]));
  const pathOrder = (p, q) => {
    const x = p.split("/"), y = q.split("/");
    for (let k = 0; k < Math.min(x.length, y.length); k++) {
      const d = (+x[k] - +y[k]) || (x[k] < y[k] ? -1 : x[k] > y[k] ? 1 : 0);
      if (d) return d;
    }
    return x.length - y.length;
  };
  const ordered = [...lanes.values()].sort((p, q) => pathOrder(p.path, q.path));
  // Few lanes get taller bars (up to 30px) so that a short run fills the view and reads easily.
  const subRows = ordered.reduce((n, lane) => n + Math.max(lane.ends.length, 1), 0);
  const room = scroller.clientHeight - 30 - ordered.length * LANE_PAD;
  const ROW_H = Math.max(21, Math.min(30, Math.floor(room / Math.max(subRows, 1))));
  plot.style.setProperty("--bar-h", `${ROW_H - 4}px`);
  let height = 0;
  for (const lane of ordered) {
    lane.top = height;
    lane.height = Math.max(lane.ends.length, 1) * ROW_H + LANE_PAD;
    height += lane.height;
  }

  // -- render: every element created in one pass into fragments, attached once -----------------
  const bars = new Array(attempts.length);
  const laneFrag = document.createDocumentFragment();
  const labelFrag = document.createDocumentFragment();
  ordered.forEach((lane, n) => {
    const box = `top:${lane.top}px;height:${lane.height}px`;
    const bg = el("div", n % 2 ? "lane-bg odd" : "lane-bg");
    bg.style.cssText = box;
    laneFrag.appendChild(bg);
    const label = el("div", "lane-label", lane.path === "0" ? "0 (workflow)" : lane.path);
    label.style.cssText = `${box};line-height:${ROW_H}px`;
    label.title = `task ${lane.path}: its steps are keyed ${lane.path}:1, ${lane.path}:2, ...`;
    labelFrag.appendChild(label);
  });
  const grid = el("div");
  laneFrag.appendChild(grid);
  const barFrag = document.createDocumentFragment();
  for (const a of attempts) {
    const r = headRow(a), kind = KINDS.has(r[F.kind]) ? r[F.kind] : "other";
    let cls = `bar k-${kind} s-${a.status}`;
    if (a.supersededBy !== undefined) cls += " superseded";
    if (a.end === a.start && a.status !== "open") cls += " instant";  // never waited: on top
    const b = el("div", cls);
    const left = pct(a.start), top = a.lane.top + a.sub * ROW_H + 2;
    // An attempt that never got an outcome runs off the right edge: its end is unknown.
    const right = a.status === "open" && a.restartedAt === undefined ? 100 : pct(a.end);
    b.style.cssText = `left:${left}%;width:${right - left}%;top:${top}px`;
    b.dataset.key = a.key;
    b.dataset.seq = r[F.seq];
    b.dataset.i = a.index;
    const mark = a.status === "failed" ? "\u2715 " : a.status === "retrying" ? "\u21bb "
      : a.status === "cancelled" ? "\u2298 " : "";
    b.dataset.label = mark + r[F.name] + (r[F.attempt] > 1 ? ` #${r[F.attempt]}` : "");
    b.title = `${r[F.name]} (${a.key}) ${statusText(a)}, ${fmt(a.end - a.start)}`;
    bars[a.index] = b;
    barFrag.appendChild(b);
  }
  for (const i of forks) {
    const r = rows[i], left = `${pct(r[F.t])}%`;
    const line = el("div", "fork-line");
    line.style.left = left;
    const marker = el("div", "marker k-fork");
    marker.style.cssText = `left:${left};top:${lanes.get(laneOf(markerLane(r))).top + 2}px`;
    marker.dataset.key = r[F.key];
    marker.dataset.seq = r[F.seq];
    marker.dataset.fork = i;
    marker.title = `${markerText(r)} (seq ${r[F.seq]})`;
    if (r[F.name] === "replay.retry") marker.classList.add("retry");
    barFrag.append(line, marker);
  }
  // Sittings: where an attempt cut short by a crash (or a kill, or a lost lease) was started
  // again, a later process resumed the run. One line per resume, at the first re-start.
  const resumes = [];
  for (const a of attempts) {
    if (a.restartedAt === undefined) continue;
    const j = a.restartedAt, at = pct(rows[j][F.t]);
    const near = resumes.find((x) => Math.abs(pct(rows[x.row][F.t]) - at) < 0.5);
    if (!near) resumes.push({ row: j, keys: [a.key] });
    else {
      near.keys.push(a.key);
      near.row = Math.min(near.row, j);
    }
  }
  resumes.sort((x, y) => x.row - y.row);
  resumes.forEach((resume, n) => {
    const r = rows[resume.row], left = `${pct(r[F.t])}%`;
    const line = el("div", "sitting-line");
    line.style.left = left;
    const marker = el("div", "resume-mark", "\u21bb resumed");
    marker.style.left = left;
    marker.dataset.seq = r[F.seq];
    marker.dataset.resume = n;
    marker.title = `the run was interrupted (a crash, a kill or a lost lease) and resumed by ` +
      `a later sitting: ${resume.keys.join(", ")} started again at seq ${r[F.seq]}`;
    barFrag.append(line, marker);
  });
  plot.style.height = labels.style.height = `${Math.max(height, 60)}px`;
  plot.append(laneFrag, barFrag);
  labels.appendChild(labelFrag);
  if (!rows.length) plot.appendChild(el("div", "empty", "No events recorded for this run."));
  const count = (status) => attempts.filter((a) => a.status === status).length;
  $("summary").textContent =
    `${attempts.length} attempts of ${byKey.size} steps in ${lanes.size} tasks \u00b7 ` +
    `${count("failed")} failed \u00b7 ${count("retrying")} retried \u00b7 ` +
    (count("cancelled") ? `${count("cancelled")} cancelled \u00b7 ` : "") +
    `${count("open")} without outcome` + (forks.length ? ` \u00b7 ${forks.length} marker(s)` : "") +
    (resumes.length ? ` \u00b7 ${resumes.length} resume(s) after a crash` : "");

  // -- finding: the first failure, filters by kind and status ---------------------------------
  const firstFailure = attempts.find((a) => a.status === "failed") ||
    attempts.find((a) => a.status === "retrying");
  const jump = $("first-failure");
  jump.disabled = !firstFailure && !run.error;
  jump.title = firstFailure ? `step ${firstFailure.key}, seq ${headRow(firstFailure)[F.seq]}`
    : run.error ? "the run's own error (no step failed)" : "nothing failed in this run";
  jump.addEventListener("click", () => {
    if (firstFailure) showAttempt(firstFailure.index, true);
    else showRun();
  });
  const kindFilter = $("filter-kind"), statusFilter = $("filter-status");
  for (const kind of new Set(attempts.map((a) => headRow(a)[F.kind]))) {
    kindFilter.appendChild(option(kind));
  }
  for (const status of new Set(attempts.map((a) => a.status))) {
    statusFilter.appendChild(option(status === "open" ? "no outcome" : status, status));
  }
  function applyFilters() {
    const kind = kindFilter.value, status = statusFilter.value;
    let shown = 0;
    for (const a of attempts) {
      const visible = (!kind || headRow(a)[F.kind] === kind) && (!status || a.status === status);
      bars[a.index].classList.toggle("filtered", !visible);
      if (visible) shown++;
    }
    $("filter-count").textContent = kind || status ? `showing ${shown} of ${attempts.length}` : "";
  }
  kindFilter.addEventListener("change", applyFilters);
  statusFilter.addEventListener("change", applyFilters);

  // -- zoom and the time axis (ticks drawn for the visible window only) -------------------------
  let zoom = 1, plotWidth = 0;
  const baseWidth = () => Math.max(200, scroller.clientWidth - labelWidth() - 1);
  function setZoom(next, anchorX) {
    const x = anchorX === undefined ? (scroller.clientWidth + labelWidth()) / 2 : anchorX;
    const at = plotWidth ? (scroller.scrollLeft + x - labelWidth()) / plotWidth : 0;
    zoom = Math.min(Math.max(next, 1), MAX_PLOT_PX / baseWidth());
    plotWidth = Math.round(baseWidth() * zoom);
    plot.style.width = axis.style.width = `${plotWidth}px`;
    scroller.scrollLeft = at * plotWidth - x + labelWidth();
    drawAxis();
  }
  function drawAxis() {
    const visible = scroller.clientWidth - labelWidth();
    const t0 = tMin + (scroller.scrollLeft / plotWidth) * span;
    const t1 = tMin + Math.min((scroller.scrollLeft + visible) / plotWidth, 1) * span;
    const step = niceStep((span * 110) / plotWidth);
    const ticks = document.createDocumentFragment(), lines = document.createDocumentFragment();
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
      const tick = el("div", "tick", tickText(t, step));
      tick.style.left = `${pct(t)}%`;
      ticks.appendChild(tick);
      const line = el("div", "grid");
      line.style.left = tick.style.left;
      lines.appendChild(line);
    }
    axis.replaceChildren(ticks);
    grid.replaceChildren(lines);
  }
  function niceStep(raw) {
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5]) if (m * p >= raw) return m * p;
    return 10 * p;
  }
  let pending = false;
  scroller.addEventListener("scroll", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; drawAxis(); });
  });
  scroller.addEventListener("wheel", (e) => {
    if (!e.ctrlKey && !e.metaKey) return;
    e.preventDefault();
    const x = e.clientX - scroller.getBoundingClientRect().left;
    setZoom(zoom * Math.exp(-e.deltaY * 0.002), x);
  }, { passive: false });
  $("zoom-in").addEventListener("click", () => setZoom(zoom * 2));
  $("zoom-out").addEventListener("click", () => setZoom(zoom / 2));
  $("zoom-fit").addEventListener("click", () => setZoom(1));
  window.addEventListener("resize", () => setZoom(zoom));
  setZoom(1);

  // -- the detail panel ---------------------------------------------------------------------------
  let selected = null;
  plot.addEventListener("click", (e) => {
    const target = e.target.closest(".bar, .marker, .resume-mark");
    if (!target) return;
    if (target.dataset.resume !== undefined) showResume(resumes[+target.dataset.resume], target);
    else if (target.dataset.fork !== undefined) showFork(+target.dataset.fork, target);
    else showAttempt(+target.dataset.i);
  });
  $("show-run").addEventListener("click", showRun);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") return showRun();
    const index = selected && selected.dataset.i !== undefined ? +selected.dataset.i : null;
    if (index === null || (e.key !== "ArrowLeft" && e.key !== "ArrowRight")) return;
    e.preventDefault();  // the previous or next attempt in journal order
    const next = index + (e.key === "ArrowRight" ? 1 : -1);
    if (next >= 0 && next < attempts.length) showAttempt(next, true);
  });

  function highlight(node) {
    if (selected) selected.classList.remove("selected");
    selected = node;
    if (node) node.classList.add("selected");
  }
  function showAttempt(index, reveal) {
    const a = attempts[index], r = headRow(a), b = bars[index];
    highlight(b);
    if (reveal) b.scrollIntoView({ block: "nearest", inline: "center" });
    const first = a.first >= 0 ? rows[a.first] : null, last = a.last >= 0 ? rows[a.last] : null;
    const callText = first ? first[F.payload] : last[F.args];
    const call = parsed(callText);
    const hasArgs = call !== null && typeof call === "object" && "args" in call;
    const same = byKey.get(a.key);
    const response = last && a.status === "completed" ? parsed(last[F.payload]) : null;
    const llm = response && typeof response === "object" && response.llm ? response.llm : null;
    const usage = llm ? [  // recorded by the HTTP integrations for a recognised provider
      ["model", String(llm.model ?? DASH)],
      ["tokens", `${llm.input_tokens ?? 0} in, ${llm.output_tokens ?? 0} out`],
      ["finish", String(llm.finish_reason ?? DASH)],
    ] : [];
    const parts = [
      el("h2", null, r[F.name]),
      el("div", "sub", `step ${a.key} \u00b7 ${r[F.kind]}`),
      facts([
        ["status", statusText(a)],
        ["attempt", `${r[F.attempt]} (${same.length} recorded for this key)`],
        ["seq", first && last ? `${first[F.seq]} \u2192 ${last[F.seq]}` : `${r[F.seq]}`],
        ["started", first ? when(first) : "did not wait (no started row)"],
        ["ended", last ? when(last) : "no outcome recorded"],
        ["duration", last ? fmt(a.end - a.start) : `at least ${fmt(a.end - a.start)}`],
        ["site", hasArgs && call.site != null ? String(call.site) : DASH],
        ["fingerprint", r[F.fingerprint] || DASH],
        ...usage,
      ]),
      el("h3", null, "Request (arguments)"),
      el("pre", null, hasArgs ? JSON.stringify(call.args, null, 2) : pretty(callText)),
    ];
    if (a.supersededBy !== undefined) {
      const marker = rows[a.supersededBy], at = marker[F.seq];
      const by = marker[F.name] === "replay.retry" ? "the retry" : marker[F.name] ===
        "replay.stop" ? "the stop" : "the fork";
      parts.push(el("p", "note", `Superseded by ${by} at seq ${at}: no longer served.`));
    }
    if (a.status === "completed") {
      parts.push(el("h3", null, "Response (result)"), el("pre", null, pretty(last[F.payload])));
    } else if (last) {
      const title = a.status === "retrying" ? "Error (retried)" : "Error";
      parts.push(el("h3", null, title), ...errorView(last[F.payload]));
    } else {
      parts.push(el("h3", null, "Response"), el("p", "note", `${statusText(a)}.`));
    }
    if (same.length > 1) {
      const list = el("ol");
      for (const n of same) {
        const other = attempts[n], item = el("li", n === index ? "current" : null);
        const text = `attempt ${headRow(other)[F.attempt]}: ${statusText(other)}`;
        const link = el("a", null, `${text}, ${fmt(other.end - other.start)}`);
        link.addEventListener("click", () => showAttempt(n, true));
        item.appendChild(link);
        list.appendChild(item);
      }
      parts.push(el("h3", null, "Attempts of this step"), list);
    }
    detail.replaceChildren(...parts);
  }
  function showFork(i, node) {
    const r = rows[i], fork = parsed(r[F.payload]);
    const from = fork && fork.superseded_from_seq;
    highlight(node);
    detail.replaceChildren(
      el("h2", null, r[F.name] || "fork"),
      el("div", "sub", `${markerText(r)}`),
      facts([
        ["seq", String(r[F.seq])],
        ["at", when(r)],
        ["superseded", from != null && from < r[F.seq] ? `rows ${from} to ${r[F.seq] - 1}` : DASH],
      ]),
      el("p", "note", MARKER_NOTES[r[F.name]] || MARKER_NOTES["replay.fork"]),
      el("h3", null, "Marker"),
      el("pre", null, pretty(r[F.payload])),
    );
  }
  function showResume(resume, node) {
    const r = rows[resume.row];
    highlight(node);
    detail.replaceChildren(
      el("h2", null, "resumed"),
      el("div", "sub", `a later sitting, from seq ${r[F.seq]}`),
      facts([["at", when(r)], ["started again", resume.keys.join(", ")]]),
      el("p", "note", "The process running the run stopped before these steps finished (a " +
        "crash, a kill, a lost lease). A later process resumed the run: steps with an outcome " +
        "were served from the journal, and these ran again."),
    );
  }
  function markerText(r) {
    if (r[F.name] === "replay.retry") return `retried after its failure (seq ${r[F.seq]})`;
    if (r[F.name] === "replay.stop") return "rows written while stopping, superseded";
    return `journal forked at ${r[F.key]}`;
  }
  function showRun() {
    highlight(null);
    const parent = run.parent_run_id ? `${run.parent_run_id} at seq ${run.fork_seq}` : DASH;
    const parts = [
      el("h2", null, run.run_id),
      el("div", "sub", `run \u00b7 ${run.status}`),
      facts([
        ["workflow", run.workflow || "journaled block"],
        ["created", run.created_at],
        ["updated", run.updated_at],
        ["finished", run.finished_at || DASH],
        ["resumes", String(run.resumes)],
        ["parent", parent],
        ["chain", run.chain || DASH],
        ["seal", run.seal || DASH],
      ]),
      el("h3", null, "Inputs"),
      el("pre", null, pretty(run.inputs)),
    ];
    if (run.error) parts.push(el("h3", null, "Error"), ...errorView(run.error));
    else parts.push(el("h3", null, "Result"), el("pre", null, pretty(run.result)));
    parts.push(el("p", "note", "Click a bar for its request and response. Ctrl+wheel zooms; " +
      "\u2190/\u2192 step through attempts; Esc comes back here."));
    detail.replaceChildren(...parts);
  }
  function errorView(text) {
    const error = parsed(text);
    if (!error || typeof error !== "object" || !("message" in error)) {
      return [el("pre", "error", pretty(text))];
    }
    const { traceback, ...rest } = error;
    const views = [el("div", "headline", `${error.type || "error"}: ${error.message}`)];
    if (traceback) views.push(window.JTTraceback.render(traceback, el));
    views.push(el("pre", null, JSON.stringify(rest, null, 2)));
    return views;
  }
  function statusText(a) {
    if (a.status !== "open") return a.status;
    if (a.restartedAt !== undefined) {
      return `interrupted (started again at seq ${rows[a.restartedAt][F.seq]})`;
    }
    if (run.status === "waiting") return "waiting";
    if (run.status === "running") return "in flight or interrupted (no outcome)";
    return "interrupted (no outcome recorded)";
  }

  // -- small helpers ------------------------------------------------------------------------------
  function option(text, value) {
    const node = el("option", null, text);
    node.value = value === undefined ? text : value;
    return node;
  }
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text != null) node.textContent = text;
    return node;
  }
  function facts(pairs) {
    const list = el("dl");
    for (const [name, value] of pairs) list.append(el("dt", null, name), el("dd", null, value));
    return list;
  }
  function when(r) {
    const at = String(r[F.created_at]);
    return `${at.length > 11 ? at.slice(11) : at} (+${fmt(r[F.t])})`;
  }
  function parsed(text) {
    if (text == null) return null;
    try { return JSON.parse(text); } catch (_) { return null; }
  }
  function pretty(text) {
    if (text == null) return DASH;
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (_) { return String(text); }
  }
  function fmt(ms) {
    const sign = ms < 0 ? "-" : "", v = Math.abs(ms);
    if (v < 10) return `${sign}${v.toFixed(1)} ms`;
    if (v < 1000) return `${sign}${Math.round(v)} ms`;
    if (v < 60000) return `${sign}${(v / 1000).toFixed(2)} s`;
    return sign + minutes(v);
  }
  function tickText(ms, step) {
    const v = Math.abs(ms), sign = ms < 0 ? "-" : "";
    const places = (unit) => Math.max(0, Math.ceil(-Math.log10(step / unit) - 1e-9));
    if (v < 1000 && step < 1000) return `${sign}${v.toFixed(places(1))} ms`;
    if (step < 60000) return `${sign}${(v / 1000).toFixed(places(1000))} s`;
    return sign + minutes(v);
  }
  function minutes(v) {
    const m = Math.floor(v / 60000), s = Math.floor((v % 60000) / 1000);
    if (m < 60) return `${m} min ${String(s).padStart(2, "0")} s`;
    return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
  }

  showRun();
  void plot.getBoundingClientRect();  // force style and layout: the time below includes them
  window.journalTimeline = {
    barCount: bars.length,
    renderMs: performance.now() - began,
    /** Show `key`'s attempt (its last one by default) as a click would; false if absent. */
    select(key, attempt) {
      const same = byKey.get(key) || [];
      const n = attempt === undefined ? same[same.length - 1]
        : same.find((k) => headRow(attempts[k])[F.attempt] === attempt);
      if (n === undefined) return false;
      showAttempt(n, true);
      return true;
    },
  };
  document.documentElement.dataset.timeline = "ready";
})();
