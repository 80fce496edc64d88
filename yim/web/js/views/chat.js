// The right column: one conversation (or a draft with a user or a shop we have no
// conversation with yet), its history with paging upwards, and the composer.
//
// Also: who is typing, presence of a one-to-one peer, media (images inline, files with a
// download), recall from a message's menu, @mentions in groups and "read by k of n" on
// one's own group messages (asked with `receipts` when they scroll into view).
import { h } from "../dom.js";
import { t, tn } from "../i18n.js";
import {
  avatar,
  convTitle,
  agentStatus,
  category,
  dayKey,
  dayLabel,
  displayName,
  messageText,
  presenceDot,
  presenceText,
  singleEmoji,
  systemText,
  timeLabel,
} from "../format.js";
import { confirmAction, openDialog } from "./dialog.js";
import { EmojiPicker } from "./emoji.js";
import { icon } from "./icons.js";
import { fileEl, imageEl, kindOf, mediaInfo } from "./mediaview.js";
import { EVERYONE, MentionPicker } from "./mentions.js";
import { richText } from "./richtext.js";
import { openMenu } from "./menu.js";
import { MUTES, muteLabel } from "../pushprefs.js";
import { ReplyBar, forwardedEl, openForward, quoteEl, quoteSig } from "./reply.js";
import { pinnedLine, reactButton, reactionKey, reactionRow } from "./reactions.js";
import { openReportDialog } from "./reports.js";
import { toast } from "./toast.js";
import { errorText } from "../errors.js";

const MAX_TEXT = 8000;
const RECALL_LIMIT_MS = 120000; // the server's default recall_limit_s
const EDIT_WINDOW_MS = 86400000; // the server's default edit_window_s
const RECEIPT_STALE_MS = 4000;
const RECEIPTS_AT_ONCE = 12;
// Group receipts are not pushed (docs/protocol.md §9.3): while own messages in view are not
// read by everyone, they are asked again, first after RECEIPT_POLL_MIN_MS, then less often
// while nothing changes (doubling up to RECEIPT_POLL_MAX_MS); any change starts over.
const RECEIPT_POLL_MIN_MS = 1500;
const RECEIPT_POLL_MAX_MS = 8000;
const MENTION_LOOKUPS = 100;
const MEDIA_KINDS = new Set(["image", "video", "file"]);

export class ChatView {
  constructor({ store, presence, typing, groups, media, relations, service, onGroupInfo, onUserMenu, pushPrefs }) {
    this.store = store;
    this.pushPrefs = pushPrefs ?? null;
    this.presence = presence;
    this.typing = typing;
    this.groups = groups;
    this.media = media;
    this.relations = relations;
    this.service = service;
    this.onGroupInfo = onGroupInfo;
    this.onUserMenu = onUserMenu;
    this.route = null; // {conv_id} | {user} | {shop_id} | null
    this.nodes = new Map(); // key -> element of the message list
    this.shownKey = null; // what the list currently shows (conv or draft)
    this.jump = null; // {seq, tries}: scroll to this message once it is loaded
    this.receipts = new Map(); // "conv:seq" -> {read_count, total, at, asking}
    this.visibleOwn = new Set(); // own group messages in view (elements)
    this.receiptPoll = { timer: 0, delay: RECEIPT_POLL_MIN_MS };
    this.shopAsked = new Set(); // shop ids being looked up for a shop draft

    this.head = h("header", { class: "chat-head" });
    this.top = h("div", { class: "history-top" });
    this.list = h("ol", { class: "msg-list", "aria-live": "polite" });
    this.scroller = h("div", { class: "messages", tabindex: "-1" }, this.top, this.list);
    this.scroller.addEventListener("scroll", () => this.onScroll(), { passive: true });
    this.observer = new IntersectionObserver((entries) => this.onSeen(entries), { root: this.scroller });

    this.input = h("textarea", {
      class: "composer-input",
      rows: 1,
      maxlength: MAX_TEXT,
      placeholder: t("Message"),
      "aria-label": t("Message"),
      enterkeyhint: "send",
    });
    this.input.addEventListener("keydown", (e) => this.onKey(e));
    this.input.addEventListener("input", () => this.onInput());
    this.input.addEventListener("paste", (e) => this.onPaste(e));
    this.picker = new EmojiPicker((emoji) => this.insert(emoji));
    this.mentions = new MentionPicker(this.input, () => this.mentionCandidates());
    this.emojiBtn = h(
      "button",
      {
        type: "button",
        class: "ghost emoji-btn",
        title: t("Emoji"),
        "aria-label": t("Emoji"),
        "aria-haspopup": "dialog",
        onclick: () => this.picker.toggle(),
      },
      "☺",
    );
    this.fileInput = h("input", { type: "file", class: "file-input", "aria-label": t("Attach a file"), multiple: true });
    this.fileInput.addEventListener("change", () => {
      this.attach([...this.fileInput.files]);
      this.fileInput.value = "";
    });
    this.attachBtn = h(
      "button",
      {
        type: "button",
        class: "ghost attach-btn",
        title: t("Send an image or a file"),
        "aria-label": t("Send an image or a file"),
        onclick: () => this.fileInput.click(),
      },
      icon("attach", 21),
    );
    this.sendBtn = h("button", { type: "submit", class: "primary send-btn" }, t("Send"));
    this.composer = h(
      "form",
      { class: "composer", onsubmit: (e) => this.onSubmit(e) },
      this.picker.el,
      this.mentions.el,
      this.emojiBtn,
      this.attachBtn,
      this.fileInput,
      this.input,
      this.sendBtn,
    );
    this.replyBar = new ReplyBar(store);
    this.typingLine = h("p", { class: "typing-line", "aria-live": "polite" });
    this.gone = h("p", { class: "chat-gone", hidden: true });
    this.pane = h(
      "div",
      { class: "chat-pane", hidden: true },
      this.head,
      this.scroller,
      this.typingLine,
      this.replyBar.el,
      this.composer,
      this.gone,
    );
    this.pane.addEventListener("dragover", (e) => {
      if (e.dataTransfer?.types.includes("Files")) e.preventDefault();
    });
    this.pane.addEventListener("drop", (e) => {
      if (!e.dataTransfer?.files.length) return;
      e.preventDefault();
      this.attach([...e.dataTransfer.files]);
    });
    this.emptyState = h(
      "div",
      { class: "chat-empty" },
      h("div", { class: "chat-empty-mark" }, "y"),
      h("p", null, t("Pick a conversation, or start one with a username.")),
    );
    this.el = h("section", { class: "chat" }, this.emptyState, this.pane);

    typing.addEventListener("change", (e) => {
      if (e.detail !== this.route?.conv_id) return;
      this.renderTyping();
      this.pollReceiptsSoon(); // someone is active in the chat: they may be reading, too
    });
    this._onVisibility = () => {
      if (document.visibilityState === "visible") this.pollReceiptsSoon();
    };
    document.addEventListener("visibilitychange", this._onVisibility);
    store.socket.addEventListener("open", () => this.pollReceiptsSoon()); // reads missed while away
    presence.addEventListener("change", (e) => {
      if (e.detail === this.peer()?.user_id) this.renderHead();
    });
    groups.addEventListener("change", (e) => {
      if (e.detail === this.route?.conv_id) this.render();
    });
    service.addEventListener("change", () => {
      if (this.conv()?.type === "service" || this.route?.shop_id) this.render();
    });
    relations.addEventListener("change", () => {
      if (this.peer()) this.renderHead();
    });
    pushPrefs?.addEventListener("change", () => this.renderHead());
    // Someone wrote in this group: they have read what came before; ask again.
    store.addEventListener("message", (e) => {
      const m = e.detail;
      if (m.conv_id === this.route?.conv_id && m.sender_id !== store.me.user_id) this.refreshReceiptsSoon();
    });
  }

