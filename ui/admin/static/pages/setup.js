// First run: create the first superadmin with the one-time setup token (from the URL xcore printed, or typed).
import * as api from "../api.js";
import { button, errorBox, field, h, input, link, showFieldErrors } from "../dom.js";

export const title = "Set up xcore";

export async function render({ main, query, navigate }) {
  // The token came in the URL: keep it in memory only and take it out of the address bar and history.
  const fromUrl = query.get("token") || "";
  if (fromUrl) history.replaceState(null, "", "/admin/setup");
  const state = await api.get("/api/setup");
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
    token: field("Setup token", input("token", { autocomplete: "off", required: true, value: fromUrl }), {
      hint: "Printed by xcore at start, and in the file setup-token in the data directory.",
    }),
    username: field("Username", input("username", { autocomplete: "username", required: true, maxlength: 64 })),
    email: field("Email (optional)", input("email", { type: "email", autocomplete: "email" })),
    password: field("Password", input("password", { type: "password", autocomplete: "new-password", required: true }), {
      hint: "At least 12 characters.",
    }),
    confirm: field("Repeat the password", input("confirm", { type: "password", autocomplete: "new-password", required: true })),
  };
  if (fromUrl) fields.token.hidden = true;
  const submit = button("Create the owner account", { type: "submit", class: "primary" });
  const form = h(
    "form",
    { class: "card", novalidate: true },
    h("p", {}, "Create the first account. It is the owner (superadmin) of this xcore."),
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
