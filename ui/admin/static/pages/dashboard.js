// Dashboard: is this xcore healthy, what runs, where its data lives, and what went wrong lately.
import * as api from "../api.js";
import { badge, errorMessage, fmtDuration, fmtTime, h, link, section } from "../dom.js";

export const title = "Dashboard";

function facts(pairs) {
  return h("dl", { class: "stats" }, pairs.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value ?? "—")]));
}

async function settle(promise) {
  try {
    return { value: await promise };
  } catch (err) {
    return { error: err };
  }
}

export async function render({ main }) {
  main.append(h("h1", {}, "Dashboard"));
  const [health, system, plugins, logs] = await Promise.all([
    // /health answers 503 with the same body when the database is not usable: show it, do not fail.
    settle(fetch("/health", { credentials: "same-origin" }).then((r) => r.json())),
    settle(api.get("/api/admin/system")),
    settle(api.get("/api/admin/plugins")),
    settle(api.get("/api/admin/logs", { level: "WARNING", limit: 10 })),
  ]);
  const grid = h("div", { class: "grid" });
  main.append(grid);

  if (health.value) {
    const hv = health.value;
    const db = hv.database || {};
    const sched = hv.scheduler;
    grid.append(section(
      "Health",
      facts([
        ["Status", badge(hv.status)],
        ["Database", h("span", {}, badge(db.status), " ", db.backend || "", db.latency_ms != null ? ` · ${db.latency_ms} ms` : "")],
        ["Schema", db.revision ? `${db.revision}${db.revision !== db.head ? ` (code expects ${db.head})` : ""}` : "—"],
        ["Scheduler", sched ? h("span", {}, badge(sched.status), " ", sched.consumer) : "not run by this process"],
        ["Queued tasks", sched ? `${sched.queued} waiting, ${sched.scheduled} scheduled` : "—"],
      ]),
    ));
  } else {
    grid.append(section("Health", h("p", { role: "alert" }, errorMessage(health.error))));
  }

  if (system.value) {
    const s = system.value;
    grid.append(section(
      "This xcore",
      facts([
        ["Version", s.version],
        ["Uptime", fmtDuration(s.uptime_seconds)],
        ["Started", fmtTime(s.started_at)],
        ["Data directory", h("code", {}, s.data_dir)],
        ["Database", h("code", {}, s.database)],
        ["Workers", String(s.workers)],
        ["Python", s.python],
      ]),
    ));
  }

  if (plugins.value) {
    // /health counts plugins by state in this worker; the list is the fallback (and names none missing).
    const counts = { ...(health.value?.plugins || {}) };
    if (!health.value?.plugins) for (const p of plugins.value) counts[p.state] = (counts[p.state] || 0) + 1;
    const failedVersions = counts.failed_versions || 0;
    delete counts.failed_versions;
    const states = Object.keys(counts).filter((state) => counts[state] > 0).sort();
    // A failed upgrade leaves the plugin active on its old version: name it, as the server words it.
    const upgrades = plugins.value.filter((p) => p.failed_versions?.length);
    // A plugin whose health() fails still serves: name it with what its check said.
    const failing = plugins.value.filter((p) => p.health?.status === "failing");
    grid.append(section(
      "Plugins",
      states.length
        ? facts([
          ...states.map((state) => [state, String(counts[state])]),
          ["failed versions", String(failedVersions)],
        ])
        : h("p", {}, "No plugin is installed."),
      upgrades.length
        ? h("ul", { class: "plain failed-versions" }, upgrades.map((p) => h(
          "li", {}, link(`/admin/plugins/${encodeURIComponent(p.id)}`, p.id), `: ${p.summary}`,
        )))
        : null,
      failing.length
        ? h("ul", { class: "plain health-failing" }, failing.map((p) => h(
          "li", {}, link(`/admin/plugins/${encodeURIComponent(p.id)}`, p.id),
          `: health failing${p.health.detail ? `: ${p.health.detail}` : ""}`,
        )))
        : null,
      h("p", {}, link("/admin/plugins", "Manage plugins")),
    ));
  }

  const recent = section("Latest warnings and errors");
  if (logs.value) {
    const items = logs.value.items.slice().reverse();
    recent.append(items.length
      ? h("ul", { class: "plain" }, items.map((e) => h(
        "li",
        {},
        badge(e.level),
        " ",
        h("span", { class: "muted" }, fmtTime(e.ts), " · ", e.context || "", " · "),
        e.message,
      )))
      : h("p", {}, "None in the current log file."));
    recent.append(h("p", {}, link("/admin/logs?level=WARNING", "Open the logs")));
  } else {
    recent.append(h("p", { class: "muted" }, `The log is not readable: ${errorMessage(logs.error)}`));
  }
  main.append(recent);
}
