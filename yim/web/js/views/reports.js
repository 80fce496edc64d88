// Reports (docs/protocol.md §19.9): the dialog in which a user reports a message or a user,
// and the Admin page's queue, where a server admin reads each report — the message as it
// was when reported (with its image or file), and the conversation around it now — and
// resolves it.
import { h } from "../dom.js";
import { messageText } from "../format.js";
import { t } from "../i18n.js";
import { Media } from "../media.js";
import { field, openDialog } from "./dialog.js";
import { fileEl, imageEl } from "./mediaview.js";
import { toast } from "./toast.js";

const MEDIA_KINDS = new Set(["image", "video", "file"]);

// The reported message's file, read through its report: an admin is usually no member of
// the conversation, so the ordinary download would refuse them. The same shape as Media,
// for the chat's image and file cards.
class ReportMedia extends Media {
  constructor(api, reportId) {
    super(api);
    this.base = `/api/v1/admin/reports/${reportId}/media/`;
  }

  thumbnail(mediaId) {
    let url = this.thumbs.get(mediaId);
    if (!url) {
      url = this.api.blob(`${this.base}${mediaId}/thumbnail`).then((b) => URL.createObjectURL(b));
      url.catch(() => this.thumbs.delete(mediaId));
      this.thumbs.set(mediaId, url);
    }
    return url;
  }

  async full(mediaId) {
    return URL.createObjectURL(await this.api.blob(`${this.base}${mediaId}`));
  }
}

const PAGE = 50;

// The admin page's tab for the queue: [id, label].
export const REPORTS_SECTION = ["reports", t("Reports")];

function categories() {
  return [
    ["spam", t("Spam")],
    ["abuse", t("Harassment or abuse")],
    ["illegal", t("Illegal content")],
    ["other", t("Something else")],
  ];
}

function categoryLabel(c) {
  return categories().find(([id]) => id === c)?.[1] ?? c;
}

function reportError(err) {
  if (err.code === "rate_limited") return t("You have sent many reports in the last hour. Try again later.");
  if (err.code === "already_recalled") return t("This message was recalled: there is nothing left to report.");
  return err.message || t("Something went wrong. Try again.");
}

// Report a message ({conv_id, seq}) or a user ({user_id}) over the socket; `what` names it
// in the dialog's title.
export function openReportDialog(socket, target, what) {
  const select = h(
    "select",
    { class: "select", name: "category", required: true },
    categories().map(([id, label]) => h("option", { value: id }, label)),
  );
  const text = h("textarea", {
    name: "text",
    maxlength: 1000,
    rows: 3,
    placeholder: t("What is wrong? Only the server's admins read this."),
  });
  const dlg = openDialog({
    title: t("Report {what}", { what }),
    content: [
      h("p", { class: "dialog-note" }, t("The admins of this server will see what you report and who reported it.")),
      field(t("Reason"), select),
      field(t("Details (optional)"), text),
    ],
    submitLabel: t("Report"),
    danger: true,
    onSubmit: async () => {
      try {
        const out = await socket.request("report", { ...target, category: select.value, text: text.value.trim() });
        toast(out.duplicate ? t("You reported this already. The admins have it.") : t("Thank you. The admins will look at it."));
      } catch (err) {
        throw new Error(reportError(err));
      }
    },
  });
  select.focus();
  return dlg;
}

// One of my reports was resolved (a `report` notice, docs/protocol.md §19.9): say whether
// the admins acted — the notice never says how, nor who.
export function watchReportOutcomes(socket) {
  socket.addEventListener("notice", (e) => {
    const frame = e.detail;
    if (frame.type !== "report" || frame.data?.status !== "resolved") return;
    toast(
      frame.data.outcome === "action_taken"
        ? t("Your report was reviewed. The admins took action.")
        : t("Your report was reviewed. The admins took no action."),
      6000,
    );
  });
}

