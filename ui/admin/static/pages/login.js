// Login: the password first, then a second step for the 2FA code (or a recovery code) when the account has 2FA.
import * as api from "../api.js";
import { button, errorBox, field, h, input } from "../dom.js";

export const title = "Log in";

function safeNext(query) {
  const next = query.get("next") || "/admin";
  // Only a path of this UI: never an outside address (no open redirect).
  return /^\/admin(\/|$|\?)/.test(next) && !next.startsWith("//") ? next : "/admin";
}

export async function render({ main, query, navigate, setMe }) {
  const setup = await api.get("/api/setup").catch(() => null);
  if (setup?.required) {
    navigate("/admin/setup", { replace: true });
    return;
  }
  const next = safeNext(query);
  const error = errorBox();
  const username = field("Username or email", input("username", { autocomplete: "username", required: true }));
  const password = field("Password", input("password", { type: "password", autocomplete: "current-password", required: true }));
  const code = field("Code from your authenticator app", input("totp", {
    autocomplete: "one-time-code", inputmode: "numeric", pattern: "[0-9 ]*",
  }));
  const recovery = field("Recovery code", input("recovery_code", { autocomplete: "off" }), {
    hint: "One of the codes you saved when you turned on two-factor login. Each works once.",
  });
  const secondStep = h("div", { hidden: true }, code, recovery);
  let useRecovery = false;
  const toggle = button("Use a recovery code", {
    class: "link-button",
    onclick: () => {
      useRecovery = !useRecovery;
      code.hidden = useRecovery;
      recovery.hidden = !useRecovery;
      toggle.textContent = useRecovery ? "Use the authenticator code" : "Use a recovery code";
      (useRecovery ? recovery : code).control.focus();
    },
  });
  recovery.hidden = true;
  secondStep.append(h("p", {}, toggle));
  const submit = button("Log in", { type: "submit", class: "primary" });
  const form = h(
    "form",
    { class: "card", novalidate: true },
    error,
    username,
    password,
    secondStep,
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hide();
    for (const f of [username, password, code, recovery]) f.setError("");
    const secondFactor = !secondStep.hidden;
    submit.disabled = true;
    try {
      await api.login(username.control.value.trim(), password.control.value, {
        totp: secondFactor && !useRecovery ? code.control.value.trim() : undefined,
        recoveryCode: secondFactor && useRecovery ? recovery.control.value.trim() : undefined,
      });
      setMe(null);
      navigate(next, { replace: true });
    } catch (err) {
      submit.disabled = false;
      if (err.problem?.totp_required && secondStep.hidden) {
        // The password was right; the account needs its second factor.
        secondStep.hidden = false;
        error.show("Enter the code from your authenticator app.");
        error.classList.replace("alert-error", "alert-ok");
        code.control.focus();
        return;
      }
      error.classList.replace("alert-ok", "alert-error");
      error.show(err);
      if (secondFactor) (useRecovery ? recovery : code).control.select?.();
      else password.control.select();
    }
  });
  main.append(h("h1", {}, "Log in to xcore"), form);
  username.control.focus();
}