  // Logged out: no more timers or document listeners for this view.
  stop() {
    document.removeEventListener("visibilitychange", this._onVisibility);
    clearTimeout(this.receiptPoll.timer);
    clearTimeout(this.receiptTimer);
  }

  // --- routing --------------------------------------------------------------------------
  show(route) {
    this.route = route;
    const key = !route
      ? null
      : route.conv_id
        ? "c:" + route.conv_id
        : route.shop_id
          ? "s:" + route.shop_id
          : "u:" + route.user.user_id;
    if (key !== this.shownKey) {
      // A draft becoming its conversation (first message sent) keeps what is being typed.
      const sameChat = !this.shownKey?.startsWith("c:") && route?.conv_id;
      this.shownKey = key;
      for (const el of this.nodes.values()) this.observer.unobserve(el);
      this.nodes.clear();
      this.visibleOwn.clear();
      this.list.replaceChildren();
      if (!sameChat) this.input.value = "";
      this.mentions.reset();
      this.autosize();
      this.picker.close();
      this.replyBar.clear();
      this.stickToBottom = true;
      this.jump = null;
    }
    this.emptyState.hidden = !!route;
    this.pane.hidden = !route;
    if (route) {
      const conv = this.conv();
      if (conv && !conv.loaded) this.store.loadLatest(conv).catch(() => {});
      if (matchMedia("(pointer: fine)").matches) this.input.focus({ preventScroll: true });
    }
    this.render();
  }

  // Show a message (a search hit): load older pages until it is there, then scroll to it.
  jumpTo(seq) {
    this.jump = { seq, tries: 0 };
    this.stickToBottom = false;
    this.render();
  }

  conv() {
    return this.route?.conv_id ? (this.store.convs.get(this.route.conv_id) ?? null) : null;
  }

  peer() {
    const conv = this.conv();
    if (conv) return conv.type === "direct" ? conv.peer : null;
    return this.route?.user ?? null;
  }

  // The shop of a shop draft (route {shop_id}): Shop, null when there is no such shop, or
  // undefined while it is being looked up (a render follows).
  shop() {
    const id = this.route?.shop_id;
    if (!id) return undefined;
    const info = this.service.shopInfo(id);
    if (info === undefined && this.store.socket.isOpen && !this.shopAsked.has(id)) {
      this.shopAsked.add(id);
      this.service
        .lookupShop(id)
        .catch(() => {})
        .finally(() => {
          this.shopAsked.delete(id);
          if (this.route?.shop_id === id) this.render();
        });
    }
    return info;
  }

