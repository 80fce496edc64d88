// Customer service (客服), both sides of it.
//
// As an agent (a user listed by `shops`): the sessions assigned to me, my status per shop,
// and for the shops I administer the queue and the dashboard. `service` inbox events
// (assigned / unassigned / queued / closed) keep the sessions current; the dashboards,
// which nothing pushes, are re-read after each event and every few seconds while shown.
//
// As a customer: one conversation per shop (`send` with `shop_id` opens it), and the state
// of my latest session there (queued at position n, served by an agent, closed).

const DASHBOARD_EVERY_MS = 10000;
// Nothing is pushed when someone makes this user an agent or admin of a shop: the list of
// shops is re-checked this often (one small request), so the Agent tab appears without a reload.
const SHOPS_EVERY_MS = 60000;

export class Service extends EventTarget {
  constructor(socket, store) {
    super();
    this.socket = socket;
    this.store = store;
    this.shops = new Map(); // shop_id -> {shop, me: AgentOut, agents, dashboard, queue}
    this.sessions = new Map(); // conv_id -> ServiceSessionOut assigned to me
    this.customer = new Map(); // conv_id -> my latest session as a customer (or its event)
    this.loaded = false;
    this.watching = 0; // >0 while the agent view is shown: dashboards are polled
    this.pollTimer = 0;
    this.refreshTimer = 0;
    this.shopOfConv = loadMap(this.storageKey());
    this.shopInfos = new Map(); // shop_id -> Shop, or null: no such shop (customer side)
    this.shopsTimer = setInterval(() => this.checkShops(), SHOPS_EVERY_MS);

    socket.addEventListener("open", () => this.load().catch(() => {}));
    store.addEventListener("inbox", (e) => {
      if (e.detail.type === "service") this.onEvent(e.detail.data ?? {});
    });
  }

  storageKey() {
    return "yim.service." + this.store.me.user_id;
  }

  get isAgent() {
    return this.shops.size > 0;
  }

  isAdmin(shopId) {
    return this.shops.get(shopId)?.me?.role === "admin";
  }

  sessionOf(convId) {
    return this.sessions.get(convId) ?? null;
  }

  // --- loading ----------------------------------------------------------------------------
  async load() {
    const { shops } = await this.socket.request("shops");
    const next = new Map();
    for (const shop of shops) {
      const old = this.shops.get(shop.shop_id);
      next.set(shop.shop_id, { shop, me: old?.me ?? null, agents: old?.agents ?? [], dashboard: null, queue: [] });
    }
    this.shops = next;
    await Promise.all([...next.keys()].map((id) => this.loadShop(id)));
    await this.loadSessions();
    this.loaded = true;
    this.changed();
  }

  // Whether the shops I serve changed (I was made an agent, or removed): then load them.
  async checkShops() {
    if (!this.socket.isOpen || document.visibilityState === "hidden") return;
    try {
      const { shops } = await this.socket.request("shops");
      const ids = shops.map((shop) => shop.shop_id);
      if (ids.length !== this.shops.size || ids.some((id) => !this.shops.has(id))) await this.load();
    } catch {
      // asked again on the next round or connection
    }
  }

  async loadShop(shopId) {
    const entry = this.shops.get(shopId);
    if (!entry) return;
    const { agents } = await this.socket.request("shop_agents", { shop_id: shopId });
    entry.agents = agents;
    entry.me = agents.find((a) => a.user_id === this.store.me.user_id) ?? null;
    if (entry.me?.role === "admin") {
      const [dashboard, queue] = await Promise.all([
        this.socket.request("shop_dashboard", { shop_id: shopId }),
        this.socket.request("service_sessions", { shop_id: shopId, status: "queued" }),
      ]);
      entry.dashboard = dashboard;
      entry.agents = dashboard.agents;
      entry.queue = queue.sessions;
    }
  }

  async loadSessions() {
    if (!this.shops.size) return;
    const { sessions } = await this.socket.request("service_sessions", { status: "active" });
    this.sessions = new Map(sessions.filter((s) => s.agent_id === this.store.me.user_id).map((s) => [s.conv_id, s]));
  }

  stop() {
    clearInterval(this.pollTimer);
    clearInterval(this.shopsTimer);
    clearTimeout(this.refreshTimer);
  }

  // The agent view is shown: keep its numbers fresh.
  watch(on) {
    this.watching += on ? 1 : -1;
    clearInterval(this.pollTimer);
    if (this.watching > 0) {
      this.pollTimer = setInterval(() => this.refreshSoon(), DASHBOARD_EVERY_MS);
      this.refreshSoon();
    }
  }

