// My account: every logged-in user's own page (admin or not): email, password and two-factor login.
//
// Two-factor enrollment: POST /api/me/totp/setup, with the password, gives a secret and its QR code (SVG, shown as a data: image,
// never parsed into the page), a code from the app confirms it, and the answer holds the recovery codes. They
// live only in this page's memory: shown once, gone on reload.
import * as api from "../api.js";
import { button, errorBox, field, fmtTime, h, input, newPassword, section, showFieldErrors, toast } from "../dom.js";

export const title = "My account";

function svgDataUrl(svg) {
  const bytes = new TextEncoder().encode(svg);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return `data:image/svg+xml;base64,${btoa(binary)}`;
}

function statusLine() {
  const el = h("p", { class: "alert alert-ok", role: "status", hidden: true });
  el.show = (message) => {
    el.textContent = message || "";
    el.hidden = !message;
  };
  return el;
}

export async function render({ main, navigate, setMe }) {
  let me = await api.get("/api/me");
  const rules = await api.policy();
  setMe(me);
  const urls = []; // blob: URLs of downloads, revoked when the user leaves the page

  const factsBox = h("div");
  function showFacts() {
    const pairs = [
      ["Username", me.username],
      ["Roles", me.roles.join(", ")],
      ["Two-factor login", me.totp_enabled ? "on" : (me.totp_required ? "off (your role requires it)" : "off")],
      ["Last login", me.last_login_at ? fmtTime(me.last_login_at) : "—"],
      ["Account created", fmtTime(me.created_at)],
    ];
    factsBox.replaceChildren(
      h("dl", { class: "stats" }, pairs.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)])),
    );
  }
  showFacts();
  const sections = h("div", { class: "sections" });
  main.append(h("h1", {}, "My account"), section("Account", factsBox), sections);

  // Email.
  const emailFields = {
    email: field("Email", input("email", { type: "email", autocomplete: "email", value: me.email || "" }), {
      hint: "You can log in with it instead of the username. Leave empty for none.",
    }),
  };
  const emailError = errorBox();
  const emailDone = statusLine();
  const saveEmail = button("Save email", { type: "submit" });
  const emailForm = h("form", { class: "narrow", novalidate: true }, emailFields.email, emailError, emailDone,
    h("div", { class: "actions" }, saveEmail));
  emailForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    emailError.hide();
    emailDone.show("");
    showFieldErrors(null, emailFields);
    saveEmail.disabled = true;
    try {
      me = await api.patch("/api/me", { email: emailFields.email.control.value.trim() || null });
      setMe(me);
      showFacts();
      emailDone.show(me.email ? `Saved: your email is ${me.email}.` : "Saved: your account has no email address.");
    } catch (err) {
      if (!showFieldErrors(err, emailFields)) emailError.show(err);
    } finally {
      saveEmail.disabled = false;
    }
  });
  sections.append(section("Email", emailForm));

  // Password.
  const pwFields = {
    current_password: field("Current password", input("current_password", { type: "password", autocomplete: "current-password" })),
    new_password: newPassword("New password", "new_password", rules.password),
    repeat: field("Repeat the new password", input("repeat", { type: "password", autocomplete: "new-password" })),
  };
  const pwError = errorBox();
  const changePassword = button("Change password", { type: "submit", class: "primary" });
  const pwForm = h(
    "form",
    { class: "narrow", novalidate: true },
    h("p", { class: "hint" }, "Changing the password ends every session of your account, this one too: you log in again."),
    Object.values(pwFields),
    pwError,
    h("div", { class: "actions" }, changePassword),
  );
  pwForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    pwError.hide();
    showFieldErrors(null, pwFields);
    const current = pwFields.current_password.control.value;
    const next = pwFields.new_password.control.value;
    if (!current) {
      pwFields.current_password.setError("Type your current password.");
      pwFields.current_password.control.focus();
      return;
    }
    if (next !== pwFields.repeat.control.value) {
      pwFields.repeat.setError("The two new passwords differ.");
      pwFields.repeat.control.focus();
      return;
    }
    changePassword.disabled = true;
    try {
      await api.post("/api/me/password", { current_password: current, new_password: next });
    } catch (err) {
      changePassword.disabled = false;
      if (!showFieldErrors(err, pwFields)) pwError.show(err);
      return;
    }
    // Every session ended on the server: drop this one's cookies too and log in with the new password.
    await api.logout();
    setMe(null);
    toast("Your password is changed. Log in with the new one.");
    navigate("/admin/login?next=%2Fadmin%2Faccount", { replace: true });
  });
  sections.append(section("Password", pwForm));

  // Two-factor login.
  const totpBox = h("div");
  const totpSection = section("Two-factor login", totpBox);
  sections.append(totpSection);

  async function refresh() {
    me = await api.get("/api/me");
    setMe(me);
    showFacts();
  }

  function showTotp() {
    if (me.totp_enabled) showDisable();
    else showOff();
  }

  function showOff() {
    const error = errorBox();
    const fields = {
      password: field("Password", input("password", { type: "password", autocomplete: "current-password" }), {
        hint: "Confirm it is you: turning this on changes how you log in.",
      }),
    };
    const start = button("Turn on two-factor login", { type: "submit", class: "primary" });
    const form = h("form", { class: "narrow", novalidate: true }, fields.password, error, h("div", { class: "actions" }, start));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hide();
      showFieldErrors(null, fields);
      const password = fields.password.control.value;
      if (!password) {
        fields.password.setError("Type your password.");
        fields.password.control.focus();
        return;
      }
      start.disabled = true;
      try {
        showEnroll(await api.post("/api/me/totp/setup", { password }));
      } catch (err) {
        start.disabled = false;
        if (!showFieldErrors(err, fields)) error.show(err);
        fields.password.control.select();
      }
    });
    totpBox.replaceChildren(h(
      "div",
      {},
      h("p", {}, "Two-factor login is off. With it on, logging in needs a code from an authenticator app on your "
        + "phone as well as the password."),
      me.totp_required ? h("p", { class: "alert alert-warn note", role: "note" }, "One of your roles requires it: turn it on.") : null,
      form,
    ));
  }

  function showEnroll(setup) {
    const error = errorBox();
    const fields = {
      code: field("Code from your authenticator app", input("code", {
        autocomplete: "one-time-code", inputmode: "numeric", pattern: "[0-9 ]*",
      }), { hint: `The ${rules.totp_digits} digits the app shows now.` }),
    };
    const confirm = button("Confirm and turn on", { type: "submit", class: "primary" });
    const cancel = button("Cancel", { onclick: () => showTotp() });
    const form = h("form", { class: "narrow", novalidate: true }, fields.code, error, h("div", { class: "actions" }, cancel, confirm));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hide();
      showFieldErrors(null, fields);
      const code = fields.code.control.value.trim();
      if (!code) {
        fields.code.setError("Type the code from the app.");
        fields.code.control.focus();
        return;
      }
      confirm.disabled = true;
      try {
        const answer = await api.post("/api/me/totp/confirm", { code });
        await refresh().catch(() => {});
        showCodes(answer.recovery_codes);
      } catch (err) {
        confirm.disabled = false;
        if (!showFieldErrors(err, fields)) error.show(err);
        fields.code.control.select();
      }
    });
    totpBox.replaceChildren(
      h("ol", { class: "steps" },
        h("li", {}, h("p", {}, "Scan this QR code with an authenticator app (such as Aegis, FreeOTP or Google Authenticator):"),
          h("img", { class: "qr", src: svgDataUrl(setup.qr_svg), alt: `QR code to add ${me.username} at xcore to an authenticator app`, width: 220, height: 220 })),
        h("li", {}, h("p", {}, "Or type this key into the app by hand:"),
          h("p", {}, h("code", { class: "totp-secret" }, setup.secret))),
        h("li", {}, h("p", {}, "Type the code the app shows, to check it works:"), form)),
    );
    fields.code.control.focus();
  }

  function showCodes(codes) {
    const text = `xcore recovery codes for ${me.username}\nEach code works once, in place of a code from the app.\n\n${codes.join("\n")}\n`;
    const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
    urls.push(url);
    const copied = statusLine();
    const copy = button("Copy codes", {
      onclick: async () => {
        try {
          await navigator.clipboard.writeText(codes.join("\n"));
          copied.show("Copied.");
        } catch {
          copied.show("Copying is not allowed here: select the codes and copy them, or download them.");
        }
      },
    });
    const done = button("I saved them", { class: "primary", onclick: () => showTotp() });
    totpBox.replaceChildren(
      h("p", { class: "alert alert-ok", role: "status" }, "Two-factor login is on."),
      h("div", { class: "alert alert-warn note", role: "note" },
        h("strong", {}, "Save these recovery codes now. "),
        "They are shown only this once. If you lose your phone, each code logs you in once in place of an app code."),
      h("ul", { class: "codes", "aria-label": "Recovery codes" }, codes.map((c) => h("li", {}, h("code", {}, c)))),
      h("div", { class: "row" },
        copy,
        h("a", { href: url, download: `xcore-recovery-codes-${me.username}.txt`, class: "button-link" }, "Download as text"),
        h("span", { class: "spacer" }),
        done),
      copied,
    );
    done.focus();
  }

  function showDisable() {
    const error = errorBox();
    const fields = {
      password: field("Password", input("password", { type: "password", autocomplete: "current-password" })),
      code: field("Code from your authenticator app, or a recovery code", input("code", { autocomplete: "one-time-code" })),
    };
    const off = button("Turn off two-factor login", { type: "submit", class: "danger" });
    const form = h(
      "form",
      { class: "narrow", novalidate: true },
      h("p", {}, "Two-factor login is on: logging in needs a code from your authenticator app. To turn it off, "
        + "confirm with your password and a current code."),
      me.totp_required ? h("p", { class: "hint" }, "One of your roles requires it: you would have to turn it on again.") : null,
      fields.password,
      fields.code,
      error,
      h("div", { class: "actions" }, off),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hide();
      showFieldErrors(null, fields);
      off.disabled = true;
      try {
        await api.post("/api/me/totp/disable", {
          password: fields.password.control.value,
          code: fields.code.control.value.trim(),
        });
        await refresh();
        toast("Two-factor login is off.");
        showTotp();
      } catch (err) {
        off.disabled = false;
        if (!showFieldErrors(err, fields)) error.show(err);
      }
    });
    totpBox.replaceChildren(form);
  }

  showTotp();
  return () => {
    for (const url of urls) URL.revokeObjectURL(url);
  };
}
