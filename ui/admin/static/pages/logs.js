// Logs: the newest entries of the JSON-lines log, filtered by minimum level, context and text (in the URL), with
// per-level and per-context counts, a live tail that polls for new entries, and a download of the current file.
import * as api from "../api.js";
import { badge, button, clear, errorBox, field, h, input, select } from "../dom.js";

export const title = "Logs";

const LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];
const FIRST_LOAD = 500; // entries shown when the page (or a filter) loads
const MAX_LINES = 1000; // entries kept on the page while the live tail appends
const POLL_EVERY = 2000; // ms
const SEARCH_DELAY = 350; // ms after the last keystroke
const KNOWN_KEYS = new Set(["ts", "level", "context", "logger", "message", "pid", "exc"]);

function pad(n, size = 2) {
  return String(n).padStart(size, "0");
}

/** logTime shows an entry's local time to the millisecond, with the day when it is not today (full date in
 * the title). */
function logTime(ts) {
  const date = new Date(ts);
  if (!ts || Number.isNaN(date.getTime())) return String(ts ?? "");
  const clock = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
  return date.toDateString() === new Date().toDateString() ? clock : `${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${clock}`;
}

function fullTime(ts) {
  const date = new Date(ts);
  return Number.isNaN(date.getTime()) ? String(ts ?? "") : `${date.toLocaleString()} (${ts})`;
}