  // The customer of a service conversation I serve (agent side), as a user.
  customer(conv) {
    const s = conv && this.service.sessionOf(conv.conv_id);
    return s ? this.store.user(s.customer_id) : null;
  }

  // --- rendering ------------------------------------------------------------------------
  render() {
    if (!this.route) return;
    const conv = this.conv();
    if (conv?.type === "group" && !this.groups.get(conv.conv_id)) this.groups.load(conv.conv_id).catch(() => {});
    this.renderHead();
    const noShop = !conv && this.route.shop_id && this.shop() === null;
    const inactive = (conv && !conv.active) || noShop;
    this.composer.hidden = !!inactive;
    this.gone.hidden = !inactive;
    this.gone.textContent = noShop
      ? t("There is no shop with id {id}. Check the number with the shop.", { id: this.route.shop_id })
      : conv?.type === "service"
        ? t("This customer is no longer assigned to you.")
        : t("You are no longer a member of this group.");
    this.attachBtn.hidden = !!this.route.shop_id && !conv; // a shop chat starts with words
    if (this.route.conv_id && !conv) {
      this.top.textContent = this.store.ready ? t("This conversation is not available.") : t("Loading…");
      return;
    }
    let top;
    if (noShop) top = "";
    else if (!conv) top = this.route.shop_id ? t("Write to the shop to start.") : t("Say hello to start the conversation.");
    else if (!conv.loaded) top = t("Loading…");
    else if (conv.loadingOlder) top = t("Loading earlier messages…");
    else if (conv.hasOlder) top = "";
    else top = conv.msgs.length ? t("This is the beginning of the conversation.") : "";
    this.top.textContent = top;
    this.renderMessages(conv);
    this.renderTyping();
    // Members (or their names) may have arrived after "@" was typed.
    if (conv?.type === "group" && document.activeElement === this.input) this.mentions.update();
  }

  renderHead() {
    if (!this.route) return;
    const conv = this.conv();
    const peer = this.peer();
    const type = conv?.type ?? (this.route.shop_id ? "service" : "direct");
    let title;
    let sub = "";
    let actions = [];
    let face;
    if (type === "group") {
      title = convTitle(conv);
      sub = tn("{n} member", "{n} members", conv.member_count);
      face = avatar({ user_id: conv.conv_id, display_name: conv.name });
      actions.push(
        h(
          "button",
          { type: "button", class: "ghost head-btn", onclick: () => this.onGroupInfo(conv.conv_id) },
          t("Group info"),
        ),
      );
    } else if (type === "service") {
      const customer = this.customer(conv);
      const shop = conv ? null : this.shop();
      title = conv ? convTitle(conv, customer) : shop === null ? t("No such shop") : (shop?.name ?? t("Shop"));
      const shopName = conv?.name || shop?.name || t("Shop");
      face = avatar(customer ?? { user_id: conv?.conv_id ?? this.route.shop_id, display_name: shopName });
      const serving = conv && this.service.sessionOf(conv.conv_id);
      if (serving) {
        sub = t("Customer · {category}", { category: category(serving.category) });
        actions = [
          h("button", { type: "button", class: "ghost head-btn", onclick: () => this.transfer(serving) }, t("Transfer")),
          h(
            "button",
            { type: "button", class: "ghost head-btn", onclick: () => this.closeSession(serving) },
            t("Close session"),
          ),
        ];
      } else if (conv && conv.active !== false) {
        sub = this.customerLine(conv);
        const s = this.service.customerSession(conv.conv_id);
        if (s?.status === "closed" && s.session_id) {
          actions = [
            h(
              "button",
              { type: "button", class: "ghost head-btn", onclick: () => this.rate(s) },
              s.rating ? t("Change rating") : t("Rate this chat"),
            ),
          ];
        }
      } else if (!conv && shop) {
        sub = t("Shop id {id}", { id: this.route.shop_id });
      }
    } else {
      title = conv ? convTitle(conv) : displayName(peer);
      face = h("span", { class: "face" }, avatar(peer), presenceDot(this.presence.get(peer?.user_id)));
      this.presence.watch([peer?.user_id]);
      sub = [peer?.username ? "@" + peer.username : "", presenceText(this.presence.get(peer?.user_id))]
        .filter(Boolean)
        .join(" · ");
      if (peer) {
        actions.push(
          h(
            "button",
            {
              type: "button",
              class: "ghost head-btn more-btn",
              "aria-label": t("More about {name}", { name: displayName(peer) }),
              title: t("More"),
              onclick: (e) => this.onUserMenu(peer, e.currentTarget),
            },
            "⋯",
          ),
        );
      }
    }
    if (conv && conv.active !== false && this.pushPrefs) actions.unshift(this.muteButton(conv.conv_id));
    this.head.replaceChildren(
      h("a", { href: "#/", class: "back", "aria-label": t("Back to conversations") }, "‹"),
      face,
      h(
        "div",
        { class: "chat-title-box" },
        h("h2", { class: "chat-title" }, title),
        sub ? h("p", { class: "chat-sub" }, sub) : null,
        conv ? pinnedLine(conv, (seq) => this.jumpTo(seq)) : null,
      ),
      h("div", { class: "head-actions" }, actions),
    );
  }

