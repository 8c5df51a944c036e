// Task runs: the run journal, newest first, filtered by task and status (in the URL), paged, refreshed while
// runs are still under way.
import * as api from "../api.js";
import { badge, button, clear, errorBox, field, fmtDuration, fmtTime, h, link, pager, select, table } from "../dom.js";

export const title = "Task runs";

/** STATUSES are the states of a run in the journal, in the order a run goes through them. */
export const STATUSES = ["queued", "started", "retrying", "succeeded", "failed", "dropped", "interrupted"];
const UNDER_WAY = new Set(["queued", "started", "retrying"]);
const REFRESH_EVERY = 3000; // ms, while a run on the page is under way
const PER_PAGE = 50;

/** underWay: whether a run may still change (queued, started or retrying). */
export function underWay(run) {
  return UNDER_WAY.has(run.status);
}

/** shorten cuts a text to `max` characters on one line, with an ellipsis. */
export function shorten(text, max = 90) {
  if (!text) return "";
  const line = String(text).replace(/\s+/g, " ").trim();
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

/** runLink is the link to a run's detail page. */
export function runLink(id, text = String(id), props = {}) {
  return link(`/admin/tasks/runs/${encodeURIComponent(id)}`, text, props);
}

function span(seconds) {
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min`;
  const hours = Math.floor(m / 60);
  const rest = m % 60;
  if (hours < 48) return rest ? `${hours} h ${rest} min` : `${hours} h`;
  return `${Math.round(hours / 24)} days`;
}

/** relTime says how far a time is from now, roughly: "in 5 min", "3 h 10 min ago". */
export function relTime(value) {
  if (!value) return "";
  const seconds = (new Date(value).getTime() - Date.now()) / 1000;
  if (Number.isNaN(seconds)) return "";
  if (Math.abs(seconds) < 5) return "now";
  return seconds > 0 ? `in ${span(seconds)}` : `${span(-seconds)} ago`;
}

/** shortTime is a compact local time: the clock alone today, else the day and the minute. */
export function shortTime(value) {
  if (!value) return "";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  if (date.toDateString() === new Date().toDateString()) {
    return date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }
  return date.toLocaleString(undefined, { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
}

function timesCell(run) {
  const stamp = (word, value) => (value
    ? h("span", { class: "run-time", title: fmtTime(value) }, h("span", { class: "muted" }, `${word} `), shortTime(value))
    : null);
  return h(
    "span",
    {},
    stamp("queued", run.enqueued_at),
    stamp("started", run.started_at),
    stamp("finished", run.finished_at),
  );
}

function readFilters(query) {
  const status = query.get("status") || "";
  const page = Number.parseInt(query.get("page") || "1", 10);
  return {
    name: (query.get("name") || "").trim(),
    status: STATUSES.includes(status) ? status : "",
    page: Number.isFinite(page) && page >= 1 ? page : 1,
  };
}

function writeFilters(filters) {
  const params = new URLSearchParams();
  if (filters.name) params.set("name", filters.name);
  if (filters.status) params.set("status", filters.status);
  if (filters.page > 1) params.set("page", String(filters.page));
  const text = params.toString();
  history.replaceState(null, "", `/admin/tasks/runs${text ? `?${text}` : ""}`);
}

export async function render({ main, query }) {
  const filters = readFilters(query);
  let timer = null;
  let alive = true;
  let loading = null;

  const error = errorBox();
  const nameSelect = select("name", [["", "All tasks"]]);
  const statusSelect = select("status", [["", "Any status"], ...STATUSES.map((s) => [s, s])], { value: filters.status });
  const refresh = button("Refresh", { onclick: () => load() });
  const updated = h("span", { class: "muted" });
  const results = h("div");
  main.append(
    h("h1", {}, "Task runs"),
    h("p", {}, link("/admin/tasks", "Registered tasks")),
    h(
      "div",
      { class: "filters", role: "search", "aria-label": "Filter runs" },
      field("Task", nameSelect),
      field("Status", statusSelect),
      refresh,
      updated,
    ),
    error,
    results,
  );

  // The task names come from the registry; a name from the URL that is no longer registered stays choosable.
  let names = [];
  try {
    names = (await api.get("/api/admin/tasks")).map((t) => t.name);
  } catch {
    names = []; // no task host in this process: the history still shows
  }
  if (filters.name && !names.includes(filters.name)) names.push(filters.name);
  for (const name of names.sort()) nameSelect.append(h("option", { value: name }, name));
  nameSelect.value = filters.name;

  const changed = () => {
    filters.name = nameSelect.value;
    filters.status = statusSelect.value;
    filters.page = 1;
    load();
  };
  nameSelect.addEventListener("change", changed);
  statusSelect.addEventListener("change", changed);

  function schedule(answer) {
    clearTimeout(timer);
    timer = null;
    if (alive && answer.items.some(underWay)) timer = setTimeout(() => load({ quiet: true }), REFRESH_EVERY);
  }

  async function load({ quiet = false } = {}) {
    writeFilters(filters);
    const seq = (loading = {});
    if (!quiet) refresh.disabled = true;
    try {
      const answer = await api.get("/api/admin/tasks/runs", {
        name: filters.name,
        status: filters.status,
        page: filters.page,
        per_page: PER_PAGE,
      });
      if (!alive || seq !== loading) return;
      error.hide();
      show(answer);
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
      schedule(answer);
    } catch (err) {
      if (!alive || seq !== loading) return;
      error.show(err);
    } finally {
      if (seq === loading) refresh.disabled = false;
    }
  }

  function show(answer) {
    const filtered = filters.name || filters.status;
    // The table is rebuilt every few seconds while runs are under way: keep the keyboard focus where it was.
    const active = results.contains(document.activeElement) ? document.activeElement : null;
    const keyOf = (el) => `${el.tagName}|${el.getAttribute("aria-label") || el.textContent}`;
    const focusKey = active ? keyOf(active) : null;
    clear(results).append(
      table({
        caption: "Task runs, newest first",
        empty: filtered ? "No run matches these filters." : "No task has run yet.",
        columns: [
          { label: "Run", class: "num", render: (r) => runLink(r.id, String(r.id), { "aria-label": `Run ${r.id}` }) },
          { label: "Task", render: (r) => h("code", {}, r.name) },
          {
            label: "Status",
            render: (r) => h("span", {}, badge(r.status), h("span", { class: "cell-note" }, `attempt ${r.attempt}`)),
          },
          { label: "Queued / started / finished", render: timesCell },
          { label: "Duration", class: "num", render: (r) => (r.duration == null ? "—" : fmtDuration(r.duration)) },
          {
            label: "Error",
            class: "run-error-cell",
            render: (r) => (r.error ? h("span", { class: "run-error", title: r.error }, shorten(r.error)) : ""),
          },
        ],
        rows: answer.items,
      }),
      answer.total > answer.per_page
        ? pager(answer, (page) => {
          filters.page = page;
          load();
        })
        : h("p", { class: "muted" }, `${answer.total} run${answer.total === 1 ? "" : "s"}`),
    );
    if (focusKey) [...results.querySelectorAll("a, button")].find((el) => keyOf(el) === focusKey)?.focus();
  }

  await load();
  return () => {
    alive = false;
    clearTimeout(timer);
  };
}
