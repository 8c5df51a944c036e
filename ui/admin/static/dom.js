// Small DOM helpers shared by every page. Text always goes in as text nodes, never as HTML, so nothing a
// plugin, a log line or a user name contains can run as script.

let nextId = 0;

/** uid returns a page-unique id for tying labels to controls. */
export function uid(prefix = "f") {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

/**
 * h builds an element. `props` keys: `class`, `text`, `on<event>` (listeners), `dataset`, `style` (object),
 * booleans and strings as attributes (false/null/undefined are left out). Children may be nodes, strings,
 * numbers, arrays, or null/false (skipped).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style" && typeof value === "object") Object.assign(el.style, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== "string" && key !== "list") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** text is a text node holding `value` as text (never parsed as HTML). */
export function text(value) {
  return document.createTextNode(String(value ?? ""));
}

/** clear empties an element and returns it. */
export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** link is an in-app link: a real <a href> (so it works with the keyboard, middle-click and copy), routed
 * without a page load by the app's click handler. */
export function link(href, text, props = {}) {
  return h("a", { href, ...props }, text);
}

export function fmtTime(value) {
  if (!value) return "—";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Number(seconds);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} days ${hours % 24} h`;
}

/** badge shows a state word (active, failed, paused...) with a colour class of the same name. */
export function badge(state, title) {
  const word = String(state ?? "—");
  return h("span", { class: `badge badge-${word.replace(/[^a-z0-9_-]/gi, "")}`, title }, word);
}

/**
 * table renders rows. columns: [{label, key?, render?(row) → node|string, class?}]. `caption` names the table
 * for screen readers (visually hidden unless `showCaption`).
 */
export function table({ columns, rows, empty = "Nothing here yet.", caption, showCaption = false, rowProps }) {
  const thead = h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.class }, c.label))));
  const body = h("tbody");
  if (!rows.length) {
    body.appendChild(h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, empty)));
  }
  for (const row of rows) {
    const tr = h("tr", rowProps ? rowProps(row) : {});
    for (const c of columns) {
      const value = c.render ? c.render(row) : row[c.key];
      tr.appendChild(h("td", { class: c.class }, value === null || value === undefined || value === "" ? "—" : value));
    }
    body.appendChild(tr);
  }
  return h(
    "div",
    { class: "table-wrap" },
    h("table", {}, caption ? h("caption", { class: showCaption ? "" : "sr-only" }, caption) : null, thead, body),
  );
}

/**
 * field wraps a control with its label, an optional hint and a slot for its error message. The control gets
 * an id (if it has none), `aria-describedby` for the hint and error, and `aria-invalid` when `setError` is
 * called on the returned object.
 */
export function field(label, control, { hint } = {}) {
  if (!control.id) control.id = uid(control.name || "f");
  const errorEl = h("p", { class: "field-error", id: `${control.id}-error`, hidden: true });
  // A hint is a sentence, or a list of them (the rules of a policy), shown as a list.
  const hintEl = !hint ? null : Array.isArray(hint)
    ? h("ul", { class: "hint", id: `${control.id}-hint` }, hint.map((line) => h("li", {}, line)))
    : h("p", { class: "hint", id: `${control.id}-hint` }, hint);
  control.setAttribute("aria-describedby", [hintEl?.id, errorEl.id].filter(Boolean).join(" "));
  const wrap = h("div", { class: "field" }, h("label", { for: control.id }, label), control, hintEl, errorEl);
  wrap.control = control;
  wrap.setError = (message) => {
    errorEl.textContent = message || "";
    errorEl.hidden = !message;
    if (message) control.setAttribute("aria-invalid", "true");
    else control.removeAttribute("aria-invalid");
  };
  return wrap;
}

export function input(name, props = {}) {
  return h("input", { name, type: "text", ...props });
}

/** newPassword is a field for a new password, with the limits and the rules of the server's password policy
 * (`policy.password` from api.policy()) and, after them, `note`. */
export function newPassword(label, name, passwordPolicy, note = "") {
  const control = input(name, {
    type: "password", autocomplete: "new-password", required: true,
    minlength: passwordPolicy.min_length, maxlength: passwordPolicy.max_length,
  });
  return field(label, control, { hint: [...passwordPolicy.rules, note].filter(Boolean) });
}

export function select(name, options, props = {}) {
  const el = h("select", { name, ...props });
  for (const option of options) {
    const [value, text] = Array.isArray(option) ? option : [option, option];
    el.appendChild(h("option", { value }, text));
  }
  if (props.value !== undefined) el.value = props.value;
  return el;
}

export function button(text, props = {}) {
  return h("button", { type: "button", ...props }, text);
}

/** errorMessage is the sentence to show for an error: the server's problem `detail`, or a network failure. */
export function errorMessage(err) {
  if (!err) return "";
  if (err.problem?.detail) return err.problem.detail;
  return err.message || String(err);
}

/** errorBox is an inline error (role=alert, read out when it appears). Empty and hidden until `show`. */
export function errorBox() {
  const el = h("div", { class: "alert alert-error", role: "alert", hidden: true });
  el.show = (err) => {
    const message = typeof err === "string" ? err : errorMessage(err);
    el.textContent = message;
    el.hidden = !message;
  };
  el.hide = () => el.show("");
  return el;
}

/**
 * showFieldErrors puts the problem's per-field errors under the matching fields (by name); returns true when
 * at least one matched. `fields` maps a field name to the object `field()` returned.
 */
export function showFieldErrors(err, fields) {
  for (const f of Object.values(fields)) f.setError("");
  let matched = false;
  for (const item of err?.problem?.errors || []) {
    const name = String(item.field || "").split(".").pop();
    if (fields[name]) {
      fields[name].setError(item.message);
      matched = true;
    }
  }
  return matched;
}

/** toast shows a short message in the live region for a few seconds. */
export function toast(message, kind = "ok") {
  const box = document.getElementById("toasts");
  const el = h("div", { class: `toast toast-${kind}` }, message);
  box.appendChild(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
}

/**
 * confirmDialog asks a question in a modal <dialog> (focus moves into it, Escape cancels) and resolves to
 * true when confirmed. `body` may be a string or nodes; `extra` nodes (a checkbox...) go above the buttons and
 * `collect()` reads them when confirmed: the promise then resolves to its result instead of true.
 */
export function confirmDialog({ title, body, confirmLabel = "Confirm", danger = false, extra = null, collect = null }) {
  return new Promise((resolve) => {
    const titleId = uid("dlg");
    const confirm = button(confirmLabel, { class: danger ? "danger" : "primary" });
    const cancel = button("Cancel");
    const dialog = h(
      "dialog",
      { class: "dialog", "aria-labelledby": titleId },
      h("h2", { id: titleId }, title),
      h("div", { class: "dialog-body" }, body),
      extra,
      h("div", { class: "actions" }, cancel, confirm),
    );
    const finish = (value) => {
      dialog.close();
      dialog.remove();
      resolve(value);
    };
    confirm.addEventListener("click", () => finish(collect ? collect() : true));
    cancel.addEventListener("click", () => finish(false));
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      finish(false);
    });
    document.body.appendChild(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

/** pager renders previous/next buttons for a {total, page, per_page} answer; `go(page)` loads another page. */
export function pager(answer, go) {
  const pages = Math.max(1, Math.ceil(answer.total / answer.per_page));
  const prev = button("Previous", { disabled: answer.page <= 1, onclick: () => go(answer.page - 1) });
  const next = button("Next", { disabled: answer.page >= pages, onclick: () => go(answer.page + 1) });
  return h(
    "nav",
    { class: "pager", "aria-label": "Pages" },
    prev,
    h("span", {}, `Page ${answer.page} of ${pages} (${answer.total} in all)`),
    next,
  );
}

/** section is a titled block of a page (h2). */
export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", {}, title), ...children);
}

/**
 * checkGroup is a set of labelled checkboxes in a <fieldset> with a <legend> (roles of a user, permissions of a
 * role). options: [value, label, {hint?, disabled?}?]. The result has `values()` (the checked values, in
 * option order), `set(values)`, `setError(message)` (as field() has, so showFieldErrors can use it by `name`)
 * and `setDisabled(bool)`.
 */
export function checkGroup(legend, name, options, { checked = [], hint } = {}) {
  const errorEl = h("p", { class: "field-error", hidden: true });
  const boxes = [];
  const items = options.map(([value, text, extra = {}]) => {
    const box = h("input", { type: "checkbox", name, value, id: uid(name), checked: checked.includes(value) });
    box.disabled = !!extra.disabled;
    boxes.push(box);
    return h(
      "div",
      { class: "check-item" },
      box,
      h("label", { for: box.id }, text),
      extra.hint ? h("span", { class: "hint" }, extra.hint) : null,
    );
  });
  const wrap = h(
    "fieldset",
    { class: "checks" },
    h("legend", {}, legend),
    hint ? h("p", { class: "hint" }, hint) : null,
    h("div", { class: "check-list" }, items),
    errorEl,
  );
  wrap.boxes = boxes;
  wrap.values = () => boxes.filter((b) => b.checked).map((b) => b.value);
  wrap.set = (values) => { for (const b of boxes) b.checked = values.includes(b.value); };
  wrap.setDisabled = (disabled) => { for (const b of boxes) b.disabled = disabled; };
  wrap.setError = (message) => {
    errorEl.textContent = message || "";
    errorEl.hidden = !message;
    if (message) wrap.setAttribute("aria-invalid", "true");
    else wrap.removeAttribute("aria-invalid");
  };
  return wrap;
}
