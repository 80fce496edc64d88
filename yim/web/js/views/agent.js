// The "Agent" tab, for users who serve shops: per shop, my status, the customers assigned
// to me, and for shop admins the queue, the agents and the day's numbers.
import { h } from "../dom.js";
import { agentStatus, avatar, category, displayName, shopRole, shortWhen } from "../format.js";
import { errorText } from "../errors.js";
import { toast } from "./toast.js";
import { t } from "../i18n.js";

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
      this.body.replaceChildren(h("p", { class: "list-empty" }, t("You do not serve any shop.")));
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
        "aria-label": t("My status in {shop}", { shop: shop.name }),
        onchange: (e) =>
          this.service.setStatus(shop.shop_id, e.target.value).catch((err) => {
            toast(errorText(err));
            this.render();
          }),
      },
      STATUSES.map((s) => h("option", { value: s, selected: me?.status === s }, agentStatus(s))),
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
        h("span", { class: "shop-role" }, me?.role === "admin" ? t("admin") : t("agent")),
      ),
      h("p", { class: "shop-id" }, t("Shop id {id}", { id: shop.shop_id })),
      serves ? h("label", { class: "field inline" }, h("span", null, t("My status")), select) : null,
      serves
        ? h(
            "div",
            { class: "people-section" },
            h(
              "h4",
              { class: "section-title" },
              t("My customers ({n}/{capacity})", { n: sessions.length, capacity: me.capacity }),
            ),
            sessions.length
              ? h(
                  "ul",
                  { class: "people", "aria-label": t("My customers in {shop}", { shop: shop.name }) },
                  sessions.map((s) => this.sessionEl(s)),
                )
              : h("p", { class: "list-note" }, t("No customers assigned to you right now.")),
          )
        : null,
      dashboard ? this.dashboardEl(dashboard, queue) : null,
    );
  }

  sessionEl(s) {
    const u = this.store.user(s.customer_id) ?? { user_id: s.customer_id };
    const conv = this.store.convs.get(s.conv_id);
    const unread = conv?.unread ?? 0;
    const since = s.assigned_at ? t("since {when}", { when: shortWhen(s.assigned_at) }) : "";
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
      h("h4", { class: "section-title" }, t("Dashboard")),
      h(
        "div",
        { class: "stats" },
        stat(t("waiting"), d.queued),
        stat(t("active"), d.active),
        stat(t("closed today"), d.closed_today),
        stat(t("rating"), d.avg_rating == null ? "–" : d.avg_rating.toFixed(1)),
        stat(t("longest wait"), d.queued ? t("{n} min", { n: waitMin }) : "–"),
      ),
      h("h4", { class: "section-title" }, t("Queue ({n})", { n: queue.length })),
      queue.length
        ? h(
            "ul",
            { class: "people", "aria-label": t("Queue") },
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
                      t("{category} · waiting since {when}", {
                        category: category(s.category),
                        when: shortWhen(s.queued_at),
                      }),
                    ),
                  ),
                ),
              );
            }),
          )
        : h("p", { class: "list-note" }, t("Nobody is waiting.")),
      h("h4", { class: "section-title" }, t("Agents")),
      h(
        "ul",
        { class: "people", "aria-label": t("Agents") },
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
                  `${shopRole(a.role)} · ${a.online ? agentStatus(a.status) : t("not connected")} · ${a.open_sessions}/${a.capacity}`,
                ),
              ),
            ),
          );
        }),
      ),
    );
  }
}
