/* journal ui: live updates over server-sent events. No libraries, no inline script.
 *
 * A stream only says that something changed; the new rows are then fetched as HTML the server
 * rendered with its templates (which escape every recorded value), so recorded text is never
 * turned into markup here. The run's timeline is the HTML export's page in a frame, drawn
 * again when the run records more, keeping the step that was selected. */
(function () {
  "use strict";
  const body = document.body;
  const live = document.getElementById("live");

  /** Follows the stream at `url()` while the page is shown. A browser opens at most six
   * connections to a server and each stream holds one, so a page in a background tab lets its
   * stream go (more tabs would stay blank), and calls `caughtUp` when it is shown again. */
  function connect(url, handlers, caughtUp) {
    let source = null;
    function open() {
      const opened = source = new EventSource(url());
      live.dataset.state = "connecting";
      opened.addEventListener("open", () => { live.dataset.state = "on"; });
      opened.addEventListener("error", () => {
        live.dataset.state = opened.readyState === EventSource.CLOSED ? "off" : "connecting";
      });
      for (const [name, handler] of Object.entries(handlers)) {
        opened.addEventListener(name, (e) => handler(JSON.parse(e.data)));
      }
    }
    function close() {
      if (source !== null) source.close();
      source = null;
      live.dataset.state = "paused";
    }
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) close();
      else if (source === null) { open(); caughtUp(); }
    });
    window.addEventListener("pagehide", close);
    if (document.hidden) close(); else open();
  }

  async function fragment(url) {
    const response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response.text();
  }

  /** `task` run one at a time; calls while it runs fold into one more run after it. */
  function serial(task) {
    let running = false, again = false;
    return async function () {
      if (running) { again = true; return; }
      running = true;
      try {
        do { again = false; await task(); } while (again);
      } catch (err) {
        console.warn("journal ui:", err.message);
      } finally {
        running = false;
      }
    };
  }

  /** `fn` at most once per `ms`, always after the last call. */
  function throttled(fn, ms) {
    let timer = null;
    return () => {
      if (timer === null) timer = setTimeout(() => { timer = null; fn(); }, ms);
    };
  }

  /** Draws the timeline in `frame` again, with the run's new rows: the next one loads in a
   * hidden frame over it and takes its place once drawn, with the step that was selected
   * selected again, so the timeline never goes blank. A big run takes seconds to load and
   * draw, so one load runs at a time, and the next waits twice as long as the last took. */
  function timelineFollower(frame) {
    let shown = frame, loading = null, timer = null, wanted = false, notBefore = 0;
    function start() {
      timer = null;
      wanted = false;
      let seq = null;
      try {
        const chosen = shown.contentDocument.querySelector(".bar.selected, .marker.selected");
        if (chosen) seq = chosen.dataset.seq;
      } catch (_) { /* not loaded yet */ }
      const began = performance.now();
      const next = loading = shown.cloneNode(false);
      next.removeAttribute("id");
      next.classList.add("next");
      next.addEventListener("load", () => {
        const doc = next.contentDocument;
        if (seq !== null && doc) {
          const sel = `.bar[data-seq="${CSS.escape(seq)}"], .marker[data-seq="${CSS.escape(seq)}"]`;
          const again = doc.querySelector(sel);
          if (again) again.click();
        }
        shown.remove();
        next.id = "timeline";
        next.classList.remove("next");
        shown = next;
        loading = null;
        const took = performance.now() - began;
        notBefore = performance.now() + Math.max(700, 2 * took);
        if (wanted) request();
      }, { once: true });
      shown.after(next);
    }
    function request() {
      if (loading !== null || timer !== null) { wanted = true; return; }
      timer = setTimeout(start, Math.max(0, notBefore - performance.now()));
    }
    return request;
  }

  if (body.dataset.page === "runs" && body.dataset.live) {
    const rows = document.getElementById("runs-rows");
    const refresh = serial(async () => { rows.innerHTML = await fragment(body.dataset.rows); });
    connect(() => body.dataset.live, { runs: refresh }, refresh);
  }

  if (body.dataset.page === "run") {
    const rows = document.getElementById("step-rows");
    const count = document.getElementById("event-count");
    const summary = document.getElementById("run-summary");
    const outcome = document.getElementById("run-outcome");
    const frame = document.getElementById("timeline");
    let lastSeq = Number(body.dataset.lastSeq);
    const appendRows = serial(async () => {
      const html = await fragment(`${body.dataset.rows}&after=${lastSeq}`);
      const before = rows.lastElementChild;
      rows.insertAdjacentHTML("beforeend", html);
      const last = rows.lastElementChild;
      if (last && last !== before && last.dataset.seq) lastSeq = Number(last.dataset.seq);
      count.textContent = rows.querySelectorAll("tr.step").length;
    });
    // The header (status, steps, duration) follows every event; the outcome and the forks
    // change only with the run's status.
    const refreshSummary = throttled(serial(async () => {
      summary.innerHTML = await fragment(body.dataset.summary);
    }), 500);
    const refreshOutcome = serial(async () => {
      outcome.innerHTML = await fragment(body.dataset.outcome);
    });
    const reloadTimeline = timelineFollower(frame);
    const steps = () => { appendRows(); refreshSummary(); reloadTimeline(); };
    const run = () => { refreshSummary(); refreshOutcome(); reloadTimeline(); };
    connect(() => `${body.dataset.live}&after=${lastSeq}`, { steps, run }, () => {
      appendRows(); run();
    });
  }
})();
