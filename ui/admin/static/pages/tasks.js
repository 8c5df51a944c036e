// Tasks: every registered task (core and plugin) with its schedule, next and last run and state; run one now
// (with optional JSON arguments), pause and resume.
import * as api from "../api.js";
import { badge, button, clear, errorBox, errorMessage, field, fmtTime, h, link, table, uid } from "../dom.js";
import { relTime, runLink, shortTime } from "./runs.js";

export const title = "Tasks";
const REFRESH_EVERY = 15_000; // ms

const UNITS = [[86400, "day"], [3600, "hour"], [60, "minute"], [1, "second"]];

/** everyText says an interval in words: 3600 → "every hour", 300 → "every 5 minutes", 90 → "every 90 seconds". */
export function everyText(seconds) {
  const s = Number(seconds);
  for (const [size, unit] of UNITS) {
    if (s >= size && s % size === 0) {
      const n = s / size;
      return n === 1 ? `every ${unit}` : `every ${n} ${unit}s`;
    }
  }
  return `every ${s} seconds`;
}

/** cronText describes the usual crontab shapes in words; anything else is shown as the expression. */
export function cronText(expression) {
  const parts = String(expression).trim().split(/\s+/);
  if (parts.length !== 5) return expression;
  const [minute, hour, day, month, weekday] = parts;
  const rest = day === "*" && month === "*" && weekday === "*";
  const two = (v) => String(v).padStart(2, "0");
  if (rest && hour === "*" && minute === "*") return "every minute";
  if (rest && hour === "*" && /^\*\/\d+$/.test(minute)) return `every ${minute.slice(2)} minutes`;
  if (rest && hour === "*" && /^\d+$/.test(minute)) return `hourly at minute ${minute}`;
  if (rest && /^\d+$/.test(hour) && /^\d+$/.test(minute)) return `daily at ${two(hour)}:${two(minute)}`;
  if (day === "*" && month === "*" && /^\d$/.test(weekday) && /^\d+$/.test(hour) && /^\d+$/.test(minute)) {
    const days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    return `${days[Number(weekday)]}s at ${two(hour)}:${two(minute)}`;
  }
  return "";
}

function scheduleCell(task) {
  let when;
  if (task.cron) {
    const words = cronText(task.cron);
    when = h(
      "span",
      { title: "cron, in the server's local time" },
      words ? `${words} ` : "",
      h("code", { class: words ? "muted" : "" }, `cron ${task.cron}`),
    );
  } else if (task.every) {
    when = everyText(task.every);
  } else {
    when = "on demand";
  }
  return h("span", {}, when, h("span", { class: "cell-note" }, task.kind));
}

function nameCell(task) {
  return h(
    "span",
    {},
    h("code", { class: "task-name" }, task.name),
    h(
      "span",
      { class: "cell-note" },
      task.plugin ? ["plugin ", link(`/admin/plugins/${encodeURIComponent(task.plugin)}`, task.plugin)] : "core",
    ),
  );
}

function nextRunCell(task) {
  if (task.paused && task.kind === "periodic") return h("span", { class: "muted" }, "held: paused");
  if (!task.next_run) return "";
  return h("span", { title: fmtTime(task.next_run) }, relTime(task.next_run), h("span", { class: "cell-note" }, shortTime(task.next_run)));
}

function lastRunCell(task) {
  const run = task.last_run;
  if (!run) return h("span", { class: "muted" }, "never");
  const at = run.finished_at || run.started_at || run.enqueued_at;
  return h(
    "span",
    {},
    badge(run.status),
    h(
      "span",
      { class: "cell-note" },
      runLink(run.id, relTime(at), { "aria-label": `Run ${run.id} of ${task.name}: ${run.status}`, title: fmtTime(at) }),
    ),
  );
}

function stateCell(task) {
  const failures = task.failures
    ? h("span", { class: "cell-note failures" }, `${task.failures} failed run${task.failures === 1 ? "" : "s"} in a row`)
    : h("span", { class: "cell-note" }, "no failures");
  if (!task.paused) return h("span", {}, badge("active"), failures);
  return h(
    "span",
    {},
    badge("paused"),
    task.paused_reason ? h("span", { class: "pause-reason" }, task.paused_reason) : "",
    failures,
  );
}

/** parseJson reads an optional JSON field; `kind` is "array" or "object". Throws an Error naming the field. */
function parseJson(text, kind, label) {
  const trimmed = text.trim();
  if (!trimmed) return kind === "array" ? [] : {};
  let value;
  try {
    value = JSON.parse(trimmed);
  } catch (err) {
    throw new Error(`${label}: not valid JSON (${err.message})`);
  }
  const ok = kind === "array" ? Array.isArray(value) : value !== null && typeof value === "object" && !Array.isArray(value);
  if (!ok) throw new Error(kind === "array" ? `${label}: must be a JSON array, like [1, "a"]` : `${label}: must be a JSON object, like {"days": 7}`);
  return value;
}

/**
 * argumentsDialog asks for a run's arguments in a modal dialog and queues the run; it stays open (with the
 * error inline) until the server accepts, then resolves to the run id, or to null when cancelled.
 */
