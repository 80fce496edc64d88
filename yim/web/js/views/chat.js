// The right column: one conversation (or a draft with a user we have no conversation
// with yet), its history with paging upwards, and the composer.
import { h } from "../dom.js";
import {
  avatar,
  convTitle,
  dayKey,
  dayLabel,
  displayName,
  messageText,
  singleEmoji,
  systemText,
  timeLabel,
} from "../format.js";
import { EmojiPicker } from "./emoji.js";

const MAX_TEXT = 8000;

export class ChatView {
  constructor({ store }) {
    this.store = store;
    this.route = null; // {conv_id} | {user} | null
    this.nodes = new Map(); // key -> element of the message list
    this.shownKey = null; // what the list currently shows (conv or draft)

    this.head = h("header", { class: "chat-head" });
    this.top = h("div", { class: "history-top" });
    this.list = h("ol", { class: "msg-list", "aria-live": "polite" });
    this.scroller = h("div", { class: "messages", tabindex: "-1" }, this.top, this.list);
    this.scroller.addEventListener("scroll", () => this.onScroll(), { passive: true });

    this.input = h("textarea", {
      class: "composer-input",
      rows: 1,
      maxlength: MAX_TEXT,
      placeholder: "Message",
      "aria-label": "Message",
      enterkeyhint: "send",
    });
    this.input.addEventListener("keydown", (e) => this.onKey(e));
    this.input.addEventListener("input", () => this.autosize());
    this.picker = new EmojiPicker((emoji) => this.insert(emoji));
    this.emojiBtn = h(
      "button",
      {
        type: "button",
        class: "ghost emoji-btn",
        title: "Emoji",
        "aria-label": "Emoji",
        "aria-haspopup": "dialog",
        onclick: () => this.picker.toggle(),
      },
      "☺",
    );
    this.sendBtn = h("button", { type: "submit", class: "primary send-btn" }, "Send");
    this.composer = h(
      "form",
      { class: "composer", onsubmit: (e) => this.onSubmit(e) },
      this.picker.el,
      this.emojiBtn,
      this.input,
      this.sendBtn,
    );
    this.gone = h("p", { class: "chat-gone", hidden: true }, "You are no longer a member of this group.");
    this.pane = h("div", { class: "chat-pane", hidden: true }, this.head, this.scroller, this.composer, this.gone);
    this.emptyState = h(
      "div",
      { class: "chat-empty" },
      h("div", { class: "chat-empty-mark" }, "y"),
      h("p", null, "Pick a conversation, or start one with a username."),
    );
    this.el = h("section", { class: "chat" }, this.emptyState, this.pane);
  }

  // --- routing --------------------------------------------------------------------------
  show(route) {
    this.route = route;
    const key = route ? (route.conv_id ? "c:" + route.conv_id : "u:" + route.user.user_id) : null;
    if (key !== this.shownKey) {
      // A draft becoming its conversation (first message sent) keeps what is being typed.
      const sameChat = this.shownKey?.startsWith("u:") && route?.conv_id;
      this.shownKey = key;
      this.nodes.clear();
      this.list.replaceChildren();
      if (!sameChat) this.input.value = "";
      this.autosize();
      this.picker.close();
      this.stickToBottom = true;
    }
    this.emptyState.hidden = !!route;
    this.pane.hidden = !route;
    this.render();
    if (route) {
      const conv = this.conv();
      if (conv && !conv.loaded) this.store.loadLatest(conv).catch(() => {});
      if (matchMedia("(pointer: fine)").matches) this.input.focus({ preventScroll: true });
    }
  }

  conv() {
    return this.route?.conv_id ? (this.store.convs.get(this.route.conv_id) ?? null) : null;
  }

  peer() {
    return this.conv()?.peer ?? this.route?.user ?? null;
  }

  // --- rendering ------------------------------------------------------------------------
  render() {
    if (!this.route) return;
    const conv = this.conv();
    const peer = this.peer();
    const group = conv?.type === "group";
    const sub = group ? `${conv.member_count} members` : peer?.username ? "@" + peer.username : "";
    this.head.replaceChildren(
      h("a", { href: "#/", class: "back", "aria-label": "Back to conversations" }, "‹"),
      group ? avatar({ user_id: conv.conv_id, display_name: conv.name }) : avatar(peer),
      h(
        "div",
        { class: "chat-title-box" },
        h("h2", { class: "chat-title" }, conv ? convTitle(conv) : displayName(peer)),
        sub ? h("p", { class: "chat-sub" }, sub) : null,
      ),
    );
    const inactive = conv && !conv.active;
    this.composer.hidden = !!inactive;
    this.gone.hidden = !inactive;
    if (this.route.conv_id && !conv) {
      this.top.textContent = this.store.ready ? "This conversation is not available." : "Loading…";
      return;
    }
    if (!conv) this.top.textContent = "Say hello to start the conversation.";
    else if (!conv.loaded) this.top.textContent = "Loading…";
    else if (conv.loadingOlder) this.top.textContent = "Loading earlier messages…";
    else if (conv.hasOlder) this.top.textContent = "";
    else this.top.textContent = conv.msgs.length ? "This is the beginning of the conversation." : "";
    this.renderMessages(conv);
  }

