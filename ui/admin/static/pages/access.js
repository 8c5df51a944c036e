// Access: the explain tool. Which ACCESS_RULES entry decides a request, what it needs, and whether a user gets in.
import * as api from "../api.js";
import { badge, button, errorBox, field, h, input, section, select, showFieldErrors } from "../dom.js";

export const title = "Access";

const METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

function facts(pairs) {
  return h("dl", { class: "stats" }, pairs.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value ?? "—")]));
}

function list(values, none = "none") {
  return values && values.length ? values.join(", ") : none;
}

function verdict(answer) {
  const rule = answer.rule;
  return h(
    "div",
    { class: "explain-result" },
    h(
      "p",
      { class: `verdict ${answer.allowed ? "verdict-allowed" : "verdict-denied"}` },
      badge(answer.allowed ? "allowed" : "denied"),
      " ",
      h("strong", {}, answer.allowed ? "Allowed" : "Denied"),
      `: ${answer.method} ${answer.path} for ${answer.user ? `the user ${answer.user}` : "an anonymous request"}`,
    ),
    h("p", { class: "reason" }, h("span", { class: "muted" }, "Reason: "), answer.reason),
    facts([
      ["Matching rule", rule.pattern ? h("code", {}, rule.pattern) : "none (the default applies)"],
      ["Requires", rule.requirement],
      ["Roles", list(rule.roles)],
      ["Permissions", list(rule.permissions)],
      ["Methods", list(rule.methods, "all")],
      ["Public", rule.public ? "yes" : "no"],
      ["User", answer.user || "anonymous"],
      ["User's roles", answer.user ? list(answer.user_roles) : "—"],
    ]),
  );
}

export async function render({ main, query }) {
  main.append(
    h("h1", {}, "Access"),
    h("p", { class: "muted" }, "Which access rule decides a request, and whether a user gets in. "
      + "The rules are ACCESS_RULES in config.json; a superadmin passes every rule."),
  );
  const fields = {
    path: field("Path", input("path", { value: query.get("path") || "/api/admin/users", required: true, autocomplete: "off" }), {
      hint: "A request path, such as /api/admin/users or /api/notes/items.",
    }),
    method: field("Method", select("method", METHODS, { value: (query.get("method") || "GET").toUpperCase() })),
    user: field("User (optional)", input("user", { value: query.get("user") || "", autocomplete: "off" }), {
      hint: "A username or email; leave empty for an anonymous request.",
    }),
  };
  const error = errorBox();
  const result = h("div", { class: "result", "aria-live": "polite" });
  const submit = button("Explain", { type: "submit", class: "primary" });
  const form = h("form", { class: "explain-form", novalidate: true }, Object.values(fields),
    h("div", { class: "actions" }, submit));

  async function explain() {
    error.hide();
    showFieldErrors(null, fields);
    const params = {
      path: fields.path.control.value.trim(),
      method: fields.method.control.value,
      user: fields.user.control.value.trim(),
    };
    const search = new URLSearchParams(Object.entries(params).filter(([, v]) => v));
    history.replaceState(null, "", `/admin/access?${search}`);
    if (!params.path) {
      fields.path.setError("Type a path, starting with /.");
      fields.path.control.focus();
      return;
    }
    submit.disabled = true;
    try {
      const answer = await api.get("/api/admin/access/explain", params);
      result.replaceChildren(verdict(answer));
    } catch (err) {
      result.replaceChildren();
      if (!showFieldErrors(err, fields)) error.show(err);
    } finally {
      submit.disabled = false;
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    explain();
  });
  main.append(section("Explain a request", form, error, result));
  if (query.get("path")) await explain();
  else fields.path.control.focus();
}
