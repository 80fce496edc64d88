// A modal dialog with a form (<dialog>, so focus, Escape and the backdrop behave natively).
// `onSubmit` may be async; an error it throws is shown in the dialog, which stays open.
import { h } from "../dom.js";
import { errorText } from "../errors.js";
import { t } from "../i18n.js";

export function openDialog({
  title,
  content,
  submitLabel = t("OK"),
  onSubmit,
  cancelLabel = t("Cancel"),
  wide = false,
  danger = false,
}) {
  const error = h("p", { class: "form-error", role: "alert" });
  const submit = submitLabel
    ? h("button", { type: "submit", class: "primary" + (danger ? " danger" : "") }, submitLabel)
    : null;
  const dlg = h(
    "dialog",
    { class: "dialog" + (wide ? " wide" : ""), "aria-label": title },
    h(
      "form",
      {
        class: "dialog-form",
        onsubmit: async (e) => {
          e.preventDefault();
          if (!onSubmit) return close();
          error.textContent = "";
          if (submit) submit.disabled = true;
          try {
            if ((await onSubmit()) !== false) close();
          } catch (err) {
            error.textContent = errorText(err) || String(err);
          } finally {
            if (submit) submit.disabled = false;
          }
        },
      },
      h("h2", { class: "dialog-title" }, title),
      content,
      error,
      h(
        "div",
        { class: "dialog-actions" },
        h("button", { type: "button", class: "ghost", onclick: () => close() }, cancelLabel),
        submit,
      ),
    ),
  );
  function close() {
    dlg.close();
  }
  dlg.addEventListener("close", () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
  return { el: dlg, close, error };
}

export function field(label, input) {
  return h("label", { class: "field" }, h("span", null, label), input);
}

// Asks before an action that cannot be undone in one click (recall, block, closing a
// service session): `onConfirm` runs only after the confirming button, and an error it
// throws stays in the dialog.
export function confirmAction({ title, text, confirmLabel, onConfirm }) {
  return openDialog({
    title,
    content: h("p", { class: "dialog-note confirm-text" }, text),
    submitLabel: confirmLabel,
    danger: true,
    onSubmit: onConfirm,
  });
}
