// Metrics: the few charts an operator looks at first (requests/s, errors/s, latency p95, tasks, reloads) over
// the last hour, from GET /api/admin/metrics (the same numbers as /metrics), refreshed at the server's sample
// interval (`interval_seconds`: server.metrics_interval) while the page is open. The navigation offers the page to
// users whose access rules open that API (`metrics.read`).
import * as api from "../api.js";
import { chart } from "../charts.js";
import { clear, errorMessage, fmtTime, h } from "../dom.js";

export const title = "Metrics";

const DEFAULT_INTERVAL = 10; // seconds: server.metrics_interval's default, until the server has said its own

/** duration says a number of seconds: "1 second", "2.5 seconds". */
function duration(seconds) {
  return seconds === 1 ? "1 second" : `${seconds} seconds`;
}

/** every says a number of seconds as a pace: "every second", "every 10 seconds". */
function every(seconds) {
  return seconds === 1 ? "every second" : `every ${duration(seconds)}`;
}

/** describe is the page's lead for a server that samples every `seconds`. */
function describe(seconds) {
  return `The last hour of this server, one sample ${every(seconds)}: the same numbers a Prometheus server `
    + "scrapes from /metrics. Tasks and reloads count what happened in each sample's interval.";
}

/** series picks one number of every sample as chart points ({t, value}). */
function series(samples, key) {
  return samples.map((s) => ({ t: s.t, value: s[key] }));
}

/** charts are the five cards drawn from one answer of GET /api/admin/metrics. */
function charts(answer) {
  const { samples } = answer;
  const interval = answer.interval_seconds;
  return [
    chart({ title: "Requests per second", points: series(samples, "requests_per_second"), unit: "/s", interval }),
    chart({
      title: "Errors per second", name: "Errors per second (5xx answers)", interval, unit: "/s",
      series: [{ name: "5xx answers", points: series(samples, "errors_per_second"), tone: "danger" }],
    }),
    chart({
      title: "Latency p95", name: "Request latency, 95th percentile", interval, unit: " ms",
      points: series(samples, "latency_p95_ms"), empty: "no requests",
    }),
    chart({
      title: "Tasks", name: "Task runs per interval", kind: "bar", interval,
      series: [
        { name: "succeeded", points: series(samples, "tasks_succeeded"), tone: "ok" },
        { name: "failed", points: series(samples, "tasks_failed"), tone: "danger" },
      ],
    }),
    chart({ title: "Reloads", name: "Plugin reloads per interval", kind: "bar", points: series(samples, "reloads"), interval }),
  ];
}

export async function render({ main }) {
  const status = h("p", { class: "muted metrics-status" });
  const body = h("div", { class: "metrics-body" });
  const lead = h("p", { class: "lead" }, describe(DEFAULT_INTERVAL));
  main.append(h("h1", {}, "Metrics"), lead, status, body);
  let alive = true;
  let timer = null;
  let interval = DEFAULT_INTERVAL;

  async function refresh() {
    timer = null;
    let answer;
    try {
      answer = await api.get("/api/admin/metrics");
    } catch (err) {
      if (!alive) return;
      // 404: metrics are off on this server (the reason says which setting); polling cannot change that.
      const off = err instanceof api.ApiError && err.status === 404;
      clear(body).append(h("div", { class: "alert alert-error metrics-error", role: "alert" }, errorMessage(err)));
      status.textContent = off ? "" : `Trying again ${every(interval)}.`;
      if (!off) timer = setTimeout(refresh, interval * 1000);
      return;
    }
    if (!alive) return;
    interval = answer.interval_seconds;
    lead.textContent = describe(interval);
    clear(body).append(answer.samples.length
      ? h("div", { class: "charts" }, charts(answer))
      : h("p", { class: "metrics-empty" }, `No samples yet; the first comes within ${duration(interval)}.`));
    const last = answer.samples[answer.samples.length - 1];
    status.textContent = `${last ? `Latest sample ${fmtTime(last.t)}` : `Asked ${fmtTime(Date.now() / 1000)}`}; `
      + `the page refreshes ${every(interval)}.`;
    timer = setTimeout(refresh, interval * 1000);
  }

  await refresh();
  return () => {
    alive = false;
    clearTimeout(timer);
  };
}
