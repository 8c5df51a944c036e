// First run: create the first superadmin with the one-time setup token (from the URL xcore printed, or typed).
import * as api from "../api.js";
import { button, errorBox, field, h, input, link, newPassword, showFieldErrors } from "../dom.js";

export const title = "Set up xcore";

export async function render({ main, query, navigate }) {
  // The token came in the URL: keep it in memory only and take it out of the address bar and history.
  const fromUrl = query.get("token") || "";
  if (fromUrl) history.replaceState(null, "", "/admin/setup");
  const [state, rules] = await Promise.all([api.get("/api/setup"), api.policy()]);
  main.append(h("h1", {}, "Set up xcore"));
  if (!state.required) {
    main.append(
      h("p", {}, "Setup is done: the first account exists."),
      link("/admin/login", "Log in"),
    );
    return;
  }
  const error = errorBox();
  const fields = {
    // Only for a token typed by hand: one that came with the link stays out of sight (shown again if refused).
    token: field("Setup token", input("token", { autocomplete: "off", required: true, value: fromUrl }), {
      hint: "Printed by xcore at start, and in the file setup-token in the data directory.",
    }),
    username: field("Username", input("username", {
      autocomplete: "username", required: true, maxlength: rules.username.max_length,
    }), { hint: `${rules.username.rule}.` }),
    email: field("Email (optional)", input("email", { type: "email", autocomplete: "email" })),
    password: newPassword("Password", "password", rules.password),
    confirm: field("Repeat the password", input("confirm", { type: "password", autocomplete: "new-password", required: true })),
  };
  if (fromUrl) fields.token.hidden = true;
  const submit = button("Create the owner account", { type: "submit", class: "primary" });
  const form = h(
    "form",
    { class: "card", novalidate: true },
    h("p", {}, fromUrl
      ? "Create the owner account. It can do everything here, including adding other accounts."
      : "Create the owner account with the setup token xcore printed when it started."),
    error,
    Object.values(fields),
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hide();
    const values = Object.fromEntries(Object.entries(fields).map(([k, f]) => [k, f.control.value]));
    showFieldErrors(null, fields);
    if (values.password !== values.confirm) {
      fields.confirm.setError("The two passwords differ.");
      fields.confirm.control.focus();
      return;
    }
    submit.disabled = true;
    try {
      await api.post("/api/setup", {
        token: values.token.trim(),
        username: values.username.trim(),
        password: values.password,
        email: values.email.trim() || null,
      });
      await api.login(values.username.trim(), values.password);
      navigate("/admin", { replace: true });
    } catch (err) {
      if (showFieldErrors(err, fields) && fields.token.hidden && fields.token.control.getAttribute("aria-invalid")) {
        fields.token.hidden = false;
      }
      error.show(err);
      submit.disabled = false;
    }
  });
  main.append(form);
  (fromUrl ? fields.username : fields.token).control.focus();
}