function argumentsDialog(task) {
  return new Promise((resolve) => {
    const titleId = uid("dlg");
    const error = errorBox();
    const args = field("Positional arguments (JSON array)", h("textarea", { name: "args", rows: 3, class: "json-input", spellcheck: "false" }), {
      hint: 'Optional. For example [7, "archive"].',
    });
    const kwargs = field("Keyword arguments (JSON object)", h("textarea", { name: "kwargs", rows: 3, class: "json-input", spellcheck: "false" }), {
      hint: 'Optional. For example {"days": 7}.',
    });
    const submit = button("Run", { type: "submit", class: "primary" });
    const cancel = button("Cancel");
    const form = h("form", { novalidate: true }, error, args, kwargs, h("div", { class: "actions" }, cancel, submit));
    const dialog = h(
      "dialog",
      { class: "dialog", "aria-labelledby": titleId },
      h("h2", { id: titleId }, `Run ${task.name} with arguments`),
      form,
    );
    const finish = (value) => {
      dialog.close();
      dialog.remove();
      resolve(value);
    };
    cancel.addEventListener("click", () => finish(null));
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      finish(null);
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hide();
      args.setError("");
      kwargs.setError("");
      let body;
      try {
        body = {
          args: parseJson(args.control.value, "array", "Positional arguments"),
          kwargs: parseJson(kwargs.control.value, "object", "Keyword arguments"),
        };
      } catch (err) {
        (err.message.startsWith("Positional") ? args : kwargs).setError(err.message);
        return;
      }
      submit.disabled = true;
      try {
        const answer = await api.post(`/api/admin/tasks/${encodeURIComponent(task.name)}/run`, body);
        finish(answer.run);
      } catch (err) {
        submit.disabled = false;
        error.show(err);
      }
    });
    document.body.appendChild(dialog);
    dialog.showModal();
    args.control.focus();
  });
}

export async function render({ main }) {
  const error = errorBox();
  const notice = h("div", { class: "alert alert-ok", role: "status", hidden: true });
  const results = h("div");
  main.append(
    h("h1", {}, "Tasks"),
    h(
      "p",
      { class: "row" },
      link("/admin/tasks/runs", "Run history"),
      h("span", { class: "spacer" }),
      button("Refresh", { onclick: () => load() }),
    ),
    error,
    notice,
    results,
  );

  function queued(task, runId) {
    error.hide();
    clear(notice).append(
      `Run ${runId} of ${task.name} is queued. `,
      runLink(runId, `Open run ${runId}`),
      " · ",
      link(`/admin/tasks/runs?name=${encodeURIComponent(task.name)}`, `History of ${task.name}`),
    );
    notice.hidden = false;
  }

  function failed(what, err) {
    notice.hidden = true;
    error.show(`${what}: ${errorMessage(err)}`);
  }

  async function act(task, control, action) {
    const label = control.getAttribute("aria-label"); // disabling the button takes the focus away from it
    control.disabled = true;
    try {
      await action();
      await load(label);
    } catch (err) {
      control.disabled = false;
      control.focus();
      failed(task.name, err);
    }
  }

  function actions(task) {
    if (task.allowed === false) {
      // The server says who may: a task acting on something guarded needs that permission too (`requires`).
      const needs = ["tasks.manage", ...task.requires].join(", ");
      return h("span", { class: "muted" }, `Needs ${needs}`);
    }
    const runNow = button("Run now", { class: "small", "aria-label": `Run now: ${task.name}` });
    runNow.addEventListener("click", () => act(task, runNow, async () => {
      const answer = await api.post(`/api/admin/tasks/${encodeURIComponent(task.name)}/run`, { args: [], kwargs: {} });
      queued(task, answer.run);
    }));
    const withArgs = button("With arguments…", { class: "small", "aria-label": `Run with arguments: ${task.name}` });
    withArgs.addEventListener("click", async () => {
      const runId = await argumentsDialog(task);
      if (runId === null) {
        withArgs.focus();
        return;
      }
      queued(task, runId);
      await load(withArgs.getAttribute("aria-label")); // the new row's button gets the focus back
    });
    const toggle = task.paused
      ? button("Resume", { class: "small", "aria-label": `Resume: ${task.name}` })
      : button("Pause", { class: "small", "aria-label": `Pause: ${task.name}` });
    toggle.addEventListener("click", () => act(task, toggle, async () => {
      const verb = task.paused ? "resume" : "pause";
      await api.post(`/api/admin/tasks/${encodeURIComponent(task.name)}/${verb}`);
      notice.hidden = true;
      error.hide();
    }));
    return h("div", { class: "task-actions" }, runNow, withArgs, toggle);
  }

  async function load(focused = document.activeElement?.getAttribute("aria-label")) {
    let tasks;
    try {
      tasks = await api.get("/api/admin/tasks");
    } catch (err) {
      failed("The tasks could not be listed", err);
      return;
    }
    clear(results).append(table({
      caption: "Registered tasks",
      empty: "No task is registered.",
      rowProps: (t) => ({ class: t.paused ? "is-paused" : null }),
      columns: [
        { label: "Task", render: nameCell },
        { label: "Schedule", render: scheduleCell },
        { label: "Next run", render: nextRunCell },
        { label: "Last run", render: lastRunCell },
        { label: "State", class: "wrap", render: stateCell },
        { label: "Actions", render: actions },
      ],
      rows: tasks,
    }));
    // A re-render replaces the buttons: keep the keyboard where it was (Pause becomes Resume on the same row).
    if (focused) {
      const swapped = focused.replace(/^(Pause|Resume): /, (_, verb) => `${verb === "Pause" ? "Resume" : "Pause"}: `);
      const buttons = [...results.querySelectorAll("button")];
      const again = buttons.find((b) => b.getAttribute("aria-label") === focused)
        || buttons.find((b) => b.getAttribute("aria-label") === swapped);
      again?.focus();
    }
  }

  await load();
  // Next and last runs move on by themselves (and "in 5 min" goes stale): look again now and then.
  const timer = setInterval(() => {
    // Not while the user works in the table or a dialog: a re-render would move the ground under them.
    if (document.hidden || document.querySelector("dialog[open]") || results.contains(document.activeElement)) return;
    load();
  }, REFRESH_EVERY);
  return () => clearInterval(timer);
}