  // Which messages of this conversation notify me (push and this page alike), docs/protocol.md §20.
  muteButton(convId) {
    const mode = this.pushPrefs.mode(convId);
    const label = t("Notifications: {mode}", { mode: muteLabel(mode) });
    return h(
      "button",
      {
        type: "button",
        class: "ghost head-btn mute-btn",
        dataset: { mute: mode },
        "aria-label": label,
        "aria-haspopup": "menu",
        title: label,
        onclick: (e) => {
          const choices = MUTES.map((m) => ({
            label: h("span", { class: "mute-choice" + (m === mode ? " current" : "") }, muteLabel(m)),
            onSelect: () => this.pushPrefs.setMute(convId, m).catch((err) => toast(errorText(err))),
          }));
          openMenu(e.currentTarget, choices, t("Notifications"));
        },
      },
      icon(mode !== "off" ? "bellMuted" : "bell", 18),
    );
  }

  customerLine(conv) {
    const s = this.service.customerSession(conv.conv_id);
    if (!s?.status) return "";
    if (s.status === "queued") {
      return s.position
        ? t("Waiting for an agent · position {n}", { n: s.position })
        : t("Waiting for an agent");
    }
    if (s.status === "active") return t("Chatting with {name}", { name: displayName(this.store.user(s.agent_id)) });
    if (s.rating) return t("Chat closed · you rated it {n} of 5 · write again to start a new one", { n: s.rating });
    return t("Chat closed · write again to start a new one");
  }

  // The customer rates a closed session: 1 … 5 stars and an optional comment.
  rate(session) {
    let rating = session.rating ?? 0;
    const stars = [1, 2, 3, 4, 5].map((n) =>
      h(
        "button",
        {
          type: "button",
          class: "star",
          role: "radio",
          "aria-label": t("{n} of 5", { n }),
          onclick: () => {
            rating = n;
            paint();
            dialog.error.textContent = ""; // "choose stars" no longer applies
          },
        },
        "★",
      ),
    );
    const paint = () => {
      stars.forEach((el, i) => {
        el.classList.toggle("on", i < rating);
        el.setAttribute("aria-checked", i + 1 === rating ? "true" : "false");
      });
    };
    paint();
    const comment = h("textarea", { name: "comment", rows: 3, maxlength: 500, placeholder: t("Optional") });
    comment.value = session.comment ?? "";
    const shop = this.conv()?.name || t("the shop");
    const dialog = openDialog({
      title: t("Rate this chat"),
      content: [
        h("p", { class: "dialog-note" }, t("How did {shop} help you?", { shop })),
        h("div", { class: "stars", role: "radiogroup", "aria-label": t("Rating") }, stars),
        h("label", { class: "field" }, h("span", null, t("Comment")), comment),
      ],
      submitLabel: t("Send rating"),
      onSubmit: async () => {
        if (!rating) throw new Error(t("Choose 1 to 5 stars."));
        await this.service.rate(session, rating, comment.value.trim());
        toast(t("Thank you for your rating."));
      },
    });
  }

  renderTyping() {
    const conv = this.conv();
    const who = conv ? this.typing.who(conv.conv_id) : [];
    if (!who.length) {
      this.typingLine.textContent = "";
      return;
    }
    const names = who.map((id) => displayName(this.store.user(id)));
    this.typingLine.textContent =
      names.length === 1
        ? t("{name} is typing…", { name: names[0] })
        : t("{names} and {last} are typing…", { names: names.slice(0, -1).join(t(", ")), last: names.at(-1) });
  }

  items(conv) {
    const me = this.store.me.user_id;
    const group = conv?.type === "group" || conv?.type === "service";
    const items = [];
    let day = null;
    let lastSender = null;
    const push = (m, local) => {
      if (m.kind === "recall" || m.kind === "edit") return; // the message itself shows it
      const d = dayKey(m.created_at);
      if (d !== day) {
        day = d;
        lastSender = null;
        items.push({ key: "d:" + d, day: m.created_at });
      }
      if (m.kind === "system") {
        lastSender = null;
        items.push({ key: "m:" + m.msg_id, system: m });
        return;
      }
      const mine = local || m.sender_id === me;
      const from = group && !mine && m.sender_id !== lastSender ? m.sender_id : null;
      lastSender = mine ? me : m.sender_id;
      items.push({ key: local ? "l:" + m.client_msg_id : "m:" + m.msg_id, msg: m, local, mine, from });
    };
    if (conv?.loaded) for (const m of conv.msgs) push(m, false);
    for (const m of this.store.outboxFor(conv?.conv_id ?? null, this.route.user?.user_id, this.route.shop_id)) {
      push(m, true);
    }
    return items;
  }

  status(item, conv) {
    if (!item.mine) return null;
    if (item.local) return item.msg.state === "failed" ? "failed" : "sending";
    if (conv?.peer_read_seq != null && item.msg.seq <= conv.peer_read_seq) return "read";
    if (conv?.type === "group" && this.readByAll(conv, item.msg.seq)) return "read";
    return "sent";
  }

  readByAll(conv, seq) {
    const r = this.receipts.get(conv.conv_id + ":" + seq);
    return !!r && r.total > 0 && r.read_count >= r.total;
  }

