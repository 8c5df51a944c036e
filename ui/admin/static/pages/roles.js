// Roles and permissions: what each role grants, custom roles (superadmin), and which roles require 2FA.
//
// Rules the server applies (xcore.auth.roles): creating a role, changing its description or permissions and
// deleting it need `roles.manage` (superadmin only); the built-in roles keep their permissions; an admin may
// require 2FA only on a role held by accounts below their rank and not last set by a superadmin. A refusal is
// shown as the server words it.
import * as api from "../api.js";
import {
  badge, button, checkGroup, confirmDialog, errorBox, field, h, input, section, showFieldErrors, table, toast,
} from "../dom.js";

export const title = "Roles";

/** permissionGroups is one checkGroup per source of permissions (core first, then each plugin). */
function permissionGroups(permissions, checked, disabled = false) {
  const groups = new Map([["", []]]);
  for (const p of permissions) {
    const key = p.plugin_id || "";
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(p);
  }
  const boxes = [];
  for (const [plugin, items] of groups) {
    if (!items.length) continue;
    const group = checkGroup(
      plugin ? `Permissions of the plugin ${plugin}` : "Core permissions",
      "permissions",
      items.map((p) => [p.name, p.name, { hint: p.description, disabled }]),
      { checked },
    );
    boxes.push(group);
  }
  const wrap = h("div", { class: "permission-groups" }, boxes);
  wrap.values = () => boxes.flatMap((g) => g.values());
  wrap.setError = (message) => boxes[0]?.setError(message);
  return wrap;
}

function yesNo(value) {
  return value ? "yes" : "no";
}

