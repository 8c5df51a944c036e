// One task run: every fact the journal keeps, its arguments, the error and the traceback. Refreshed while the
// run is still under way.
import * as api from "../api.js";
import { badge, clear, errorBox, fmtDuration, fmtTime, h, link, section } from "../dom.js";
import { underWay } from "./runs.js";

export const title = "Task run";
const REFRESH_EVERY = 2000; // ms, while the run is queued, started or retrying

function facts(pairs) {
  return h("dl", { class: "stats" }, pairs.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value ?? "—")]));
}

export async function render({ main, params }) {
  const id = params.id;
  const heading = h("h1", {}, `Run ${id}`);
  const error = errorBox();
  const body = h("div");
  main.append(heading, error, body);
  if (!/^[1-9][0-9]*$/.test(id)) {
    error.show(`"${id}" is not a run number.`);
    body.append(h("p", {}, link("/admin/tasks/runs", "Back to the run history")));
    return;
  }
  let timer = null;
  let alive = true;

  function show(run) {
    const history = `/admin/tasks/runs?name=${encodeURIComponent(run.name)}`;
    document.title = `Run ${run.id} · xcore`;
    clear(body).append(
      h(
        "p",
        { class: "row" },
        link(history, `All runs of ${run.name}`),
        " · ",
        link("/admin/tasks/runs", "Run history"),
        " · ",
        link("/admin/tasks", "Tasks"),
      ),
      section(
        "Facts",
        facts([
          ["Task", h("code", {}, run.name)],
          ["Plugin", run.plugin ? link(`/admin/plugins/${encodeURIComponent(run.plugin)}`, run.plugin) : "core"],
          ["Status", h("span", { class: "run-status" }, badge(run.status), underWay(run) ? h("span", { class: "muted" }, " (this page follows it)") : "")],
          ["Attempt", String(run.attempt)],
          ["Queued", fmtTime(run.enqueued_at)],
          ["Started", fmtTime(run.started_at)],
          ["Finished", fmtTime(run.finished_at)],
          ["Duration", run.duration == null ? "—" : fmtDuration(run.duration)],
          ["Process", run.pid == null ? "—" : `pid ${run.pid}`],
        ]),
      ),
      section(
        "Arguments",
        run.args ? h("pre", { class: "run-args" }, run.args) : h("p", { class: "muted" }, "None."),
      ),
      run.error
        ? section("Error", h("pre", { class: "run-error-text" }, run.error))
        : null,
      run.traceback
        ? section("Traceback", h("pre", { class: "traceback" }, run.traceback))
        : null,
    );
  }

  async function load() {
    try {
      const run = await api.get(`/api/admin/tasks/runs/${id}`);
      if (!alive) return;
      error.hide();
      show(run);
      if (underWay(run)) timer = setTimeout(load, REFRESH_EVERY);
    } catch (err) {
      if (!alive) return;
      error.show(err);
      if (!body.firstChild) body.append(h("p", {}, link("/admin/tasks/runs", "Back to the run history")));
    }
  }

  await load();
  return () => {
    alive = false;
    clearTimeout(timer);
  };
}