// The queue, as one section of the AdminView (`view`: its call, fill, failed, nameOf,
// learnNames): open reports first, then the resolved ones, newest first in each.
export class ReportsQueue {
  constructor(view) {
    this.view = view;
    this.open = { rows: [], next: null };
    this.resolved = { rows: [], next: null };
    this.context = new Map(); // report_id -> AdminReportDetail, once shown
    this.media = new Map(); // report_id -> ReportMedia (its thumbnail kept while the page lives)
  }

  async page(status, before) {
    return this.view.call("GET", "/reports", { query: { status, limit: PAGE, before } });
  }

  async load() {
    try {
      const [open, resolved] = await Promise.all([this.page("open", null), this.page("resolved", null)]);
      this.open = { rows: open.reports, next: open.next_before };
      this.resolved = { rows: resolved.reports, next: resolved.next_before };
      await this.names();
      this.render();
    } catch (err) {
      this.view.failed(err);
    }
  }

  async more(which) {
    try {
      const page = await this.page(which, this[which].next);
      this[which] = { rows: [...this[which].rows, ...page.reports], next: page.next_before };
      await this.names();
      this.render();
    } catch (err) {
      toast(err.message);
    }
  }

  names() {
    const all = [...this.open.rows, ...this.resolved.rows];
    return this.view.learnNames(all.flatMap((r) => [r.reporter_id, r.user_id, r.resolved_by]));
  }

  render() {
    const { open, resolved } = this;
    this.view.fill(
      h(
        "div",
        { class: "page-form-actions" },
        h("button", { type: "button", class: "ghost", onclick: () => this.load() }, t("Refresh")),
      ),
      h("h3", { class: "admin-subtitle" }, t("Open reports")),
      open.rows.length
        ? h("ul", { class: "report-list", "aria-label": t("Open reports") }, open.rows.map((r) => this.reportEl(r)))
        : h("p", { class: "list-empty" }, t("No open reports.")),
      open.next ? this.moreButton("open", t("More open reports")) : null,
      h("h3", { class: "admin-subtitle" }, t("Resolved")),
      resolved.rows.length
        ? h("ul", { class: "report-list", "aria-label": t("Resolved reports") }, resolved.rows.map((r) => this.reportEl(r)))
        : h("p", { class: "list-empty" }, t("No resolved reports.")),
      resolved.next ? this.moreButton("resolved", t("Older reports")) : null,
    );
  }

  moreButton(which, label) {
    return h("button", { type: "button", class: "ghost", onclick: () => this.more(which) }, label);
  }

  reportEl(r) {
    const name = (id) => this.view.nameOf(id);
    const message = r.target === "message";
    const what = message ? t("A message from {name}", { name: name(r.user_id) }) : t("The user {name}", { name: name(r.user_id) });
    const parts = [
      h(
        "p",
        { class: "report-head" },
        h("strong", null, categoryLabel(r.category)),
        " · ",
        what,
        " · ",
        t("reported by {name}", { name: name(r.reporter_id) }),
        " · ",
        new Date(r.created_at).toLocaleString(),
      ),
    ];
    if (r.text) parts.push(h("p", { class: "report-text" }, "“", r.text, "”"));
    if (r.message) {
      parts.push(
        h(
          "blockquote",
          { class: "report-snapshot", "aria-label": t("The message as reported") },
          messageText({ kind: r.message.kind, body: r.message.body }),
        ),
      );
      const file = this.mediaEl(r);
      if (file) parts.push(file);
    }
    const shown = this.context.get(r.report_id);
    if (shown) parts.push(this.contextEl(r, shown));
    if (r.status === "resolved") {
      parts.push(
        h(
          "p",
          { class: "report-outcome" },
          t("Resolved: {action}, by {name}, {when}", {
            action: this.actionLabel(r.resolution),
            name: r.resolved_by == null ? t("the operator (host)") : name(r.resolved_by),
            when: new Date(r.resolved_at).toLocaleString(),
          }),
          r.note ? ` — ${r.note}` : "",
        ),
      );
    } else {
      parts.push(this.actionsEl(r, message));
    }
    return h("li", { class: "report" + (r.status === "open" ? " is-open" : ""), dataset: { reportId: r.report_id } }, parts);
  }

