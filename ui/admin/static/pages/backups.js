// Backups (superadmin): complete backups (the database, the plugins, their data, the settings), optionally
// encrypted, "back up now", downloads, restore from the list or from an uploaded file, and the emergency kit of a
// backup encrypted with a new key, shown once.
import * as api from "../api.js";
import {
  badge, button, confirmDialog, errorBox, errorMessage, field, fmtBytes, fmtTime, h, input, link, section, select,
  table,
} from "../dom.js";

export const title = "Backups";

const UPLOAD = "/api/admin/backups/restore-upload";
const SEALED = "XCBACKUP"; // the first bytes of an encrypted backup (xcore.db.seal)

function restoreWarning(when, name, complete) {
  const what = complete
    ? "Everything is put back as it was: the database (accounts, roles, plugin states and settings), the plugins "
      + "in the very versions backed up (others are removed), every plugin's data, and the settings file."
    : "The database is put back as it was: accounts, roles, plugin states and settings.";
  return h(
    "div",
    {},
    h("p", {}, when ? `From ${name}, made ${fmtTime(when)}:` : `From ${name}:`),
    h(
      "ul",
      {},
      h("li", {}, what),
      h("li", {}, complete
        ? "First a safety backup of everything as it is now is taken, so you can undo this by restoring it."
        : "First a safety backup of the current database is taken, so you can undo this by restoring it."),
      h("li", {}, "All data changes since that backup are lost: everything changed after it was made."),
      h("li", {}, "Sessions may end: anyone who signed in since, you perhaps included, may have to sign in again."),
    ),
  );
}

// secretField asks for what opens an encrypted backup: its passphrase, or its key (the emergency kit works too).
function secretField(kind, keyId) {
  if (kind === "passphrase") {
    return field("Passphrase of this backup", input("passphrase", { type: "password", autocomplete: "off" }));
  }
  const hint = `Paste the key from the backup's emergency kit${keyId ? ` (key id ${keyId})` : ""}, or the whole kit.`;
  return field("Backup key", h("textarea", { name: "key", rows: 3, spellcheck: "false", autocomplete: "off" }), { hint });
}

// describeFile reads the start of a chosen file: whether it is an encrypted backup, and with what.
async function describeFile(file) {
  const head = new Uint8Array(await file.slice(0, 13).arrayBuffer());
  if (new TextDecoder().decode(head.slice(0, 8)) !== SEALED) return { encrypted: false };
  const length = new DataView(head.buffer).getUint32(9);
  try {
    const header = JSON.parse(new TextDecoder().decode(await file.slice(13, 13 + Math.min(length, 65536)).arrayBuffer()));
    return { encrypted: true, kind: header.secret.type, keyId: header.secret.key_id || null };
  } catch {
    return { encrypted: true, kind: "key", keyId: null };
  }
}

function kitBox(made) {
  const url = URL.createObjectURL(new Blob([made.emergency_kit], { type: "text/plain" }));
  return h(
    "div",
    { class: "alert alert-warn note", role: "note" },
    h("p", {}, h("strong", {}, "Save the emergency kit now: "), "this backup is encrypted with a new key, shown "
      + "only this once. xcore keeps no copy; without the key nobody can restore the backup, you included."),
    h("pre", { "aria-label": "Emergency kit" }, made.emergency_kit),
    h("a", { href: url, download: made.emergency_kit_name, class: "button" }, "Download the emergency kit"),
  );
}

