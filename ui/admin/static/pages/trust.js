// Trusted keys: the public keys whose signed bundles and catalogues this host trusts (GET /api/admin/trust), a form
// that adds one (the line of its .pub file, as `xcore keys new` writes it) and a button per key that removes it,
// after a confirmation. Adding and removing is a superadmin's (plugins.manage): a trusted key decides what the
// signing policy lets run. Others see the list only; the server refuses them either way. Under the policy
// `unsigned` (the default) a warning says that unsigned bundles run here, and how to change it (policyWarning).
import * as api from "../api.js";
import { button, confirmDialog, errorBox, errorMessage, field, h, input, link, section, showFieldErrors, table } from "../dom.js";
import { BROWSE_PAGE, TRUST_PAGE, busy, canManage, pluginTabs, policyWarning } from "./plugins.js";

export const title = "Trusted keys";

const API = "/api/admin/trust";

/** keyApi is the admin API address of one trusted key, by name. */
function keyApi(name) {
  return `${API}/${encodeURIComponent(name)}`;
}

/** render shows the Trusted keys page. */
export async function render({ main, me, opens }) {
  const manage = canManage(me);
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Trusted keys")),
    pluginTabs(TRUST_PAGE, opens),
    h("p", { class: "lead" },
      "A bundle signed by one of these keys counts as trusted, and the signing policy (manager.plugins.policy) " +
      "decides what runs that is not. A catalogue is used only when one of these keys signed it: see ",
      link(BROWSE_PAGE, "Browse"), "."),
    policyWarning(opens),
  );

  const listError = errorBox();
  const status = h("p", { class: "action-status", role: "status" });
  const actionError = errorBox();
  const listBox = h("div");
  main.append(section("Keys", listError, actionError, status, listBox));

  // Adding a key: the .pub line, and a name to trust it under when the line's will not do.
  const line = h("textarea", {
    name: "public_key", rows: 3, spellcheck: "false", autocomplete: "off", class: "key-input", required: true,
  });
  const lineField = field("Public key", line, {
    hint: "The line of the signer's .pub file: xcore-ed25519 <key> <name>, as `xcore keys new` writes it. Never " +
      "paste a .key file: that one is secret.",
  });
  const name = input("name", { autocomplete: "off", maxlength: 64 });
  const nameField = field("Name (optional)", name, {
    hint: "The name to trust it under; by default the name at the end of the line.",
  });
  const add = button("Trust this key", { type: "submit", class: "primary" });
  const form = h("form", { class: "trust-form narrow", novalidate: true }, lineField, nameField,
    h("div", { class: "actions" }, add));
  main.append(manage
    ? section("Trust a key", form)
    : h("p", { class: "muted read-only-note" }, "Read-only: adding and removing a trusted key needs the permission " +
      "plugins.manage, which only a superadmin holds, because a trusted key decides which plugins may run."));

  // An error about a field goes when the field changes.
  line.addEventListener("input", () => lineField.setError(""));
  name.addEventListener("input", () => nameField.setError(""));

  let keys = [];

  async function load() {
    try {
      keys = await api.get(API);
      listError.hide();
    } catch (err) {
      listError.show(err);
      return;
    }
    show();
  }

  function show() {
    listBox.replaceChildren(table({
      caption: "Trusted keys",
      empty: "No key is trusted: every signed bundle counts as signed by a key this host does not trust, and no " +
        "catalogue is used.",
      rowProps: (k) => ({ dataset: { key: k.name } }),
      columns: [
        { label: "Name", render: (k) => k.name },
        { label: "Key ID", render: (k) => h("code", { class: "key-id" }, k.key_id) },
        { label: "Public key", class: "wrap", render: (k) => h("code", { class: "public-key" }, k.public_key) },
        manage
          ? {
            label: "Actions",
            render: (k) => button("Remove", {
              class: "small danger-outline", "aria-label": `Remove ${k.name}`, dataset: { key: k.name },
              onclick: (event) => remove(k, event.currentTarget),
            }),
          }
          : null,
      ].filter(Boolean),
      rows: keys,
    }));
  }

  /** fieldOf is the form field an error from the server is about: the name (none, a bad one, one taken), or else
   * the key's line. */
  function fieldOf(message) {
    return /has no name|is not a signer's name|a key named/.test(message) ? nameField : lineField;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    lineField.setError("");
    nameField.setError("");
    actionError.hide();
    status.textContent = "";
    if (!line.value.trim()) {
      lineField.setError("Paste the line of the signer's .pub file.");
      line.focus();
      return;
    }
    busy(add, async () => {
      const body = { public_key: line.value.trim() };
      if (name.value.trim()) body.name = name.value.trim();
      try {
        const added = await api.post(API, body);
        line.value = "";
        name.value = "";
        status.textContent = `Trusted ${added.name} (key ${added.key_id}). Bundles and catalogues it signed are ` +
          "trusted from now on; refresh the catalogues on the Browse tab to use one it signed.";
        await load();
      } catch (err) {
        if (err.status === 422 && !showFieldErrors(err, { public_key: lineField, name: nameField })) {
          const target = fieldOf(errorMessage(err));
          target.setError(errorMessage(err));
          target.control.focus();
        } else if (err.status !== 422) {
          actionError.show(`Trust the key: ${errorMessage(err)}`);
        }
      }
    });
  });

  async function remove(key, el) {
    actionError.hide();
    status.textContent = "";
    const ok = await confirmDialog({
      title: `Stop trusting ${key.name}?`,
      body: [
        h("p", {}, `The key ${key.key_id} is no longer trusted: the plugins it signed count as signed by a key this ` +
          "host does not trust, so the signing policy may stop them or run them sandboxed, and the catalogues it " +
          "signed are used for nothing."),
      ],
      confirmLabel: `Remove ${key.name}`,
      danger: true,
    });
    if (!ok) {
      el.focus();
      return;
    }
    const index = keys.indexOf(key);
    try {
      await busy(el, () => api.del(keyApi(key.name)));
    } catch (err) {
      actionError.show(`Remove ${key.name}: ${errorMessage(err)}`);
      await load();
      return;
    }
    status.textContent = `${key.name} (key ${key.key_id}) is no longer trusted.`;
    await load();
    // The row is gone: the keyboard goes to the next key's Remove, else the previous one's, else the form.
    const buttons = [...listBox.querySelectorAll("button[data-key]")];
    (buttons[Math.min(index, buttons.length - 1)] || line).focus();
  }

  await load();
}