  // "Read by k of n" for one's own group messages.
  receiptText(item, conv) {
    if (conv?.type !== "group" || !item.mine || item.local || item.msg.recalled) return "";
    const r = this.receipts.get(conv.conv_id + ":" + item.msg.seq);
    if (!r || r.total === 0) return "";
    if (r.read_count === 0) return t("Not read yet");
    return r.read_count >= r.total ? t("Read by all") : t("Read by {n} of {total}", { n: r.read_count, total: r.total });
  }

  renderMessages(conv) {
    const s = this.scroller;
    const atBottom = s.scrollHeight - s.scrollTop - s.clientHeight < 48;
    const oldHeight = s.scrollHeight;
    const oldTop = s.scrollTop;
    const oldFirst = this.list.querySelector(".msg")?.dataset.key;
    const oldLast = this.list.lastElementChild?.dataset.key;

    const items = this.items(conv);
    const keep = new Set();
    let ref = this.list.firstElementChild;
    for (const item of items) {
      keep.add(item.key);
      const author = item.from ? this.store.user(item.from) : null;
      const from = item.from ? `${displayName(author)}|${author?.avatar ?? ""}` : "";
      let sig = "";
      if (item.msg) {
        const m = item.msg;
        sig = [
          this.status(item, conv),
          m.recalled ? 1 : 0,
          from,
          this.receiptText(item, conv),
          item.local ? `${m.state}${m.upload?.media ? 1 : 0}` : "",
          this.canAct(item, conv) ? 1 : 0,
          this.mentionLabels(m).join(","),
          this.hasMenu(item, conv) ? 1 : 0,
          quoteSig(m, conv),
          reactionKey(m),
          (conv?.pinned ?? []).some((p) => p.seq === m.seq) ? "p" : "",
          m.body?.edited_at ?? "",
          m.kind === "text" ? messageText(m) : "",
        ].join("|");
      } else if (item.system) {
        sig = systemText(item.system, (id) => this.nameOf(id));
      }
      let el = this.nodes.get(item.key);
      if (!el || el.dataset.sig !== sig) {
        const fresh = item.msg
          ? this.messageEl(item, conv)
          : item.system
            ? this.systemEl(item.system)
            : this.dayEl(item.day);
        fresh.dataset.key = item.key;
        fresh.dataset.sig = sig;
        if (el) {
          this.observer.unobserve(el);
          this.visibleOwn.delete(el);
          el.replaceWith(fresh);
        }
        if (ref === el) ref = fresh;
        el = fresh;
        this.nodes.set(item.key, el);
        if (conv?.type === "group" && item.mine && !item.local && !item.msg.recalled) this.observer.observe(el);
      }
      if (el !== ref) this.list.insertBefore(el, ref);
      else ref = ref.nextElementSibling;
    }
    for (const [key, el] of this.nodes) {
      if (!keep.has(key)) {
        this.observer.unobserve(el);
        this.visibleOwn.delete(el);
        el.remove();
        this.nodes.delete(key);
      }
    }

    if (this.jump && conv?.loaded) {
      this.doJump(conv);
      return;
    }
    const last = items.at(-1);
    if (this.stickToBottom || (last && last.key !== oldLast && (atBottom || last.mine))) {
      s.scrollTop = s.scrollHeight;
      if (items.length) this.stickToBottom = false;
    } else if (oldFirst && this.list.querySelector(".msg")?.dataset.key !== oldFirst) {
      s.scrollTop = oldTop + (s.scrollHeight - oldHeight); // older messages came in above
    }
    // A short history that does not fill the view cannot be scrolled: load on.
    if (conv?.loaded && conv.hasOlder && !conv.loadingOlder && s.scrollHeight <= s.clientHeight + 8) {
      this.store.loadOlder(conv).catch(() => {});
    }
  }

  doJump(conv) {
    const { seq } = this.jump;
    const el = this.list.querySelector(`.msg[data-seq="${seq}"]`);
    if (el) {
      this.jump = null;
      el.scrollIntoView({ block: "center" });
      el.classList.add("flash");
      setTimeout(() => el.classList.remove("flash"), 2000);
      return;
    }
    const first = conv.msgs[0]?.seq ?? Infinity;
    if (conv.hasOlder && first > seq && this.jump.tries < 40) {
      if (!conv.loadingOlder) {
        this.jump.tries += 1;
        this.store.loadOlder(conv).catch(() => {});
      }
    } else {
      this.jump = null; // not there (recalled, or outside my window)
      this.scroller.scrollTop = this.scroller.scrollHeight;
    }
  }

  nameOf(userId) {
    return userId === this.store.me.user_id ? t("You") : displayName(this.store.user(userId));
  }

  systemEl(m) {
    return h("li", { class: "system-note" }, h("span", null, systemText(m, (id) => this.nameOf(id))));
  }

  dayEl(ms) {
    return h("li", { class: "day-sep" }, h("span", null, dayLabel(ms)));
  }

