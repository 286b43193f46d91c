// Cloud-X dashboard: makes the server-rendered pages live. Pages read fully without this file; it only follows
// the API's Server-Sent Event streams (with the session cookie) and redraws what they change. Text from hosts is
// only ever set as textContent, never parsed as HTML; the one HTML it inserts is this site's own page, re-fetched.
"use strict";

(function () {
  const FINAL = new Set(["successful", "failed", "canceled", "timeout", "error", "deleted"]);

  function setJob(root, job) {
    root.querySelectorAll("[data-field=status]").forEach((el) => {
      el.textContent = job.status;
      el.className = "status status-" + job.status;
    });
    if (typeof job.progress === "number") {
      root.querySelectorAll("progress[data-field=progress]").forEach((el) => { el.value = job.progress; el.textContent = job.progress + " %"; });
      root.querySelectorAll("[data-field=progress-text]").forEach((el) => { el.textContent = job.progress + " %"; });
    }
  }

  function rowsOf(jobId) {
    return Array.from(document.querySelectorAll("[data-job-id]")).filter((el) => el.dataset.jobId === jobId);
  }

  // A stream that the browser reconnects by itself after a network error (with Last-Event-ID); one the server refused
  // (signed out: 401, too many streams: 429) is closed for good by the browser: tried again here, a few times, slower
  // each time, and said so on the page.
  function stream(url, handlers, onState) {
    let source = null;
    let failures = 0;
    let after = null;
    const open = () => {
      source = new EventSource(after === null ? url() : url(after));
      source.addEventListener("open", () => { failures = 0; onState("following…"); });
      source.addEventListener("error", () => {
        if (source.readyState !== EventSource.CLOSED) { onState("reconnecting…"); return; }
        failures += 1;
        if (failures > 5) { onState("not live: reload the page (or sign in again)"); return; }
        onState("not live: trying again…");
        window.setTimeout(open, Math.min(30000, 1000 * 2 ** failures));
      });
      Object.entries(handlers).forEach(([name, handle]) => source.addEventListener(name, (message) => {
        if (message.lastEventId) after = message.lastEventId;
        handle(message, () => source.close());
      }));
    };
    open();
    window.addEventListener("pagehide", () => source && source.close());
  }

  // Back to a page from the browser's history cache: its streams were closed when it was left, so load it again.
  window.addEventListener("pageshow", (event) => { if (event.persisted) window.location.reload(); });

  // Lists (overview, scans, jobs): every job's changes over one stream per tab. A job the page does not list, created
  // after the page was rendered, shows the "new jobs" note.
  function followAll() {
    const list = document.querySelector("[data-jobs-stream]");
    if (!list) return;
    const note = document.querySelector("[data-new-jobs]");
    const rendered = document.documentElement.dataset.rendered || "";
    stream(() => "/api/stream", {
      job: (message) => {
        const job = JSON.parse(message.data);
        const rows = rowsOf(job.job_id);
        rows.forEach((row) => setJob(row, job));
        if (!rows.length && note && !FINAL.has(job.status) && job.created_at > rendered) note.hidden = false;
      },
    }, () => {});
  }

  // As the server renders it: HTML parsing turns the CR LF of ansible's output into LF, so the stream's text must too.
  function eventLine(event) {
    if (event.stdout) return event.stdout.replace(/\r\n?/g, "\n");
    return "[" + event.event + "]" + (event.host ? " " + event.host : "") + (event.task ? " " + event.task : "");
  }

  // After a job ends: this page again from the server, and the parts it names swapped in.
  async function refresh(selectors) {
    const response = await fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    selectors.split(",").forEach((selector) => {
      const now = document.querySelector(selector);
      const then = fresh.querySelector(selector);
      if (now && then) now.replaceWith(document.importNode(then, true));
    });
    document.dispatchEvent(new CustomEvent("cloudx:refreshed"));
  }

  // A job's page: its events as they are stored, its progress, and its end; resumed after a reconnect from the last
  // event received (Last-Event-ID, or ?after= when the page opens the stream again itself). The output keeps its
  // newest MAX_LINES lines.
  const MAX_LINES = 2000;

  // A running job's results per host so far (queue.jobs.HOST_RESULTS): a row per host, made as its first event comes.
  const HOST_RESULTS = { runner_on_ok: "ok", runner_on_failed: "failed", runner_on_unreachable: "unreachable", runner_on_skipped: "skipped" };

  function countHost(body, event) {
    const column = HOST_RESULTS[event.event];
    if (!event.host || !column) return;
    let row = Array.from(body.rows).find((r) => r.dataset.host === event.host);
    if (!row) {
      row = body.insertRow();
      row.dataset.host = event.host;
      row.insertCell().textContent = event.host;
      ["ok", "failed", "unreachable", "skipped"].forEach((name) => { const cell = row.insertCell(); cell.dataset.count = name; cell.textContent = "0"; });
      row.insertCell().dataset.field = "task";
    }
    const cell = row.querySelector("[data-count=" + column + "]");
    cell.textContent = String(Number(cell.textContent) + 1);
    row.querySelector("[data-field=task]").textContent = event.task || "";
  }

  function followJob() {
    const output = document.querySelector("[data-job-stream]");
    const panel = document.querySelector("[data-reload-on-end]");
    if (!output || !panel) return;
    const status = panel.querySelector("[data-field=status]");
    const state = output.querySelector("[data-stream-state]");
    if (status && FINAL.has(status.textContent.trim())) return;
    const lines = output.querySelector("[data-lines]");
    const url = (after) => output.dataset.jobStream + "?after=" + encodeURIComponent(after || output.dataset.after || "0");
    const perHost = document.querySelector("[data-host-progress] tbody");
    stream(url, {
      ansible: (message) => {
        const event = JSON.parse(message.data);
        if (perHost) countHost(perHost, event);
        const atEnd = lines.scrollHeight - lines.scrollTop - lines.clientHeight < 40;
        lines.append(document.createTextNode(eventLine(event) + "\n"));
        while (lines.childNodes.length > MAX_LINES) lines.firstChild.remove();
        if (atEnd) lines.scrollTop = lines.scrollHeight;
      },
      progress: (message) => setJob(panel, JSON.parse(message.data)),
      end: (message, close) => {
        close();
        const job = JSON.parse(message.data);
        setJob(panel, job);
        state.textContent = "ended: " + job.status;
        refresh(panel.dataset.reloadOnEnd);
      },
    }, (text) => { state.textContent = text; });
  }

  // The overview's charts of this machine: the monitor's own history, sampled again every 5 seconds.
  function monitor() {
    const box = document.querySelector("[data-monitor]");
    if (!box) return;
    const draw = (data) => {
      box.querySelectorAll("[data-metric]").forEach((figure) => {
        const points = data.metrics[figure.dataset.metric] || [];
        const values = points.map((p) => p.value);
        const top = Math.max(figure.dataset.metric.endsWith("percent") ? 100 : 1, ...values);
        const step = 300 / Math.max(points.length - 1, 1);
        figure.querySelector("polyline").setAttribute("points", values.map((v, i) => (i * step).toFixed(1) + "," + (78 - (v / top) * 76).toFixed(1)).join(" "));
        const last = values[values.length - 1];
        figure.querySelector("[data-field=value]").textContent = last === undefined ? "–" : figure.dataset.metric.endsWith("percent") ? last.toFixed(1) + " %" : formatRate(last);
      });
    };
    const sample = async () => {
      try {
        const response = await fetch(box.dataset.monitor, { credentials: "same-origin" });
        if (response.ok) draw(await response.json());
      } catch (error) { /* the next sample tries again */ }
    };
    sample();
    const timer = window.setInterval(sample, 5000);
    window.addEventListener("pagehide", () => window.clearInterval(timer));
  }

  function formatRate(bytes) {
    const units = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
    let i = 0;
    while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i += 1; }
    return bytes.toFixed(i ? 1 : 0) + " " + units[i];
  }

  // The scan form: only the chosen tool's scan types.
  function scanTypes() {
    const tool = document.getElementById("tool");
    const type = document.getElementById("scan_type");
    if (!tool || !type) return;
    const sync = () => {
      type.querySelectorAll("optgroup").forEach((group) => {
        const own = group.label === tool.value;
        group.hidden = !own;
        group.disabled = !own;
      });
      const chosen = type.selectedOptions[0];
      if (!chosen || chosen.dataset.tool !== tool.value) {
        const first = type.querySelector("option[data-tool='" + tool.value + "']");
        if (first) first.selected = true;
      }
    };
    tool.addEventListener("change", sync);
    sync();
  }

  document.addEventListener("DOMContentLoaded", () => {
    followAll();
    followJob();
    monitor();
    scanTypes();
  });
})();