function extraText(value) {
  if (value === null || value === undefined) return String(value);
  if (typeof value === "object") return JSON.stringify(value);
  const text = String(value);
  return /[\s"=]/.test(text) || text === "" ? JSON.stringify(text) : text;
}

/** line renders one log entry: time, level, context, message; other fields muted below, a traceback folded. */
function line(entry) {
  const extras = Object.entries(entry).filter(([key]) => !KNOWN_KEYS.has(key));
  return h(
    "li",
    { class: "log-line" },
    h("span", { class: "log-time", title: fullTime(entry.ts) }, logTime(entry.ts)),
    h("span", {}, badge(entry.level || "INFO")),
    h("span", { class: "log-context", title: entry.logger ? `logger ${entry.logger}` : null }, entry.context || "—"),
    h(
      "span",
      { class: "message" },
      String(entry.message ?? ""),
      extras.length
        ? h("span", { class: "log-extra" }, extras.map(([key, value]) => `${key}=${extraText(value)}`).join("  "))
        : null,
      entry.exc ? h("details", { class: "log-exc" }, h("summary", {}, "Traceback"), h("pre", {}, String(entry.exc))) : null,
    ),
  );
}

function readFilters(query) {
  const level = (query.get("level") || "").toUpperCase();
  return {
    level: LEVELS.includes(level) ? level : "",
    context: query.get("context") || "",
    q: query.get("q") || "",
    live: query.get("live") === "1",
  };
}

function writeFilters(filters) {
  const params = new URLSearchParams();
  if (filters.level) params.set("level", filters.level);
  if (filters.context) params.set("context", filters.context);
  if (filters.q) params.set("q", filters.q);
  if (filters.live) params.set("live", "1");
  const text = params.toString();
  history.replaceState(null, "", `/admin/logs${text ? `?${text}` : ""}`);
}

export async function render({ main, query }) {
  const filters = readFilters(query);
  let cursor = null;
  let generation = 0; // bumped by every full load: a poll answer from before it is dropped
  let pollTimer = null;
  let searchTimer = null;
  let alive = true;

  const error = errorBox();
  const levelSelect = select("level", [["", "All levels"], ...LEVELS.map((l) => [l, `${l} and above`])], { value: filters.level });
  const contextSelect = select("context", [["", "All contexts"]]);
  const search = input("q", { type: "search", value: filters.q, autocomplete: "off" });
  const live = h("input", { type: "checkbox", name: "live", id: "logs-live", checked: filters.live });
  const levelCounts = h("div", { class: "counts", role: "group", "aria-label": "Entries per level" });
  const contextCounts = h("div", { class: "counts", role: "group", "aria-label": "Entries per context" });
  const summary = h("p", { class: "muted log-summary" });
  const download = h("a", { href: "/api/admin/logs/download", download: "", class: "download-link" }, "Download the current log file");
  const lines = h("ol", { class: "log-lines", tabindex: "0", "aria-label": "Log entries, oldest first" });

  main.append(
    h("h1", {}, "Logs"),
    h(
      "div",
      { class: "filters", role: "search", "aria-label": "Filter the log" },
      field("Minimum level", levelSelect),
      field("Context", contextSelect),
      field("Search", search),
      h("div", { class: "field check live-toggle" }, live, h("label", { for: "logs-live" }, "Live")),
    ),
    h("div", { class: "log-counts" }, h("span", { class: "muted" }, "Levels:"), levelCounts),
    h("div", { class: "log-counts" }, h("span", { class: "muted" }, "Contexts:"), contextCounts),
    error,
    h(
      "div",
      { class: "row log-summary-row" },
      summary,
      h("span", { class: "spacer" }),
      download,
    ),
    lines,
  );

  // --- counts (updated in place, so a focused count button keeps the focus while the tail polls) -----------
  const countButtons = new Map(); // "level:INFO" / "context:api" -> button

  function countButton(kind, key, n, box, order) {
    const id = `${kind}:${key}`;
    let el = countButtons.get(id);
    if (!el) {
      el = button("", {
        class: "small count",
        onclick: () => {
          filters[kind] = filters[kind] === key ? "" : key;
          (kind === "level" ? levelSelect : contextSelect).value = filters[kind];
          reload();
        },
      });
      countButtons.set(id, el);
    }
    el.textContent = `${key} ${n}`;
    el.disabled = kind === "level" && !LEVELS.includes(key); // a level name the API cannot filter by
    el.dataset.order = order;
    el.setAttribute("aria-pressed", String(filters[kind] === key));
    el.title = kind === "level"
      ? (filters.level === key ? "Show every level again" : `Show ${key} and above`)
      : (filters.context === key ? "Show every context again" : `Show only ${key}`);
    if (el.parentNode !== box) box.append(el);
    return el;
  }

  function sortBox(box) {
    const sorted = [...box.children].sort((a, b) => a.dataset.order.localeCompare(b.dataset.order, undefined, { numeric: true }));
    if (sorted.some((el, i) => box.children[i] !== el)) {
      const focused = document.activeElement;
      box.append(...sorted);
      if (focused && box.contains(focused)) focused.focus();
    }
  }

  function showCounts(counts) {
    const levels = counts?.levels || {};
    const contexts = counts?.contexts || {};
    for (const level of LEVELS) {
      if (levels[level] || filters.level === level) countButton("level", level, levels[level] || 0, levelCounts, String(LEVELS.indexOf(level)));
    }
    for (const level of Object.keys(levels).filter((l) => !LEVELS.includes(l))) {
      countButton("level", level, levels[level], levelCounts, `9${level}`);
    }
    const names = Object.keys(contexts);
    if (filters.context && !names.includes(filters.context)) names.push(filters.context);
    for (const name of names.sort()) countButton("context", name, contexts[name] || 0, contextCounts, name);
    sortBox(levelCounts);
    sortBox(contextCounts);
    // The context menu offers every context seen in the file.
    const have = new Set([...contextSelect.options].map((o) => o.value));
    for (const name of names.sort()) {
      if (!have.has(name)) contextSelect.append(h("option", { value: name }, name));
    }
    contextSelect.value = filters.context;
  }

  // --- the lines ------------------------------------------------------------------------------------------
  function atBottom() {
    return lines.scrollHeight - lines.scrollTop - lines.clientHeight < 24;
  }

  function append(items, { scroll }) {
    if (!items.length) return;
    lines.querySelector(".log-empty")?.remove();
    const fragment = document.createDocumentFragment();
    for (const entry of items) fragment.append(line(entry));
    lines.append(fragment);
    while (lines.children.length > MAX_LINES) lines.firstElementChild.remove();
    if (scroll) lines.scrollTop = lines.scrollHeight;
  }

  function describe(shown, truncatedNote = "") {
    const filtered = filters.level || filters.context || filters.q;
    const what = `${filtered ? "matching " : ""}${shown === 1 ? "entry" : "entries"}`;
    summary.textContent = `${shown} ${what} shown, oldest first${shown >= FIRST_LOAD ? ` (the newest ${FIRST_LOAD})` : ""}.`
      + (filters.live ? " Live: new entries appear below." : "") + truncatedNote;
  }

  async function reload() {
    writeFilters(filters);
    const mine = ++generation;
    try {
      const answer = await api.get("/api/admin/logs", {
        level: filters.level, context: filters.context, q: filters.q, limit: FIRST_LOAD,
      });
      if (!alive || mine !== generation) return;
      error.hide();
      cursor = answer.cursor;
      clear(lines);
      if (!answer.items.length) lines.append(h("li", { class: "log-empty muted" }, "No entry matches these filters."));
      append(answer.items, { scroll: true });
      showCounts(answer.counts);
      describe(answer.items.length);
      download.title = answer.file;
    } catch (err) {
      if (!alive || mine !== generation) return;
      error.show(err);
    }
  }

  async function poll() {
    pollTimer = null;
    if (!alive || !filters.live) return;
    const mine = generation;
    if (cursor) {
      try {
        const answer = await api.get("/api/admin/logs", {
          level: filters.level, context: filters.context, q: filters.q, limit: MAX_LINES, after: cursor,
        });
        if (alive && mine === generation && filters.live) {
          error.hide();
          cursor = answer.cursor;
          const follow = atBottom();
          append(answer.items, { scroll: follow });
          showCounts(answer.counts);
          describe(
            lines.querySelectorAll(".log-line").length,
            answer.truncated ? " Some entries were skipped: more were written than one update shows." : "",
          );
        }
      } catch (err) {
        if (alive) error.show(err);
      }
    }
    // setLive may have started another round meanwhile: then that one goes on.
    if (alive && filters.live && !pollTimer) pollTimer = setTimeout(poll, POLL_EVERY);
  }

  function setLive(on) {
    filters.live = on;
    writeFilters(filters);
    clearTimeout(pollTimer);
    pollTimer = null;
    if (on) pollTimer = setTimeout(poll, POLL_EVERY);
    describe(lines.querySelectorAll(".log-line").length);
  }

  levelSelect.addEventListener("change", () => {
    filters.level = levelSelect.value;
    reload();
  });
  contextSelect.addEventListener("change", () => {
    filters.context = contextSelect.value;
    reload();
  });
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      const q = search.value.trim();
      if (q === filters.q) return;
      filters.q = q;
      reload();
    }, SEARCH_DELAY);
  });
  live.addEventListener("change", () => setLive(live.checked));

  await reload();
  if (filters.live) setLive(true);
  return () => {
    alive = false;
    clearTimeout(pollTimer);
    clearTimeout(searchTimer);
  };
}