  // Whether a message has actions (recall): one's own within the limit, or any message
  // of a group one administers.
  canAct(item, conv) {
    const m = item.msg;
    if (item.local || m.recalled || !m.seq || !conv?.active) return false;
    if (item.mine) return Date.now() - m.created_at < RECALL_LIMIT_MS || this.groups.isAdmin(conv.conv_id);
    return conv.type === "group" && this.groups.isAdmin(conv.conv_id);
  }

  // Whether a message has a menu: reply and forward for any sent message of an active
  // conversation, recall as canAct says.
  hasMenu(item, conv) {
    const m = item.msg;
    return !item.local && !m.recalled && !!m.seq && !!conv?.active;
  }

  messageEl(item, conv) {
    const m = item.msg;
    if (m.recalled) {
      const who = item.mine ? t("You") : displayName(this.store.user(m.sender_id));
      return h(
        "li",
        { class: "recalled-note", dataset: { seq: String(m.seq), msgId: m.msg_id } },
        h("span", null, t("{who} recalled a message", { who })),
      );
    }
    const status = this.status(item, conv);
    const emoji = m.kind === "emoji";
    const media = MEDIA_KINDS.has(m.kind);
    const cls = ["msg", item.mine ? "mine" : "theirs"];
    if (emoji) cls.push("emoji-only");
    if (media) cls.push("media-msg");
    if (m.kind === "image") cls.push("image-msg");
    if (status) cls.push("is-" + status);
    if (!item.local && this.store.mentionsMe(m)) cls.push("mentions-me");
    const receipt = this.receiptText(item, conv);
    const meta = h(
      "span",
      { class: "meta" },
      receipt ? h("span", { class: "receipt" }, receipt) : null,
      m.body?.edited_at ? h("span", { class: "edited", title: t("Edited") }, t("edited")) : null,
      h("time", { datetime: new Date(m.created_at).toISOString() }, timeLabel(m.created_at)),
      status ? statusMark(status) : null,
    );
    let content;
    if (media) {
      const info = mediaInfo(m, item.local, this.store.previews);
      const uploading = item.local && status !== "failed";
      content = m.kind === "image" ? imageEl(info, this.media, uploading) : fileEl(info, this.media, uploading);
    } else {
      content = h("p", { class: "text" }, this.withMentions(m));
    }
    const actions = this.hasMenu(item, conv)
      ? h(
          "button",
          {
            type: "button",
            class: "msg-actions",
            "aria-label": t("Message actions"),
            title: t("More"),
            onclick: (e) => this.messageMenu(item, conv, e.currentTarget),
          },
          "⋯",
        )
      : null;
    const bubble = h(
      "div",
      { class: "bubble" },
      forwardedEl(m, this.store),
      quoteEl(m, conv, this.store, (seq) => this.jumpTo(seq)),
      content,
      meta,
    );
    if (actions) {
      bubble.addEventListener("contextmenu", (e) => {
        e.preventDefault();
        this.messageMenu(item, conv, { x: e.clientX, y: e.clientY });
      });
    }
    return h(
      "li",
      { class: cls.join(" "), dataset: m.seq ? { seq: String(m.seq), msgId: m.msg_id } : { local: "1" } },
      item.from
        ? h(
            "div",
            { class: "sender-line" },
            avatar(this.store.user(item.from), "xs"),
            h("span", { class: "sender" }, displayName(this.store.user(item.from))),
          )
        : null,
      h("div", { class: "bubble-row" }, bubble, actions, item.local ? null : reactButton(this.store, conv, m)),
      item.local ? null : reactionRow(this.store, conv, m),
      status === "failed"
        ? h(
            "p",
            { class: "failed-note" },
            (item.msg.code || item.msg.error
              ? errorText({ code: item.msg.code, message: item.msg.error }, "send")
              : t("Not sent.")) + " ",
            linkButton(t("Retry"), () => this.store.retry(m.client_msg_id)),
            " · ",
            linkButton(t("Delete"), () => this.store.discard(m.client_msg_id)),
          )
        : null,
    );
  }

  // The names a text message mentions, as written in it ("@Name").
  mentionLabels(m) {
    if (m.kind !== "text" || m.recalled || (!m.mentions?.length && !m.mention_all)) return [];
    const labels = (m.mentions ?? []).map((id) => this.store.user(id)).filter(Boolean).map(displayName);
    if (m.mention_all) labels.push(EVERYONE);
    return labels;
  }

  // A text with its @mentions marked and its links clickable.
  withMentions(m) {
    return richText(messageText(m), this.mentionLabels(m));
  }

  messageMenu(item, conv, at) {
    const items = [
      { label: t("Reply"), onSelect: () => this.startReply(item.msg) },
      { label: t("Forward"), onSelect: () => openForward(this.store, item.msg) },
    ];
    if (this.canEdit(item)) items.push({ label: t("Edit"), onSelect: () => this.openEdit(item, conv) });
    items.push({ label: t("Delete for me"), danger: true, onSelect: () => this.confirmHide(item, conv) });
    if (this.canAct(item, conv)) {
      items.push({ label: t("Recall"), danger: true, onSelect: () => this.confirmRecall(item, conv) });
    }
    if (!item.mine && item.msg.kind !== "system") {
      const what = t("a message from {name}", { name: displayName(this.store.user(item.msg.sender_id)) });
      const target = { conv_id: conv.conv_id, seq: item.msg.seq };
      items.push({ label: t("Report…"), danger: true, onSelect: () => openReportDialog(this.relations.socket, target, what) });
    }
    openMenu(at, items, t("Message actions"));
  }