  refreshSoon() {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => {
      if (!this.socket.isOpen || !this.shops.size) return;
      Promise.all([...this.shops.keys()].map((id) => this.loadShop(id)))
        .then(() => this.loadSessions())
        .then(() => this.changed())
        .catch(() => {});
    }, 50);
  }

  changed() {
    this.dispatchEvent(new CustomEvent("change"));
  }

  // --- events -------------------------------------------------------------------------------
  onEvent(d) {
    const me = this.store.me.user_id;
    if (d.customer_id === me) {
      this.rememberShop(d.conv_id, d.shop_id);
      const status = { queued: "queued", assigned: "active", unassigned: "queued", closed: "closed" }[d.event];
      if (status) {
        const known = this.customer.get(d.conv_id);
        const old = known?.session_id === d.session_id ? known : {}; // a new session: no rating yet
        this.customer.set(d.conv_id, {
          ...old,
          ...d,
          status,
          agent_id: d.event === "assigned" ? d.agent_id : null,
          position: d.event === "queued" ? (d.position ?? null) : null,
        });
      }
    } else {
      if (d.event === "assigned" && d.agent_id === me) {
        this.sessions.set(d.conv_id, {
          session_id: d.session_id,
          shop_id: d.shop_id,
          customer_id: d.customer_id,
          conv_id: d.conv_id,
          category: d.category,
          status: "active",
          agent_id: me,
          queued_at: null,
          assigned_at: Date.now(),
        });
      } else if (d.event === "unassigned" || d.event === "closed") {
        const s = this.sessions.get(d.conv_id);
        if (s && s.session_id === d.session_id) this.sessions.delete(d.conv_id);
      }
      if (this.shops.has(d.shop_id)) this.refreshSoon();
      else if (d.agent_id === me) this.load().catch(() => {}); // made an agent of this shop meanwhile
    }
    this.store.fetchConv(d.conv_id); // joined or left the conversation
    this.changed();
  }

  rememberShop(convId, shopId) {
    if (this.shopOfConv[convId] === shopId) return;
    this.shopOfConv[convId] = shopId;
    try {
      localStorage.setItem(this.storageKey(), JSON.stringify(this.shopOfConv));
    } catch {
      // storage full or disabled: known for this page only
    }
  }

  // --- customer side --------------------------------------------------------------------------
  // My latest session with a shop, or null when I never wrote to it.
  async customerStatus(shopId) {
    try {
      const s = await this.socket.request("service_status", { shop_id: shopId });
      this.rememberShop(s.conv_id, shopId);
      this.customer.set(s.conv_id, s);
      this.changed();
      return s;
    } catch (err) {
      if (err.code === "not_found") return null;
      throw err;
    }
  }

  // The shop with this id, or null when there is none (`not_found`); other errors throw.
  async lookupShop(shopId) {
    if (this.shopInfos.has(shopId)) return this.shopInfos.get(shopId);
    try {
      const shop = await this.socket.request("shop_info", { shop_id: shopId });
      this.shopInfos.set(shopId, shop);
      return shop;
    } catch (err) {
      if (err.code !== "not_found") throw err;
      this.shopInfos.set(shopId, null);
      return null;
    }
  }

  // Shops a customer can write to whose name contains `q` (shop_search), best matches first;
  // remembered like a looked-up shop, so a chat opened on one is named at once.
  async searchShops(q) {
    const { shops } = await this.socket.request("shop_search", { q, limit: 10 });
    for (const shop of shops) this.shopInfos.set(shop.shop_id, shop);
    return shops;
  }

  // A shop looked up before: Shop, null (no such shop) or undefined (not asked).
  shopInfo(shopId) {
    return this.shopInfos.get(shopId);
  }

  // The state of my session in a service conversation (asked once if unknown).
  customerSession(convId) {
    const known = this.customer.get(convId);
    if (known) return known;
    const shopId = this.shopOfConv[convId] ?? this.store.convs.get(convId)?.shop_id;
    if (shopId && this.socket.isOpen) {
      this.customer.set(convId, { status: null, shop_id: shopId });
      this.customerStatus(shopId).catch(() => this.customer.delete(convId));
    }
    return null;
  }

  // Rate my closed session (1 … 5 stars); rating again replaces the rating.
  async rate(session, rating, comment) {
    const s = await this.socket.request("service_rate", { session_id: session.session_id, rating, comment });
    const known = this.customer.get(s.conv_id);
    if (!known || known.session_id === s.session_id) this.customer.set(s.conv_id, { ...known, ...s });
    this.changed();
    return s;
  }

  // --- agent actions --------------------------------------------------------------------------
  async setStatus(shopId, status) {
    await this.socket.request("agent_status", { shop_id: shopId, status });
    const entry = this.shops.get(shopId);
    if (entry?.me) entry.me = { ...entry.me, status };
    this.changed();
    this.refreshSoon();
  }

  async transfer(sessionId, target) {
    await this.socket.request("service_transfer", { session_id: sessionId, ...target });
    this.refreshSoon();
  }

  async close(sessionId) {
    await this.socket.request("service_close", { session_id: sessionId });
    this.refreshSoon();
  }

  // --- running my own shops (docs/protocol.md §17.2) ----------------------------------------
  // Anyone may open a shop and becomes its admin: it is loaded at once, so the Agent tab
  // and the settings page show it without a reload.
  async createShop(name) {
    const shop = await this.socket.request("shop_create", { name });
    this.shopInfos.set(shop.shop_id, shop);
    await this.load();
    return shop;
  }

  // Adds an agent, or replaces the role of one (skills and capacity: the server's defaults
  // for a new agent, the agent's own for one already there).
  async setAgent(shopId, userId, role) {
    const known = this.shops.get(shopId)?.agents.find((a) => a.user_id === userId);
    const fields = { shop_id: shopId, user_id: userId, role };
    if (known) Object.assign(fields, { skills: known.skills, capacity: known.capacity });
    const agent = await this.socket.request("shop_agent_set", fields);
    await this.loadShop(shopId);
    this.changed();
    return agent;
  }

  async removeAgent(shopId, userId) {
    await this.socket.request("shop_agent_remove", { shop_id: shopId, user_id: userId });
    if (userId === this.store.me.user_id) await this.load();
    else await this.loadShop(shopId);
    this.changed();
  }
}

function loadMap(key) {
  try {
    const v = JSON.parse(localStorage.getItem(key) ?? "{}");
    return v && typeof v === "object" ? v : {};
  } catch {
    return {};
  }
}