export async function render({ main, me, query }) {
  main.append(h("h1", {}, "Roles"));
  const canManage = me.permissions.includes("roles.manage");
  const rules = await api.policy();
  const listError = errorBox();
  const rolesBox = h("div");
  const editBox = h("div");
  const permissionsBox = h("div");
  let roles = [];
  let permissions = [];
  let editing = query.get("edit") || null;

  function remember() {
    history.replaceState(null, "", editing ? `/admin/roles?edit=${encodeURIComponent(editing)}` : "/admin/roles");
  }

  async function load() {
    listError.hide();
    try {
      [roles, permissions] = await Promise.all([api.get("/api/admin/roles"), api.get("/api/admin/permissions")]);
    } catch (err) {
      listError.show(err);
      return;
    }
    rolesBox.replaceChildren(table({
      caption: "Roles",
      columns: [
        { label: "Name", render: (r) => h("strong", {}, r.name) },
        { label: "Description", render: (r) => r.description, class: "wrap" },
        { label: "Built-in", render: (r) => yesNo(r.builtin) },
        { label: "Requires 2FA", render: (r) => yesNo(r.require_totp) },
        {
          label: "Permissions",
          class: "wrap",
          render: (r) => (r.permissions.length ? h("span", { class: "perm-list" }, r.permissions.join(", ")) : "none"),
        },
        {
          label: "Actions",
          class: "nowrap",
          render: (r) => h(
            "div",
            { class: "row" },
            button("Edit", { class: "small", "aria-label": `Edit role ${r.name}`, onclick: () => edit(r.name) }),
            canManage && !r.builtin
              ? button("Delete", { class: "small", "aria-label": `Delete role ${r.name}`, onclick: () => remove(r) })
              : null,
          ),
        },
      ],
      rows: roles,
    }));
    permissionsBox.replaceChildren(table({
      caption: "Permissions",
      columns: [
        { label: "Name", render: (p) => h("code", {}, p.name) },
        { label: "Description", render: (p) => p.description, class: "wrap" },
        { label: "Plugin", render: (p) => p.plugin_id || "core" },
        { label: "Roles", render: (p) => (p.roles.length ? p.roles.join(", ") : "none") },
      ],
      rows: permissions,
    }));
    renderEditor();
  }

  function edit(name) {
    editing = name;
    remember();
    renderEditor();
    editBox.querySelector("h2")?.scrollIntoView({ block: "nearest" });
    editBox.querySelector("input:not([disabled]), textarea:not([disabled])")?.focus();
  }

  async function remove(role) {
    const members = `Its members lose what it grants${role.permissions.length ? ` (${role.permissions.join(", ")})` : ""}.`;
    const ok = await confirmDialog({
      title: `Delete the role ${role.name}?`,
      body: h("p", {}, `The role ${role.name} is deleted. ${members} This cannot be undone.`),
      confirmLabel: `Delete ${role.name}`,
      danger: true,
    });
    if (!ok) return;
    try {
      await api.del(`/api/admin/roles/${encodeURIComponent(role.name)}`);
      if (editing === role.name) {
        editing = null;
        remember();
      }
      await load();
      toast(`Deleted the role ${role.name}.`);
    } catch (err) {
      listError.show(err);
    }
  }

  function renderEditor() {
    const role = roles.find((r) => r.name === editing);
    if (!role) {
      editBox.replaceChildren();
      return;
    }
    const error = errorBox();
    const description = field("Description", input("description", {
      value: role.description, maxlength: rules.role_description_max_length,
    }));
    description.control.disabled = !canManage;
    const totp = h("input", { type: "checkbox", name: "require_totp", id: "edit-require-totp", checked: role.require_totp });
    const fixedPermissions = role.builtin || !canManage;
    const perms = permissionGroups(permissions, role.permissions, fixedPermissions);
    const fields = { description, permissions: perms };
    const save = button("Save role", { type: "submit", class: "primary" });
    const close = button("Close", {
      onclick: () => {
        editing = null;
        remember();
        renderEditor();
      },
    });
    const form = h(
      "form",
      { class: "narrow", novalidate: true },
      description,
      h("div", { class: "field check" }, totp, h("label", { for: "edit-require-totp" }, "Require two-factor login for its members")),
      h("p", { class: "hint" }, fixedPermissions
        ? (role.builtin
          ? "The permissions of a built-in role are fixed; create a role to grant another set."
          : "Only a superadmin (permission roles.manage) can change what a role grants.")
        : "Members get every permission ticked here."),
      perms,
      error,
      h("div", { class: "actions" }, close, save),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hide();
      showFieldErrors(null, fields);
      // Send only what changed: an admin may change require_totp but not the rest.
      const body = {};
      if (canManage && description.control.value !== role.description) body.description = description.control.value;
      if (totp.checked !== role.require_totp) body.require_totp = totp.checked;
      if (!fixedPermissions) {
        const chosen = perms.values().sort();
        if (chosen.join() !== [...role.permissions].sort().join()) body.permissions = chosen;
      }
      if (!Object.keys(body).length) {
        error.show("Nothing changed.");
        return;
      }
      save.disabled = true;
      try {
        const saved = await api.patch(`/api/admin/roles/${encodeURIComponent(role.name)}`, body);
        await load();
        toast(`Saved the role ${saved.name}.`);
      } catch (err) {
        if (!showFieldErrors(err, fields)) error.show(err);
        save.disabled = false;
      }
    });
    editBox.replaceChildren(section(`Edit role ${role.name}`, form));
  }

  function createForm() {
    if (!canManage) {
      return h(
        "p",
        { class: "muted" },
        "Only a superadmin can create roles and change what they grant (the permission roles.manage). "
          + "You can require two-factor login for a role with its Edit button.",
      );
    }
    const error = errorBox();
    const fields = {
      name: field("Name", input("name", { autocomplete: "off", required: true, maxlength: rules.role_name.max_length }), {
        hint: `${rules.role_name.rule}. Custom roles rank as user.`,
      }),
      description: field("Description", input("description", {
        autocomplete: "off", maxlength: rules.role_description_max_length,
      })),
    };
    const totp = h("input", { type: "checkbox", name: "require_totp", id: "new-require-totp" });
    const perms = permissionGroups(permissions, []);
    fields.permissions = perms;
    const submit = button("Create role", { type: "submit", class: "primary" });
    const form = h(
      "form",
      { class: "narrow", novalidate: true },
      fields.name,
      fields.description,
      h("div", { class: "field check" }, totp, h("label", { for: "new-require-totp" }, "Require two-factor login for its members")),
      perms,
      error,
      h("div", { class: "actions" }, submit),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hide();
      showFieldErrors(null, fields);
      submit.disabled = true;
      try {
        const role = await api.post("/api/admin/roles", {
          name: fields.name.control.value.trim(),
          description: fields.description.control.value.trim(),
          permissions: perms.values(),
          require_totp: totp.checked,
        });
        await load();
        createBox.replaceChildren(createForm());
        toast(`Created the role ${role.name}.`);
      } catch (err) {
        if (!showFieldErrors(err, fields)) error.show(err);
      } finally {
        submit.disabled = false;
      }
    });
    return form;
  }

  const createBox = h("div");
  main.append(
    section("All roles", listError, rolesBox),
    editBox,
    section("Create a role", createBox),
    section("Permissions", h("p", { class: "hint" }, "Core permissions and those plugins declare, with the roles granting each."), permissionsBox),
  );
  await load();
  createBox.replaceChildren(createForm());
}