  // One's own text messages, within the server's default edit window.
  canEdit(item) {
    const m = item.msg;
    return item.mine && !item.local && m.kind === "text" && !m.recalled && Date.now() - m.created_at < EDIT_WINDOW_MS;
  }

  openEdit(item, conv) {
    const input = h("textarea", { class: "edit-text", rows: 3, "aria-label": t("New text") });
    input.value = messageText(item.msg);
    openDialog({
      title: t("Edit message"),
      content: input,
      submitLabel: t("Save"),
      onSubmit: () => {
        const text = input.value.trim();
        if (!text) throw new Error(t("The message cannot be empty."));
        return this.store.edit(conv.conv_id, item.msg.seq, text).catch((err) => {
          throw new Error(errorText(err));
        });
      },
    });
    input.focus();
  }

  confirmHide(item, conv) {
    confirmAction({
      title: t("Delete for you?"),
      text: t("It will be removed from your devices only; the others in this chat keep it."),
      confirmLabel: t("Delete"),
      onConfirm: () => this.store.hide(conv.conv_id, [item.msg.seq]),
    });
  }

  startReply(m) {
    this.replyBar.set(m);
    this.input.focus();
  }

  confirmRecall(item, conv) {
    const mine = item.mine;
    confirmAction({
      title: t("Recall this message?"),
      text: mine
        ? t("It will be removed for everyone in this chat. They will see that you recalled a message.")
        : t("It will be removed for everyone in this group. They will see that a message of {name} was recalled.", {
            name: displayName(this.store.user(item.msg.sender_id)),
          }),
      confirmLabel: t("Recall"),
      onConfirm: () =>
        this.store.recall(conv.conv_id, item.msg.seq).catch((err) => {
          throw new Error(errorText(err));
        }),
    });
  }

  // --- group read receipts ------------------------------------------------------------------
  onSeen(entries) {
    for (const e of entries) {
      if (e.isIntersecting) this.visibleOwn.add(e.target);
      else this.visibleOwn.delete(e.target);
    }
    this.askReceipts(false);
  }

  refreshReceiptsSoon() {
    clearTimeout(this.receiptTimer);
    this.receiptTimer = setTimeout(() => this.askReceipts(true), 300);
  }

  // Ask again shortly, and keep asking (less and less often) while the answers stay open.
  pollReceiptsSoon() {
    this.receiptPoll.delay = RECEIPT_POLL_MIN_MS;
    this.scheduleReceiptPoll();
  }

  scheduleReceiptPoll() {
    const poll = this.receiptPoll;
    clearTimeout(poll.timer);
    poll.timer = 0;
    if (!this.openReceipts()) return; // nothing in view can still change: wait for a trigger
    poll.timer = setTimeout(() => {
      poll.timer = 0;
      poll.delay = Math.min(poll.delay * 2, RECEIPT_POLL_MAX_MS);
      this.askReceipts(true);
      this.scheduleReceiptPoll();
    }, poll.delay);
  }

  // Whether an own message in view of the shown group is not yet read by everyone.
  openReceipts() {
    const conv = this.conv();
    if (conv?.type !== "group" || document.visibilityState === "hidden" || !this.store.socket.isOpen) return false;
    for (const el of this.visibleOwn) {
      const seq = Number(el.dataset.seq);
      if (seq && !this.readByAll(conv, seq)) return true;
    }
    return false;
  }

  askReceipts(force) {
    const conv = this.conv();
    if (conv?.type !== "group" || !this.store.socket.isOpen || document.visibilityState === "hidden") return;
    if (!this.receiptPoll.timer) this.scheduleReceiptPoll();
    const now = Date.now();
    // The newest few in view: read markers only move forward, so older ones change less.
    const seqs = [...this.visibleOwn]
      .map((el) => Number(el.dataset.seq))
      .filter(Boolean)
      .sort((a, b) => b - a)
      .slice(0, RECEIPTS_AT_ONCE);
    for (const seq of seqs) {
      const key = conv.conv_id + ":" + seq;
      const r = this.receipts.get(key);
      if (r?.total && r.read_count >= r.total) continue; // everyone read it: final
      if (r?.asking) {
        if (force) r.again = true; // ask once more when this answer is in
        continue;
      }
      if (r && !force && now - r.at < RECEIPT_STALE_MS) continue;
      const entry = { ...(r ?? { read_count: 0, total: 0 }), asking: true, again: false, at: now };
      this.receipts.set(key, entry);
      this.store.socket
        .request("receipts", { conv_id: conv.conv_id, seq })
        .then((res) => {
          const moved = res.read_count !== entry.read_count || res.total !== entry.total;
          this.receipts.set(key, { read_count: res.read_count, total: res.total, at: Date.now(), asking: false });
          if (this.route?.conv_id !== conv.conv_id) return;
          if (moved) this.pollReceiptsSoon(); // others are reading now: look again soon
          this.render();
        })
        .catch(() => this.receipts.set(key, { ...entry, asking: false }))
        .finally(() => {
          if (entry.again) this.refreshReceiptsSoon();
        });
    }
  }

