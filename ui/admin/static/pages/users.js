// Users: every account (search, pages) and the form that creates one, with its roles.
import * as api from "../api.js";
import {
  badge, button, checkGroup, errorBox, field, fmtTime, h, input, link, newPassword, pager, section, showFieldErrors,
  table, toast,
} from "../dom.js";

export const title = "Users";

const PER_PAGE = 50;

/** roleOptions turns GET /api/admin/roles into checkGroup options, with each role's description as a hint. */
export function roleOptions(roles) {
  return roles.map((r) => [r.name, r.name, { hint: r.description }]);
}

export async function render({ main, query }) {
  main.append(h("h1", {}, "Users"));
  const state = { q: query.get("q") || "", page: Math.max(1, Number(query.get("page")) || 1) };
  const listError = errorBox();
  const listBox = h("div");

  const search = input("q", { type: "search", value: state.q, autocomplete: "off" });
  const filters = h(
    "form",
    { class: "filters", role: "search" },
    field("Search by username or email", search),
    h("div", { class: "field" }, button("Search", { type: "submit" })),
  );
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    state.q = search.value.trim();
    state.page = 1;
    load();
  });

  function remember() {
    const params = new URLSearchParams();
    if (state.q) params.set("q", state.q);
    if (state.page > 1) params.set("page", String(state.page));
    const text = params.toString();
    history.replaceState(null, "", `/admin/users${text ? `?${text}` : ""}`);
  }

  async function load() {
    remember();
    listError.hide();
    let answer;
    try {
      answer = await api.get("/api/admin/users", { q: state.q, page: state.page, per_page: PER_PAGE });
    } catch (err) {
      listError.show(err);
      return;
    }
    listBox.replaceChildren(h(
      "div",
      {},
      table({
        caption: "User accounts",
        empty: state.q ? `No account matches “${state.q}”.` : "No accounts.",
        columns: [
          { label: "Username", render: (u) => link(`/admin/users/${u.id}`, u.username) },
          { label: "Email", render: (u) => u.email, class: "wrap" },
          { label: "Roles", render: (u) => u.roles.join(", ") },
          { label: "Active", render: (u) => badge(u.is_active ? "active" : "inactive") },
          { label: "2FA", render: (u) => (u.totp_enabled ? "on" : "off") },
          { label: "Last login", render: (u) => (u.last_login_at ? fmtTime(u.last_login_at) : "never") },
          { label: "Created", render: (u) => fmtTime(u.created_at) },
        ],
        rows: answer.items,
      }),
      answer.total > answer.per_page
        ? pager(answer, (page) => { state.page = page; load(); })
        : null,
    ));
  }

  main.append(section("Accounts", filters, listError, listBox));

  // Creating an account: the roles come from the server, so custom roles are offered too.
  const roles = await api.get("/api/admin/roles").catch(() => []);
  const rules = await api.policy();
  const formError = errorBox();
  const fields = {
    username: field("Username", input("username", {
      autocomplete: "off", required: true, maxlength: rules.username.max_length,
    }), { hint: `${rules.username.rule}.` }),
    email: field("Email (optional)", input("email", { type: "email", autocomplete: "off" })),
    password: newPassword("Password", "password", rules.password, "The user can change it on My account."),
    roles: checkGroup("Roles", "roles", roleOptions(roles), {
      checked: ["user"],
      hint: "You can grant only roles at or below your own.",
    }),
  };
  const submit = button("Create user", { type: "submit", class: "primary" });
  const form = h("form", { class: "narrow", novalidate: true }, formError, Object.values(fields), h("div", { class: "actions" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    formError.hide();
    showFieldErrors(null, fields);
    const body = {
      username: fields.username.control.value.trim(),
      email: fields.email.control.value.trim() || null,
      password: fields.password.control.value,
      roles: fields.roles.values(),
    };
    if (!body.roles.length) {
      fields.roles.setError("Choose at least one role (user is the least).");
      return;
    }
    submit.disabled = true;
    try {
      const user = await api.post("/api/admin/users", body);
      form.reset();
      fields.roles.set(["user"]);
      toast(`Created the user ${user.username}.`);
      state.q = "";
      search.value = "";
      await load();
    } catch (err) {
      // Field mistakes go under their field; refusals (a role above yours...) go in the box.
      if (!showFieldErrors(err, fields)) formError.show(err);
      else form.querySelector("[aria-invalid='true'] input, input[aria-invalid='true']")?.focus();
    } finally {
      submit.disabled = false;
    }
  });
  main.append(section("Create a user", form));
  await load();
}
