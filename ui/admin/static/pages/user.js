// One user: change the email, the active flag, the password and the roles; end the sessions, reset 2FA, delete.
// Every action answers next to its button: the server's refusals (an account at or above your rank, a role
// you may not grant, the last superadmin) are shown as the server words them.
import * as api from "../api.js";
import {
  badge, button, checkGroup, confirmDialog, errorBox, errorMessage, field, fmtTime, h, input, link, newPassword,
  section, showFieldErrors, toast,
} from "../dom.js";
import { roleOptions } from "./users.js";

export const title = "User";

/** outcome is the line under an action: the server's answer (role=status) or its error (role=alert). */
function outcome() {
  const ok = h("p", { class: "alert alert-ok", role: "status", hidden: true });
  const error = errorBox();
  const el = h("div", { class: "outcome" }, ok, error);
  el.ok = (message) => {
    error.hide();
    ok.textContent = message;
    ok.hidden = false;
  };
  el.fail = (err) => {
    ok.hidden = true;
    error.show(err);
  };
  el.clear = () => {
    ok.hidden = true;
    error.hide();
  };
  return el;
}

function facts(user) {
  const pairs = [
    ["Id", String(user.id)],
    ["Roles", user.roles.join(", ")],
    ["Active", badge(user.is_active ? "active" : "inactive")],
    ["Two-factor login", user.totp_enabled ? "on" : "off"],
    ["Last login", user.last_login_at ? fmtTime(user.last_login_at) : "never"],
    ["Created", fmtTime(user.created_at)],
  ];
  return h("dl", { class: "stats" }, pairs.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
}

export async function render({ main, params, me, navigate }) {
  const path = `/api/admin/users/${encodeURIComponent(params.id)}`;
  let user;
  try {
    user = await api.get(path);
  } catch (err) {
    if (err.status === 401) throw err;
    main.append(
      h("h1", {}, "User not found"),
      h("p", { role: "alert" }, errorMessage(err)),
      link("/admin/users", "Back to all users"),
    );
    return;
  }
  const roles = await api.get("/api/admin/roles").catch(() => []);
  const rules = await api.policy();
  const heading = h("h1", {}, user.username);
  const factsBox = h("div", {}, facts(user));
  document.title = `${user.username} · Users · xcore`;

  function show(updated) {
    user = updated;
    heading.textContent = user.username;
    factsBox.replaceChildren(facts(user));
    accountFields.email.control.value = user.email || "";
    active.checked = user.is_active;
    roleBoxes.set(user.roles);
    resetTotp.disabled = !user.totp_enabled;
  }

  async function reload() {
    try {
      show(await api.get(path));
    } catch {
      // the action's own answer is already shown; the facts stay as they were
    }
  }

  main.append(h("p", { class: "muted" }, link("/admin/users", "All users")), heading);
  if (me.id === user.id) {
    main.append(h("p", { class: "alert alert-warn note", role: "note" }, "This is your own account. Change it on ",
      link("/admin/account", "My account"), ": the admin actions below apply only to accounts ranked below yours."));
  }
  const sections = h("div", { class: "sections" });
  main.append(section("Overview", factsBox), sections);

  // Email and active flag.
  const accountResult = outcome();
  const accountFields = {
    email: field("Email", input("email", { type: "email", autocomplete: "off", value: user.email || "" }), {
      hint: "Leave empty for none.",
    }),
  };
  const active = h("input", { type: "checkbox", name: "is_active", id: "user-active", checked: user.is_active });
  const activeField = h(
    "div",
    { class: "field check" },
    active,
    h("label", { for: "user-active" }, "Active (can log in)"),
  );
  const saveAccount = button("Save", { type: "submit", class: "primary" });
  const accountForm = h(
    "form",
    { class: "narrow", novalidate: true },
    accountFields.email,
    activeField,
    h("p", { class: "hint" }, "Deactivating an account ends its sessions at once."),
    accountResult,
    h("div", { class: "actions" }, saveAccount),
  );
  accountForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    accountResult.clear();
    showFieldErrors(null, accountFields);
    const body = {};
    const email = accountFields.email.control.value.trim() || null;
    if (email !== (user.email || null)) body.email = email;
    if (active.checked !== user.is_active) body.is_active = active.checked;
    if (!Object.keys(body).length) {
      accountResult.ok("Nothing to save: nothing changed.");
      return;
    }
    saveAccount.disabled = true;
    try {
      show(await api.patch(path, body));
      accountResult.ok("Saved.");
    } catch (err) {
      if (!showFieldErrors(err, accountFields)) accountResult.fail(err);
    } finally {
      saveAccount.disabled = false;
    }
  });
  sections.append(section("Account", accountForm));

  // A new password (for a user who forgot theirs).
  const passwordResult = outcome();
  const passwordFields = {
    password: newPassword("New password", "password", rules.password, "Setting a password ends every session of the user."),
  };
  const setPassword = button("Set password", { type: "submit" });
  const passwordForm = h(
    "form",
    { class: "narrow", novalidate: true },
    passwordFields.password,
    passwordResult,
    h("div", { class: "actions" }, setPassword),
  );
  passwordForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    passwordResult.clear();
    showFieldErrors(null, passwordFields);
    const password = passwordFields.password.control.value;
    if (!password) {
      passwordFields.password.setError("Type the new password.");
      passwordFields.password.control.focus();
      return;
    }
    setPassword.disabled = true;
    try {
      show(await api.patch(path, { password }));
      passwordForm.reset();
      passwordResult.ok(`The password of ${user.username} is changed; their sessions ended.`);
    } catch (err) {
      if (!showFieldErrors(err, passwordFields)) passwordResult.fail(err);
    } finally {
      setPassword.disabled = false;
    }
  });
  sections.append(section("Password", passwordForm));

  // Roles.
  const rolesResult = outcome();
  const roleBoxes = checkGroup("Roles", "roles", roleOptions(roles), {
    checked: user.roles,
    hint: "You can grant only roles at or below your own, to accounts ranked below yours.",
  });
  const saveRoles = button("Save roles", { type: "submit" });
  const rolesForm = h("form", { class: "narrow", novalidate: true }, roleBoxes, rolesResult, h("div", { class: "actions" }, saveRoles));
  rolesForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    rolesResult.clear();
    roleBoxes.setError("");
    saveRoles.disabled = true;
    try {
      show(await api.put(`${path}/roles`, { roles: roleBoxes.values() }));
      rolesResult.ok(`Roles saved: ${user.roles.join(", ")}.`);
    } catch (err) {
      if (!showFieldErrors(err, { roles: roleBoxes })) rolesResult.fail(err);
    } finally {
      saveRoles.disabled = false;
    }
  });
  sections.append(section("Roles", rolesForm));

  // Sessions and 2FA.
  const sessionResult = outcome();
  const revoke = button("Revoke sessions", {
    onclick: async () => {
      sessionResult.clear();
      revoke.disabled = true;
      try {
        await api.post(`${path}/revoke-sessions`);
        sessionResult.ok(`Every session of ${user.username} ended; they must log in again.`);
      } catch (err) {
        sessionResult.fail(err);
      } finally {
        revoke.disabled = false;
      }
    },
  });
  const resetTotp = button("Reset 2FA", {
    disabled: !user.totp_enabled,
    onclick: async () => {
      sessionResult.clear();
      const ok = await confirmDialog({
        title: `Reset two-factor login of ${user.username}?`,
        body: h(
          "p",
          {},
          `Two-factor login of ${user.username} is turned off, their recovery codes stop working and their sessions `
            + "end. They log in with the password alone and can turn it on again on My account.",
        ),
        confirmLabel: "Reset 2FA",
        danger: true,
      });
      if (!ok) return;
      try {
        await api.post(`${path}/reset-totp`);
        await reload();
        sessionResult.ok(`Two-factor login of ${user.username} is off and their sessions ended.`);
      } catch (err) {
        sessionResult.fail(err);
      }
    },
  });
  sections.append(section(
    "Sessions and two-factor login",
    h("p", { class: "hint" }, "Revoke sessions when a device is lost: every token of the user stops working at once. "
      + "Reset 2FA when the user lost their authenticator app (it is only possible while 2FA is on)."),
    h("div", { class: "row" }, revoke, resetTotp),
    sessionResult,
  ));

  // Delete.
  const deleteResult = outcome();
  const remove = button("Delete user", {
    class: "danger",
    onclick: async () => {
      deleteResult.clear();
      const ok = await confirmDialog({
        title: `Delete the user ${user.username}?`,
        body: h("p", {}, `The account ${user.username} and its sessions are deleted. This cannot be undone; `
          + "to only stop someone logging in, untick Active instead."),
        confirmLabel: `Delete ${user.username}`,
        danger: true,
      });
      if (!ok) return;
      try {
        await api.del(path);
        toast(`Deleted the user ${user.username}.`);
        navigate("/admin/users");
      } catch (err) {
        deleteResult.fail(err);
      }
    },
  });
  sections.append(section("Delete", h("div", { class: "row" }, remove), deleteResult));
}
