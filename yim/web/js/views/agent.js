// The "Agent" tab, for users who serve shops: per shop, my status, the customers assigned
// to me, and for shop admins the queue, the agents and the day's numbers.
import { h } from "../dom.js";
import { avatar, category, displayName, shortWhen } from "../format.js";
import { toast } from "./toast.js";

const STATUSES = ["online", "busy", "away", "offline"];

export class AgentView {
  constructor({ store, service, onOpenConv }) {
    this.store = store;
    this.service = service;
    this.onOpenConv = onOpenConv;
    this.body = h("div", { class: "conv-scroll agent-scroll" });
    this.el = h("div", { class: "agent-panel" }, this.body);
  }

  render() {
    const svc = this.service;
    if (!svc.isAgent) {
      this.body.replaceChildren(h("p", { class: "list-empty" }, "You do not serve any shop."));
      return;
    }
    const mine = [...svc.sessions.values()];
    this.body.replaceChildren(
      ...[...svc.shops.values()].map((entry) =>
        this.shopEl(
          entry,
          mine.filter((s) => s.shop_id === entry.shop.shop_id),
        ),
      ),
    );
  }

  shopEl(entry, sessions) {
    const { shop, me, dashboard, queue } = entry;
    const select = h(
      "select",
      {
        class: "select",
        "aria-label": `My status in ${shop.name}`,
        onchange: (e) =>
          this.service.setStatus(shop.shop_id, e.target.value).catch((err) => {
            toast(err.message);
            this.render();
          }),
      },
      STATUSES.map((s) => h("option", { value: s, selected: me?.status === s }, s)),
    );
    select.value = me?.status ?? "online";
    const serves = me && me.capacity > 0;
    return h(
      "section",
      { class: "shop", dataset: { shopId: shop.shop_id } },
      h(
        "header",
        { class: "shop-head" },
        h("h3", { class: "shop-name" }, shop.name),
        h("span", { class: "shop-role" }, me?.role === "admin" ? "admin" : "agent"),
      ),
      h("p", { class: "shop-id" }, `Shop id ${shop.shop_id}`),
      serves ? h("label", { class: "field inline" }, h("span", null, "My status"), select) : null,
      serves
        ? h(
            "div",
            { class: "people-section" },
            h("h4", { class: "section-title" }, `My customers (${sessions.length}/${me.capacity})`),
            sessions.length
              ? h(
                  "ul",
                  { class: "people", "aria-label": `My customers in ${shop.name}` },
                  sessions.map((s) => this.sessionEl(s)),
                )
              : h("p", { class: "list-note" }, "No customers assigned to you right now."),
          )
        : null,
      dashboard ? this.dashboardEl(dashboard, queue) : null,
    );
  }

  sessionEl(s) {
    const u = this.store.user(s.customer_id) ?? { user_id: s.customer_id };
    const conv = this.store.convs.get(s.conv_id);
    const unread = conv?.unread ?? 0;
    const since = s.assigned_at ? "since " + shortWhen(s.assigned_at) : "";
    return h(
      "li",
      { class: "person session", dataset: { convId: s.conv_id } },
      h(
        "button",
        { type: "button", class: "person-main", onclick: () => this.onOpenConv(s.conv_id) },
        avatar(u, "sm"),
        h(
          "span",
          { class: "person-text" },
          h("span", { class: "person-name" }, displayName(u)),
          h("span", { class: "person-sub" }, [category(s.category), since].filter(Boolean).join(" · ")),
        ),
        unread ? h("span", { class: "badge" }, String(unread)) : null,
      ),
    );
  }

  dashboardEl(d, queue) {
    const stat = (label, value) =>
      h(
        "div",
        { class: "stat" },
        h("span", { class: "stat-value" }, String(value)),
        h("span", { class: "stat-label" }, label),
      );
    const waitMin = Math.round(d.longest_wait_ms / 60000);
    return h(
      "div",
      { class: "dashboard" },
      h("h4", { class: "section-title" }, "Dashboard"),
      h(
        "div",
        { class: "stats" },
        stat("waiting", d.queued),
        stat("active", d.active),
        stat("closed today", d.closed_today),
        stat("rating", d.avg_rating == null ? "–" : d.avg_rating.toFixed(1)),
        stat("longest wait", d.queued ? `${waitMin} min` : "–"),
      ),
      h("h4", { class: "section-title" }, `Queue (${queue.length})`),
      queue.length
        ? h(
            "ul",
            { class: "people", "aria-label": "Queue" },
            queue.map((s) => {
              const u = this.store.user(s.customer_id) ?? { user_id: s.customer_id };
              return h(
                "li",
                { class: "person" },
                h(
                  "span",
                  { class: "person-main" },
                  avatar(u, "sm"),
                  h(
                    "span",
                    { class: "person-text" },
                    h("span", { class: "person-name" }, `${s.position ?? ""}. ${displayName(u)}`),
                    h(
                      "span",
                      { class: "person-sub" },
                      `${category(s.category)} · waiting since ${shortWhen(s.queued_at)}`,
                    ),
                  ),
                ),
              );
            }),
          )
        : h("p", { class: "list-note" }, "Nobody is waiting."),
      h("h4", { class: "section-title" }, "Agents"),
      h(
        "ul",
        { class: "people", "aria-label": "Agents" },
        d.agents.map((a) => {
          const u = this.store.user(a.user_id) ?? { user_id: a.user_id };
          return h(
            "li",
            { class: "person" },
            h(
              "span",
              { class: "person-main" },
              h(
                "span",
                { class: "face" },
                avatar(u, "sm"),
                h("span", {
                  class: "presence-dot",
                  dataset: { presence: a.online ? (a.status === "online" ? "online" : "away") : "offline" },
                }),
              ),
              h(
                "span",
                { class: "person-text" },
                h("span", { class: "person-name" }, displayName(u)),
                h(
                  "span",
                  { class: "person-sub" },
                  `${a.role} · ${a.online ? a.status : "not connected"} · ${a.open_sessions}/${a.capacity}`,
                ),
              ),
            ),
          );
        }),
      ),
    );
  }
}
