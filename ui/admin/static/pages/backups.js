// Backups (superadmin): the backups of the core database, "back up now", downloads, and restore.
import * as api from "../api.js";
import {
  badge, button, confirmDialog, errorBox, fmtBytes, fmtTime, h, link, section, table,
} from "../dom.js";

export const title = "Backups";

function restoreWarning(item) {
  return h(
    "div",
    {},
    h("p", {}, `The database is put back as it was on ${fmtTime(item.created)}, from ${item.name}:`),
    h(
      "ul",
      {},
      h("li", {}, "First a safety backup of the current database is taken, so you can undo this by restoring it."),
      h("li", {}, "All data changes since that backup are lost: accounts, roles, passwords, plugin states, settings "
        + "and everything else changed after it was made."),
      h("li", {}, "Sessions may end: anyone who signed in since, you perhaps included, may have to sign in again."),
    ),
  );
}

export async function render({ main }) {
  main.append(h("h1", {}, "Backups"));
  const listError = errorBox();
  const actionError = errorBox();
  const message = h("div", { class: "alert alert-ok message", role: "status", hidden: true });
  const about = h("p", { class: "muted" });
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
    about.replaceChildren("Backups of the core database are kept in ", h("code", {}, answer.directory),
      ". xcore keeps the newest ones and deletes older backups.");
    support.replaceChildren(...(answer.restore.supported
      ? []
      : [h("p", { class: "alert alert-warn note", role: "note" }, "Restoring is not possible here: ", answer.restore.reason)]));
    const restorable = answer.restore.supported;
    listBox.replaceChildren(table({
      caption: "Backups, newest first",
      empty: "No backups yet. Back up now to make the first.",
      columns: [
        { label: "Name", render: (b) => h("code", {}, b.name), class: "wrap" },
        { label: "Kind", render: (b) => badge(b.kind) },
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

  const backUp = button("Back up now", {
    class: "primary",
    onclick: async () => {
      actionError.hide();
      showMessage();
      backUp.disabled = true;
      try {
        const item = await api.post("/api/admin/backups");
        showMessage(`Backed up as ${item.name} (${fmtBytes(item.size)}).`);
        await load();
      } catch (err) {
        actionError.show(err);
      } finally {
        backUp.disabled = false;
      }
    },
  });

  async function restore(item) {
    actionError.hide();
    showMessage();
    const ok = await confirmDialog({
      title: `Restore ${item.name}?`,
      body: restoreWarning(item),
      confirmLabel: "Restore this backup",
      danger: true,
    });
    if (!ok) return;
    for (const b of listBox.querySelectorAll("button")) b.disabled = true;
    backUp.disabled = true;
    let done;
    try {
      done = await api.post(`/api/admin/backups/${encodeURIComponent(item.name)}/restore`);
    } catch (err) {
      actionError.show(err);
      for (const b of listBox.querySelectorAll("button")) b.disabled = false;
      backUp.disabled = false;
      return;
    }
    backUp.disabled = false;
    showMessage(
      h("p", {}, h("strong", {}, `Restored ${done.restored}. `), done.message),
      done.restart_required ? h("p", {}, h("strong", {}, "Restart xcore for the restore to take effect.")) : null,
    );
    await load();
  }

  main.append(
    section(
      "Back up",
      about,
      h("p", {}, "A backup is a copy of the whole core database (accounts, roles, plugin states and settings), "
        + "made while xcore runs."),
      h("div", { class: "row" }, backUp),
      actionError,
      message,
    ),
    section("All backups", support, listError, listBox),
  );
  await load();
}
