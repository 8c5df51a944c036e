// Audit log: security and admin events, newest first, filtered by user, action and time (in the URL), paged.
import * as api from "../api.js";
import { button, clear, errorBox, field, fmtTime, h, input, link, pager, showFieldErrors, table } from "../dom.js";

export const title = "Audit log";

const PER_PAGE = 50;
const FILTERS = ["user", "action", "since", "until"];

/** detailText shows an event's detail as compact key=value text. */
function detailText(detail) {
  const entries = Object.entries(detail || {});
  if (!entries.length) return "";
  return entries
    .map(([key, value]) => {
      if (value !== null && typeof value === "object") return `${key}=${JSON.stringify(value)}`;
      const text = String(value);
      return `${key}=${/[\s"=]/.test(text) || text === "" ? JSON.stringify(text) : text}`;
    })
    .join(" ");
}

/** localToIso turns a datetime-local value (the browser's time zone) into ISO 8601 UTC for the API. */
function localToIso(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? value : date.toISOString();
}

function filterHref(key, value) {
  return `/admin/audit?${new URLSearchParams({ [key]: value })}`;
}

export async function render({ main, query }) {
  const filters = Object.fromEntries(FILTERS.map((k) => [k, (query.get(k) || "").trim()]));
  const page = Number.parseInt(query.get("page") || "1", 10);
  filters.page = Number.isFinite(page) && page >= 1 ? page : 1;

  const error = errorBox();
  const fields = {
    user: field("User", input("user", { value: filters.user, autocomplete: "off" }), { hint: "Events by or about this user name." }),
    action: field("Action", input("action", { value: filters.action, autocomplete: "off" }), {
      hint: "task.pause, or a prefix ending in * (login.*).",
    }),
    since: field("From", input("since", { type: "datetime-local", value: filters.since, step: 1 })),
    until: field("Until", input("until", { type: "datetime-local", value: filters.until, step: 1 })),
  };
  const clearButton = button("Clear filters", {
    onclick: () => {
      for (const key of FILTERS) {
        fields[key].control.value = "";
        filters[key] = "";
      }
      filters.page = 1;
      load();
    },
  });
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter events", novalidate: true },
    fields.user,
    fields.action,
    fields.since,
    fields.until,
    h("div", { class: "row" }, button("Apply", { type: "submit", class: "primary" }), clearButton),
  );
  const results = h("div");
  main.append(h("h1", {}, "Audit log"), form, error, results);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    for (const key of FILTERS) filters[key] = fields[key].control.value.trim();
    filters.page = 1;
    load();
  });

  function writeFilters() {
    const params = new URLSearchParams();
    for (const key of FILTERS) if (filters[key]) params.set(key, filters[key]);
    if (filters.page > 1) params.set("page", String(filters.page));
    const text = params.toString();
    history.replaceState(null, "", `/admin/audit${text ? `?${text}` : ""}`);
  }

  async function load() {
    writeFilters();
    try {
      const answer = await api.get("/api/admin/audit", {
        user: filters.user,
        action: filters.action,
        since: localToIso(filters.since),
        until: localToIso(filters.until),
        page: filters.page,
        per_page: PER_PAGE,
      });
      error.hide();
      showFieldErrors(null, fields);
      show(answer);
    } catch (err) {
      if (!showFieldErrors(err, fields)) error.show(err);
      else error.hide();
    }
  }

  function show(answer) {
    const filtered = FILTERS.some((k) => filters[k]);
    clear(results).append(
      table({
        caption: "Audit events, newest first",
        empty: filtered ? "No event matches these filters." : "No event recorded yet.",
        columns: [
          { label: "Time", render: (e) => h("span", { title: e.at }, fmtTime(e.at)) },
          { label: "Actor", render: (e) => (e.actor ? link(filterHref("user", e.actor), e.actor, { title: `Events by or about ${e.actor}` }) : "") },
          { label: "Action", render: (e) => link(filterHref("action", e.action), e.action, { class: "mono", title: `Only ${e.action} events` }) },
          { label: "Target", class: "audit-target", render: (e) => e.target || "" },
          { label: "IP", render: (e) => (e.ip ? h("span", { class: "mono" }, e.ip) : "") },
          { label: "Detail", class: "wrap", render: (e) => (Object.keys(e.detail || {}).length ? h("span", { class: "mono audit-detail" }, detailText(e.detail)) : "") },
        ],
        rows: answer.items,
      }),
      answer.total > answer.per_page
        ? pager(answer, (p) => {
          filters.page = p;
          load();
        })
        : h("p", { class: "muted" }, `${answer.total} event${answer.total === 1 ? "" : "s"}`),
    );
  }

  await load();
}