  // The reported image (its thumbnail; click for the full size) or a download card.
  mediaEl(r) {
    const b = r.message.body ?? {};
    if (!MEDIA_KINDS.has(r.message.kind) || !b.media_id) return null;
    let media = this.media.get(r.report_id);
    if (!media) {
      media = new ReportMedia(this.view.api, r.report_id);
      this.media.set(r.report_id, media);
    }
    const info = { id: b.media_id, name: b.name ?? "", size: b.size, width: b.width, height: b.height, thumbnail: !!b.thumbnail };
    return h("div", { class: "report-media" }, r.message.kind === "image" ? imageEl(info, media, false) : fileEl(info, media, false));
  }

  actionLabel(action) {
    return { dismiss: t("dismissed"), recall: t("message recalled"), disable: t("account disabled") }[action] ?? action;
  }

  actionsEl(r, message) {
    const button = (label, onclick, danger = false) =>
      h("button", { type: "button", class: "small " + (danger ? "primary danger" : "ghost"), onclick }, label);
    return h(
      "div",
      { class: "report-actions" },
      message && !this.context.has(r.report_id) ? button(t("Show the conversation"), () => this.showContext(r)) : null,
      button(t("Dismiss…"), () => this.resolve(r, "dismiss")),
      message ? button(t("Recall the message…"), () => this.resolve(r, "recall"), true) : null,
      button(message ? t("Disable the sender…") : t("Disable the user…"), () => this.resolve(r, "disable"), true),
    );
  }

  async showContext(r) {
    try {
      const detail = await this.view.call("GET", `/reports/${r.report_id}`);
      this.context.set(r.report_id, detail);
      await this.view.learnNames(detail.context.map((e) => e.sender_id));
      this.render();
    } catch (err) {
      toast(err.message);
    }
  }

  contextEl(r, detail) {
    return h(
      "ol",
      { class: "report-context", "aria-label": t("The conversation now") },
      detail.context.map((e) =>
        h(
          "li",
          { class: e.seq === r.seq ? "is-reported" : "" },
          h("span", { class: "report-context-who" }, this.view.nameOf(e.sender_id)),
          ": ",
          e.recalled ? t("(recalled)") : messageText({ kind: e.kind, body: e.body }),
        ),
      ),
    );
  }

  resolve(r, action) {
    const who = this.view.nameOf(r.user_id);
    const texts = {
      dismiss: [t("Dismiss this report?"), t("Nothing else changes. Other open reports of the same target are closed too.")],
      recall: [t("Recall this message?"), t("It is removed for everyone in its conversation; you are shown as who recalled it.")],
      disable: [
        t("Disable {name}?", { name: who }),
        t("{name} is signed out everywhere at once and cannot log in until an admin enables the account.", { name: who }),
      ],
    };
    const [title, text] = texts[action];
    const note = h("input", { name: "note", maxlength: 500, autocomplete: "off", placeholder: t("Kept in the audit log") });
    const dlg = openDialog({
      title,
      content: [h("p", { class: "dialog-note" }, text), field(t("Note"), note)],
      submitLabel: { dismiss: t("Dismiss"), recall: t("Recall"), disable: t("Disable") }[action],
      danger: action !== "dismiss",
      onSubmit: async () => {
        try {
          const out = await this.view.call("POST", `/reports/${r.report_id}/resolve`, { body: { action, note: note.value.trim() } });
          toast(t("Resolved: {action}", { action: this.actionLabel(out.report.resolution) }));
        } catch (err) {
          if (err.code === "already_resolved") {
            this.load();
            throw new Error(t("Another admin resolved this report already."));
          }
          throw new Error(err.message);
        }
        await this.load();
      },
    });
    note.focus();
    return dlg;
  }
}