  // --- service (agent side) -------------------------------------------------------------------
  transfer(session) {
    const shop = this.service.shops.get(session.shop_id);
    const me = this.store.me.user_id;
    const agents = (shop?.agents ?? []).filter((a) => a.user_id !== me);
    const select = h(
      "select",
      { class: "select", "aria-label": t("Transfer to") },
      h("option", { value: "" }, t("Any available agent")),
      agents.map((a) =>
        h("option", { value: "a:" + a.user_id }, `${displayName(this.store.user(a.user_id))} (${agentStatus(a.status)})`),
      ),
      ["pre_sale", "after_sale"]
        .filter((c) => c !== session.category)
        .map((c) => h("option", { value: "c:" + c }, t("Any {category} agent", { category: category(c) }))),
    );
    openDialog({
      title: t("Transfer this customer"),
      content: h("label", { class: "field" }, h("span", null, t("Transfer to")), select),
      submitLabel: t("Transfer"),
      onSubmit: () => {
        const v = select.value;
        const target = v.startsWith("a:")
          ? { to_agent: v.slice(2) }
          : { to_category: v.startsWith("c:") ? v.slice(2) : session.category };
        return this.service.transfer(session.session_id, target);
      },
    });
  }

  closeSession(session) {
    const customer = displayName(this.store.user(session.customer_id));
    confirmAction({
      title: t("Close this session?"),
      text: t(
        "{customer} will see that the chat is closed and can rate it. If they write again, a new session starts.",
        { customer },
      ),
      confirmLabel: t("Close session"),
      onConfirm: () => this.service.close(session.session_id),
    });
  }

  // --- interaction ----------------------------------------------------------------------
  onScroll() {
    const conv = this.conv();
    if (conv && this.scroller.scrollTop < 150) this.store.loadOlder(conv).catch(() => {});
  }

  mentionCandidates() {
    const conv = this.conv();
    if (conv?.type !== "group") return [];
    const me = this.store.me.user_id;
    const out = [];
    if (this.groups.isAdmin(conv.conv_id)) out.push({ id: "*", label: EVERYONE, sub: t("Everyone in the group") });
    // Names are looked up one user at a time: only the first MENTION_LOOKUPS unknown members
    // are asked for; the others join the list once known.
    let lookups = 0;
    for (const m of this.groups.members(conv.conv_id)) {
      if (m.user_id === me) continue;
      const u = this.store.users.get(m.user_id) ?? (lookups++ < MENTION_LOOKUPS ? this.store.user(m.user_id) : null);
      if (u) out.push({ id: m.user_id, label: displayName(u), sub: "@" + u.username, username: u.username });
    }
    return out;
  }

  onKey(e) {
    if (this.mentions.onKey(e)) return;
    if (e.key === "Escape" && this.picker.isOpen) {
      this.picker.close();
      return;
    }
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault(); // Enter sends; Shift+Enter is a new line; an IME keeps its Enter
      this.composer.requestSubmit();
    }
  }

  onInput() {
    this.autosize();
    this.mentions.update();
    if (this.input.value.trim()) this.typing.typed(this.route?.conv_id);
  }

  onPaste(e) {
    const files = [...(e.clipboardData?.files ?? [])];
    if (!files.length) return;
    e.preventDefault();
    this.attach(files);
  }

  insert(text) {
    const el = this.input;
    const start = el.selectionStart ?? el.value.length;
    const end = el.selectionEnd ?? el.value.length;
    el.setRangeText(text, start, end, "end");
    el.focus();
    this.autosize();
  }

  autosize() {
    this.input.style.height = "auto";
    this.input.style.height = Math.min(this.input.scrollHeight, 160) + "px";
  }

  target() {
    if (this.route.conv_id) return { conv_id: this.route.conv_id };
    if (this.route.shop_id) return { shop_id: this.route.shop_id };
    return { to: this.route.user };
  }

  attach(files) {
    if (!this.route || !files.length || this.composer.hidden) return;
    for (const file of files) this.store.sendMedia(this.target(), file, kindOf(file));
    this.stickToBottom = true;
    this.render();
  }

  onSubmit(e) {
    e.preventDefault();
    const text = this.input.value;
    if (!text.trim() || !this.route) return;
    const emoji = singleEmoji(text);
    const [kind, body] = emoji ? ["emoji", { emoji }] : ["text", { text }];
    const extra = this.conv()?.type === "group" ? this.mentions.collect(text) : {};
    Object.assign(extra, this.replyBar.take(this.route.conv_id));
    this.store.send(this.target(), kind, body, extra);
    this.input.value = "";
    this.mentions.reset();
    this.autosize();
    this.picker.close();
    this.stickToBottom = true;
    this.input.focus();
  }
}

function linkButton(label, onclick) {
  return h("button", { type: "button", class: "link", onclick }, label);
}

function statusMark(status) {
  const [mark, label] = {
    sending: ["◷", t("Sending")],
    sent: ["✓", t("Sent")],
    read: ["✓✓", t("Read")],
    failed: ["!", t("Not sent")],
  }[status];
  return h("span", { class: "status", dataset: { status }, title: label, "aria-label": label }, mark);
}