export async function render({ main }) {
  main.append(h("h1", {}, "Backups"));
  const listError = errorBox();
  const actionError = errorBox();
  const uploadError = errorBox();
  const message = h("div", { class: "alert alert-ok message", role: "status", hidden: true });
  const kit = h("div");
  const about = h("p", { class: "muted" });
  const encryptionNote = h("div");
  const support = h("div");
  const listBox = h("div");
  let answer = null;

  function showMessage(...parts) {
    const shown = parts.filter(Boolean);
    message.replaceChildren(...shown);
    message.hidden = !shown.length;
  }

  async function load() {
    listError.hide();
    try {
      // After a restore the session may be gone: no silent redirect, the page says so (see restore()).
      answer = await api.get("/api/admin/backups", null, { noRefresh: true });
    } catch (err) {
      if (err.status === 401) {
        listError.replaceChildren(
          "Your session ended with the restore. ",
          link("/admin/login?next=%2Fadmin%2Fbackups", "Log in again"),
          " to go on.",
        );
        listError.hidden = false;
      } else {
        listError.show(err);
      }
      return;
    }
    about.replaceChildren("Backups are kept in ", h("code", {}, answer.directory),
      ". xcore keeps the newest ones of each kind and deletes older backups.");
    encryptionNote.replaceChildren(...(answer.encryption.problem
      ? [h("p", { class: "alert alert-warn note", role: "note" }, answer.encryption.problem)]
      : []));
    configured.textContent = `As the settings say (${answer.encryption.mode === "off" ? "not encrypted" : answer.encryption.mode})`;
    support.replaceChildren(...(answer.restore.supported
      ? []
      : [h("p", { class: "alert alert-warn note", role: "note" }, "Restoring is not possible here: ", answer.restore.reason)]));
    const restorable = answer.restore.supported;
    fromFile.hidden = !restorable;
    listBox.replaceChildren(table({
      caption: "Backups, newest first",
      empty: "No backups yet. Back up now to make the first.",
      columns: [
        { label: "Name", render: (b) => h("code", {}, b.name), class: "wrap" },
        { label: "Kind", render: (b) => badge(b.kind) },
        {
          label: "Holds",
          render: (b) => `${b.complete ? "everything" : "the database"}${b.encrypted ? `, encrypted (${b.secret})` : ""}`,
        },
        { label: "Size", render: (b) => fmtBytes(b.size), class: "num nowrap" },
        { label: "Created", render: (b) => fmtTime(b.created), class: "nowrap" },
        {
          label: "Actions",
          class: "nowrap",
          render: (b) => h(
            "div",
            { class: "row" },
            h("a", {
              href: `/api/admin/backups/${encodeURIComponent(b.name)}`,
              download: b.name,
              "aria-label": `Download ${b.name}`,
            }, "Download"),
            restorable
              ? button("Restore", { class: "small", "aria-label": `Restore ${b.name}`, onclick: () => restore(b) })
              : null,
          ),
        },
      ],
      rows: answer.items,
    }));
  }

  // Back up now, with the encryption chosen.
  const configured = h("option", { value: "settings" }, "As the settings say");
  const encryption = select("encryption", [
    ["off", "Not encrypted"],
    ["passphrase", "Encrypted with a passphrase"],
    ["key", "Encrypted with a new key (emergency kit)"],
  ]);
  encryption.prepend(configured);
  encryption.value = "settings";
  const passphrase = field(
    "Passphrase",
    input("new-passphrase", { type: "password", autocomplete: "new-password", minlength: 12 }),
    { hint: "At least 12 characters. Keep it: without it nobody can restore the backup." },
  );
  passphrase.hidden = true;
  encryption.addEventListener("change", () => { passphrase.hidden = encryption.value !== "passphrase"; });

  const backUp = button("Back up now", {
    class: "primary",
    onclick: async () => {
      actionError.hide();
      passphrase.setError("");
      showMessage();
      kit.replaceChildren();
      backUp.disabled = true;
      const body = { encryption: encryption.value };
      if (encryption.value === "passphrase") body.passphrase = passphrase.control.value;
      try {
        const made = await api.post("/api/admin/backups", body);
        passphrase.control.value = "";
        showMessage(`Backed up as ${made.name} (${fmtBytes(made.size)}).`);
        if (made.emergency_kit) kit.replaceChildren(kitBox(made));
        await load();
      } catch (err) {
        if (err.problem?.errors?.some((e) => e.field === "passphrase")) passphrase.setError(errorMessage(err));
        else actionError.show(err);
      } finally {
        backUp.disabled = false;
      }
    },
  });

  function restored(done) {
    showMessage(
      h("p", {}, h("strong", {}, `Restored ${done.restored}. `), done.message),
      done.restart_required ? h("p", {}, h("strong", {}, "Restart xcore for the restored settings to take effect.")) : null,
    );
  }

  function busy(on) {
    for (const b of main.querySelectorAll("button")) b.disabled = on;
    if (!on) restoreFile.disabled = !chosen;
  }

  async function restore(item) {
    actionError.hide();
    showMessage();
    const secret = item.encrypted ? secretField(item.secret, item.key_id) : null;
    const ok = await confirmDialog({
      title: `Restore ${item.name}?`,
      body: restoreWarning(item.created, item.name, item.complete),
      confirmLabel: "Restore this backup",
      danger: true,
      extra: secret,
      collect: () => (secret ? { [secret.control.name]: secret.control.value } : {}),
    });
    if (!ok) return;
    busy(true);
    let done;
    try {
      done = await api.post(`/api/admin/backups/${encodeURIComponent(item.name)}/restore`, ok === true ? undefined : ok);
    } catch (err) {
      actionError.show(err);
      busy(false);
      return;
    }
    busy(false);
    restored(done);
    await load();
  }

  // Restore from a file: a complete backup uploaded from this computer.
  const picker = h("input", { type: "file", name: "archive", accept: ".xcbackup" });
  const pickerField = field("Backup file (.xcbackup)", picker, {
    hint: "A complete backup downloaded from here or written by `xcore db backup`, from this xcore or another.",
  });
  const secretBox = h("div");
  const progress = h("progress", { max: 1, value: 0, "aria-label": "Upload progress", hidden: true });
  const restoreFile = button("Restore from this file", { class: "danger", disabled: true });
  let chosen = null;
  picker.addEventListener("change", async () => {
    uploadError.hide();
    const file = picker.files[0];
    chosen = null;
    secretBox.replaceChildren();
    restoreFile.disabled = !file;
    if (!file) return;
    const about = await describeFile(file);
    chosen = { file, secret: about.encrypted ? secretField(about.kind, about.keyId) : null };
    if (chosen.secret) secretBox.replaceChildren(chosen.secret);
  });
  restoreFile.addEventListener("click", async () => {
    if (!chosen) return;
    uploadError.hide();
    showMessage();
    const { file, secret } = chosen;
    const ok = await confirmDialog({
      title: `Restore ${file.name}?`,
      body: restoreWarning(null, file.name, true),
      confirmLabel: "Restore this backup",
      danger: true,
    });
    if (!ok) return;
    const form = new FormData();
    form.append("data", file, file.name);
    if (secret && secret.control.value) form.append(secret.control.name, secret.control.value);
    busy(true);
    progress.hidden = false;
    try {
      const done = await api.upload(UPLOAD, form, (fraction) => { progress.value = fraction; });
      restored(done);
    } catch (err) {
      uploadError.show(err);
    } finally {
      busy(false);
      progress.hidden = true;
    }
    await load();
  });
  const fromFile = section(
    "Restore from a file",
    h("p", {}, "Upload a complete backup to bring this xcore back to it. The whole file is checked before "
      + "anything is changed."),
    pickerField,
    secretBox,
    h("div", { class: "row" }, restoreFile, progress),
    uploadError,
  );

  main.append(
    section(
      "Back up",
      about,
      h("p", {}, "A backup holds everything: the core database (accounts, roles, plugin states and settings), "
        + "the installed plugin bundles, every plugin's data and the settings file, made while xcore runs."),
      encryptionNote,
      field("Encryption", encryption),
      passphrase,
      h("div", { class: "row" }, backUp),
      actionError,
      message,
      kit,
    ),
    section("All backups", support, listError, listBox),
    fromFile,
  );
  await load();
}
