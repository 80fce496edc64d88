// The user's push settings (docs/protocol.md §20.2): message previews, quiet hours in a time
// zone, and one mute per conversation (off | mentions | all). The server keeps them for every
// device of the user; this model holds what it last answered, and the page's own desktop
// notifications (notify.js) follow the same mutes.
//
// A conversation the user never set a mute for has the server's default: `off`, except in a
// read-fan-out group, where it is `mentions`. Which groups fan out on read is learned from
// `sync`'s `groups` list (one empty page at each connect), from a group's info when it is
// loaded (GroupOut.fanout) and from `group_message` notices, which only such groups send.
import { t } from "./i18n.js";

export const MUTES = ["off", "mentions", "all"];

export function muteLabel(mode) {
  return { off: t("All messages"), mentions: t("Mentions only"), all: t("Nothing") }[mode];
}

export class PushPrefs extends EventTarget {
  constructor(socket, store, groups) {
    super();
    this.socket = socket;
    this.store = store;
    this.groups = groups;
    this.loaded = false;
    this.preview = true;
    this.timeZone = "";
    this.dnd = ""; // "HH:MM-HH:MM", or "" for none
    this.mutes = new Map(); // conv_id -> mode the user set
    this.readFanout = new Set(); // conv_ids of read-fan-out groups
    this.onOpen = (e) => this.load(e.detail?.inbox_seq ?? 0).catch(() => {});
    this.onNotice = (e) => {
      if (e.detail?.type === "group_message") this.markReadFanout(e.detail.data?.conv_id);
    };
    this.onGroup = (e) => {
      if (this.groups.get(e.detail)?.group?.fanout === "read") this.markReadFanout(e.detail);
    };
    socket.addEventListener("open", this.onOpen);
    socket.addEventListener("notice", this.onNotice);
    groups.addEventListener("change", this.onGroup);
  }

  stop() {
    this.socket.removeEventListener("open", this.onOpen);
    this.socket.removeEventListener("notice", this.onNotice);
    this.groups.removeEventListener("change", this.onGroup);
  }

  // At each connect: the settings (another device may have changed them), and the
  // read-fan-out groups from a sync page at the inbox head (no events, only `groups`).
  async load(head) {
    const [settings, page] = await Promise.all([
      this.socket.request("push_settings_get", {}),
      this.socket.request("sync", { since: head, limit: 1 }),
    ]);
    for (const g of page.groups ?? []) this.readFanout.add(g.conv_id);
    this.apply(settings);
  }

  apply(settings) {
    this.loaded = true;
    this.preview = settings.preview;
    this.timeZone = settings.time_zone;
    this.dnd = settings.dnd;
    this.mutes = new Map(settings.mutes.map((m) => [m.conv_id, m.mute]));
    this.changed();
  }

  markReadFanout(convId) {
    if (!convId || this.readFanout.has(convId)) return;
    this.readFanout.add(convId);
    if (!this.mutes.has(convId)) this.changed(); // its default just became "mentions"
  }

  changed() {
    this.dispatchEvent(new CustomEvent("change"));
  }

  // The mute in force: the one set, else the server's default for this conversation.
  mode(convId) {
    return this.mutes.get(convId) ?? (this.readFanout.has(convId) ? "mentions" : "off");
  }

  // Whether a new message may show a notification: the same rule the server pushes by.
  notifies(m) {
    const mode = this.mode(m.conv_id);
    return mode === "off" || (mode === "mentions" && this.store.mentionsMe(m));
  }

  async setMute(convId, mode) {
    this.apply(await this.socket.request("push_mute", { conv_id: convId, mute: mode }));
  }

  // fields: {preview?, dnd?}; quiet hours go with the browser's time zone, in which the
  // user typed them.
  async save(fields) {
    const body = { ...fields };
    if ("dnd" in fields) body.time_zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    this.apply(await this.socket.request("push_settings_set", body));
  }
}
