// The notes page, at /admin/apps/notes/notes: every logged-in user reads the notes; a user who holds
// notes.write also gets the form to add one and a Delete button on each.
//
// It runs in xcore's app shell, under the app's Content-Security-Policy (script-src 'self'): no inline script,
// no eval, no HTML strings. Every node is built with the SDK's h(), which sets text, never markup, so a note's
// title or body shows as typed, whatever it holds. Hiding the buttons is a courtesy: the server refuses a write
// without notes.write (403) whatever the page shows.

export const title = "Notes";

const WRITE = "notes.write";

export function render(ctx) {
  const { main, plugin, xcore } = ctx;
  const { api, can, notice, h, clear } = xcore;
  const base = `${plugin.prefix}/`;
  const writer = can(WRITE);
  let gone = false; // set when the user leaves the page: answers that arrive later change nothing

  const count = h("p", { class: "muted" });
  const listHeading = h("h2", { id: "notes-list-heading", tabindex: "-1" }, "All notes");
  const listBox = h("div", { class: "notes-list" }, h("p", { class: "muted" }, "Loading the notes…"));
  const listSection = h(
    "section",
    { "aria-labelledby": "notes-list-heading" },
    listHeading,
    count,
    listBox,
  );

  main.append(
    h("h1", {}, "Notes"),
    h("p", { class: "lead" }, "Notes with a title and a body, kept by the notes plugin in its own database."),
    writer
      ? addForm()
      : h(
        "p",
        { class: "alert note" },
        `You can read the notes. Adding and deleting notes needs the permission ${WRITE}: ` +
          "ask an administrator for a role that has it.",
      ),
    listSection,
  );
  load();
  return () => { gone = true; };

  /** load fetches the notes and shows them; resolves to the list, or null when it could not be read. */
  async function load() {
    try {
      const notes = await api.get(base);
      if (gone) return null;
      show(notes);
      return notes;
    } catch (err) {
      if (gone) return null;
      count.textContent = "";
      const message = `Error: the notes could not be read: ${err.message}`;
      clear(listBox).append(h("p", { class: "alert alert-error", role: "alert" }, message));
      return null;
    }
  }

  function show(notes) {
    count.textContent = notes.length === 1 ? "1 note." : `${notes.length} notes.`;
    clear(listBox);
    if (!notes.length) {
      listBox.append(h("p", {}, writer ? "No notes yet: add the first one above." : "No notes yet."));
      return;
    }
    // One card per note, in as many columns as fit (the app's own classes: a page brings no styles).
    listBox.append(h("ul", { class: "grid bare-list", "aria-labelledby": "notes-list-heading" }, ...notes.map(item)));
  }

  function item(note) {
    const headingId = `note-${note.id}-title`;
    const lines = String(note.body || "").split("\n");
    const body = note.body
      ? h("p", {}, ...lines.flatMap((line, i) => (i ? [h("br"), line] : [line])))
      : h("p", { class: "muted" }, "(no body)");
    const when = h("time", { datetime: note.created_at }, formatDate(note.created_at));
    const remove = writer
      ? h("button", {
        type: "button",
        class: "danger small",
        "aria-label": `Delete note “${note.title}”`, // "Delete" first: the name holds the visible text
        onclick: () => removeNote(note),
      }, "Delete")
      : null;
    return h(
      "li",
      { class: "note card", "data-note": String(note.id) },
      h(
        "article",
        { "aria-labelledby": headingId },
        h("h3", { id: headingId }, note.title),
        body,
        h("p", { class: "muted" }, "Added ", when),
        remove,
      ),
    );
  }

  async function removeNote(note) {
    const buttons = [...listBox.querySelectorAll("li.note button")];
    const at = buttons.findIndex((b) => b.closest("li.note")?.dataset.note === String(note.id));
    for (const b of buttons) b.disabled = true;
    try {
      await api.delete(`${base}${note.id}`);
    } catch (err) {
      if (gone) return;
      notice(`The note “${note.title}” was not deleted: ${err.message}`, { kind: "error" });
      if (err.status === 404) {
        await load(); // someone else deleted it: show the list as it is now
        if (!gone) listHeading.focus();
        return;
      }
      for (const b of buttons) b.disabled = false;
      buttons[at]?.focus();
      return;
    }
    if (gone) return;
    notice(`Deleted the note “${note.title}”.`);
    const notes = await load();
    if (gone || notes === null) return;
    // Focus goes to the note that took the deleted one's place, else the one before it, else the list.
    const left = [...listBox.querySelectorAll("li.note button")];
    (left[Math.min(at, left.length - 1)] || listHeading).focus();
  }

  /** addForm is the section "Add a note": its form posts the note, and shows the server's messages. */
  function addForm() {
    const titleInput = h("input", {
      type: "text", name: "title", required: true, maxlength: "200", autocomplete: "off",
    });
    const titleField = field("Title", titleInput);
    const bodyField = field("Body", h("textarea", { name: "body", rows: "4" }));
    const fields = { title: titleField, body: bodyField };
    const problem = h("p", { class: "alert alert-error", role: "alert", hidden: true });
    const submit = h("button", { type: "submit", class: "primary" }, "Add note");
    // novalidate: the server checks the note, and its messages show under the fields they concern.
    const el = h(
      "form",
      { novalidate: true, "aria-labelledby": "notes-add-heading" },
      titleField.wrap,
      bodyField.wrap,
      problem,
      h("div", { class: "actions" }, submit),
    );
    el.addEventListener("submit", async (event) => {
      event.preventDefault();
      for (const f of Object.values(fields)) f.setError("");
      problem.hidden = true;
      submit.disabled = true;
      let note;
      try {
        note = await api.post(base, { title: titleField.control.value, body: bodyField.control.value });
      } catch (err) {
        if (gone) return;
        submit.disabled = false;
        const shown = (err.problem?.errors || []).filter((e) => fields[e.field]);
        for (const e of shown) fields[e.field].setError(e.message);
        if (shown.length) {
          fields[shown[0].field].control.focus();
        } else {
          problem.textContent = `Error: ${err.message}`;
          problem.hidden = false;
          titleField.control.focus();
        }
        return;
      }
      if (gone) return;
      submit.disabled = false;
      el.reset();
      notice(`Added the note “${note.title}”.`);
      await load();
      if (!gone) titleField.control.focus(); // ready for the next note; the notice says this one was added
    });
    return h(
      "section",
      { class: "card", "aria-labelledby": "notes-add-heading" },
      h("h2", { id: "notes-add-heading" }, "Add a note"),
      el,
    );
  }

  /** field is a labelled control with a slot for the server's message about it (tied by aria-describedby). */
  function field(label, control) {
    const id = `notes-${control.name}`;
    control.id = id;
    const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
    control.setAttribute("aria-describedby", error.id);
    const wrap = h("div", { class: "field" }, h("label", { for: id }, label), control, error);
    return {
      wrap,
      control,
      setError(message) {
        error.textContent = message ? `${label}: ${message}` : "";
        error.hidden = !message;
        if (message) control.setAttribute("aria-invalid", "true");
        else control.removeAttribute("aria-invalid");
      },
    };
  }
}

function formatDate(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}