  items(conv) {
    const me = this.store.me.user_id;
    const group = conv?.type === "group";
    const items = [];
    let day = null;
    let lastSender = null;
    const push = (m, local) => {
      if (m.kind === "recall") return; // the recalled message itself shows it
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
    for (const m of this.store.outboxFor(conv?.conv_id ?? null, this.route.user?.user_id)) push(m, true);
    return items;
  }

  status(item, conv) {
    if (!item.mine) return null;
    if (item.local) return item.msg.state === "failed" ? "failed" : "sending";
    if (conv?.peer_read_seq != null && item.msg.seq <= conv.peer_read_seq) return "read";
    return "sent";
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
      const from = item.from ? displayName(this.store.user(item.from)) : "";
      const sig = item.msg ? `${this.status(item, conv)}|${item.msg.recalled ? 1 : 0}|${from}` : "";
      let el = this.nodes.get(item.key);
      if (!el || el.dataset.sig !== sig) {
        const fresh = item.msg
          ? this.messageEl(item, conv)
          : item.system
            ? this.systemEl(item.system)
            : this.dayEl(item.day);
        fresh.dataset.key = item.key;
        fresh.dataset.sig = sig;
        if (el) el.replaceWith(fresh);
        if (ref === el) ref = fresh;
        el = fresh;
        this.nodes.set(item.key, el);
      }
      if (el !== ref) this.list.insertBefore(el, ref);
      else ref = ref.nextElementSibling;
    }
    for (const [key, el] of this.nodes) {
      if (!keep.has(key)) {
        el.remove();
        this.nodes.delete(key);
      }
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

  systemEl(m) {
    const actor = m.body?.actor;
    const who = actor === this.store.me.user_id ? "You" : displayName(this.store.user(actor));
    return h("li", { class: "system-note" }, h("span", null, systemText(m, who)));
  }

  dayEl(ms) {
    return h("li", { class: "day-sep" }, h("span", null, dayLabel(ms)));
  }

  messageEl(item, conv) {
    const m = item.msg;
    const status = this.status(item, conv);
    const emoji = m.kind === "emoji" && !m.recalled;
    const cls = ["msg", item.mine ? "mine" : "theirs"];
    if (emoji) cls.push("emoji-only");
    if (m.recalled) cls.push("recalled");
    if (status) cls.push("is-" + status);
    const meta = h(
      "span",
      { class: "meta" },
      h("time", { datetime: new Date(m.created_at).toISOString() }, timeLabel(m.created_at)),
      status ? statusMark(status) : null,
    );
    return h(
      "li",
      { class: cls.join(" "), dataset: m.seq ? { seq: String(m.seq), msgId: m.msg_id } : { local: "1" } },
      item.from ? h("span", { class: "sender" }, displayName(this.store.user(item.from))) : null,
      h("div", { class: "bubble" }, h("p", { class: "text" }, messageText(m)), meta),
      status === "failed"
        ? h(
            "p",
            { class: "failed-note" },
            item.msg.error ? item.msg.error + " " : "Not sent. ",
            linkButton("Retry", () => this.store.retry(m.client_msg_id)),
            " · ",
            linkButton("Delete", () => this.store.discard(m.client_msg_id)),
          )
        : null,
    );
  }

  // --- interaction ----------------------------------------------------------------------
  onScroll() {
    const conv = this.conv();
    if (conv && this.scroller.scrollTop < 150) this.store.loadOlder(conv).catch(() => {});
  }

  onKey(e) {
    if (e.key === "Escape" && this.picker.isOpen) {
      this.picker.close();
      return;
    }
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault(); // Enter sends; Shift+Enter is a new line; an IME keeps its Enter
      this.composer.requestSubmit();
    }
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

  onSubmit(e) {
    e.preventDefault();
    const text = this.input.value;
    if (!text.trim() || !this.route) return;
    const emoji = singleEmoji(text);
    const [kind, body] = emoji ? ["emoji", { emoji }] : ["text", { text }];
    const target = this.route.conv_id ? { conv_id: this.route.conv_id } : { to: this.route.user };
    this.store.send(target, kind, body);
    this.input.value = "";
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
    sending: ["◷", "Sending"],
    sent: ["✓", "Sent"],
    read: ["✓✓", "Read"],
    failed: ["!", "Not sent"],
  }[status];
  return h("span", { class: "status", dataset: { status }, title: label, "aria-label": label }, mark);
}
