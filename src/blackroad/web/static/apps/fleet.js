// Fleet (admins): every node, this one first, with its state, models, load and decode speed,
// read from /api/fleet every POLL_MS so a node the server's probes find dead turns red
// within a probe round; adding a peer by URL, draining one (no new work; what it runs
// finishes) and removing one. Rows are updated in place, keyed by the node's name, so
// polling never takes the keyboard focus away. Below them, the control planes serving on
// the same database: whether each is ready (it refreshed its row lately and could serve),
// which duties it leads, and the database it uses.

import { ApiError } from "/desktop/api.js";
import { element, field, formatBytes, formatTime, uniqueId } from "/desktop/ui.js";

const POLL_MS = 1500;
const COLUMNS = ["Node", "Kind", "State", "Models", "Load", "Tokens/s", "Last seen", "Actions"];
const REPLICA_COLUMNS = ["Control plane", "State", "Leads", "Database", "Version", "Last seen"];

/** "up" or "down": down when the probes recorded it, or the router's breaker is open. */
function health(node) {
  return node.state === "down" || node.route?.breaker === "open" ? "down" : "up";
}

function stateText(node, state) {
  if (state === "down") return "Down";
  const up = node.route?.breaker === "half-open" ? "Up (on trial)" : "Up";
  return node.draining ? `${up}, draining` : up;
}

/** Outstanding requests of the router, and what a BlackRoad node or this one runs itself. */
function loadText(node, local) {
  const parts = [];
  const route = node.route;
  if (route) parts.push(`${route.outstanding}${route.limit == null ? "" : ` of ${route.limit}`} routed`);
  const stats = node.stats ?? local;
  if (stats) {
    parts.push(`${stats.active} running`);
    if (stats.queued != null) parts.push(`${stats.queued} queued`);
    if (stats.loaded?.length) parts.push(`loaded: ${stats.loaded.join(", ")}`);
    if (stats.free_memory_bytes != null) parts.push(`${formatBytes(stats.free_memory_bytes)} free`);
  }
  return parts.join(" · ") || "—";
}

function speedText(node) {
  const measured = node.route?.tokens_per_second;
  const reported = Object.entries(node.stats?.decode_tokens_per_second ?? {})
    .map(([model, speed]) => `${model} ${speed.toFixed(1)}`);
  const parts = [];
  if (measured != null) parts.push(`${measured.toFixed(1)} routed`);
  parts.push(...reported);
  return parts.join(" · ") || "not measured yet";
}

class Fleet {
  constructor(container, api, desktop) {
    this.api = api;
    this.desktop = desktop;
    this.rows = new Map(); // node name -> {row, cells}
    this.states = new Map(); // node name -> the last health shown, to announce changes
    this.timer = null;
    this.stopped = false;
    this.build(container);
  }

  build(container) {
    this.body = element("tbody");
    this.updated = element("p", { class: "muted fleet-updated" });
    this.announcer = element("p", { class: "visually-hidden", role: "status", "aria-live": "assertive" });
    const heading = element("h3", { id: uniqueId("fleet-nodes") }, "Nodes");
    const nodes = element("section", { class: "fleet-section", "aria-labelledby": heading.id },
      element("div", { class: "row fleet-head" }, heading, this.updated),
      element("div", { class: "table-scroll" },
        element("table", { class: "data-table fleet-table" },
          element("caption", { class: "visually-hidden" }, "Nodes of the fleet"),
          element("thead", {}, element("tr", {}, ...COLUMNS.map((name) => element("th", { scope: "col" }, name)))),
          this.body)),
      this.announcer,
    );
    container.append(element("div", { class: "fleet" }, nodes, this.buildReplicas(), this.buildAdd()));
  }

  buildReplicas() {
    this.replicas = element("tbody");
    const heading = element("h3", { id: uniqueId("fleet-replicas") }, "Control planes");
    return element("section", { class: "fleet-section", "aria-labelledby": heading.id },
      heading,
      element("div", { class: "table-scroll" },
        element("table", { class: "data-table fleet-table fleet-replicas" },
          element("caption", { class: "visually-hidden" }, "Control planes serving on this database"),
          element("thead", {}, element("tr", {},
            ...REPLICA_COLUMNS.map((name) => element("th", { scope: "col" }, name)))),
          this.replicas)),
    );
  }

  /** The control planes' rows, rebuilt each poll: they hold nothing that takes the focus. */
  showReplicas(replicas) {
    this.replicas.replaceChildren(...replicas.map((replica) => {
      const state = replica.ready ? "up" : "down";
      return element("tr", { "data-control-plane": replica.name, "data-state": state },
        element("th", { scope: "row" }, replica.name, element("br"),
          element("span", { class: "muted fleet-url" }, replica.url)),
        element("td", { class: "fleet-state" },
          element("span", { class: "state-badge", "data-state": state }, replica.ready ? "Ready" : "Not ready"),
          element("span", { class: "fleet-error" }, replica.problem ?? "")),
        element("td", { class: "fleet-leads" }, replica.leads.join(", ") || "—"),
        element("td", {}, `${replica.database.kind} `,
          element("span", { class: "muted fleet-url" }, replica.database.host)),
        element("td", {}, replica.version),
        element("td", {}, formatTime(replica.last_seen)),
      );
    }));
  }

  buildAdd() {
    this.addName = element("input", {
      name: "name", required: true, maxlength: "128", pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]*",
      autocomplete: "off",
    });
    this.addKind = element("select", { name: "kind" },
      element("option", { value: "ollama" }, "Ollama API (BlackRoad, Ollama)"),
      element("option", { value: "openai" }, "OpenAI API (llama-server, vLLM, …)"));
    this.addUrl = element("input", {
      name: "url", type: "url", required: true, placeholder: "http://10.0.0.7:11434", autocomplete: "off",
    });
    this.addKey = element("input", { name: "key", type: "password", autocomplete: "off" });
    this.addError = element("p", { class: "error", role: "alert" });
    const heading = element("h3", { id: uniqueId("fleet-add-h") }, "Add a peer");
    return element("section", { class: "fleet-section", "aria-labelledby": heading.id },
      heading,
      element("form", {
        class: "fleet-add",
        onsubmit: (event) => {
          event.preventDefault();
          this.add(event.target).catch(this.desktop.error);
        },
      },
        field("Name", this.addName), field("Protocol", this.addKind),
        field("URL", this.addUrl), field("Key (optional)", this.addKey),
        element("button", { type: "submit", class: "primary" }, "Add node")),
      this.addError,
    );
  }

  // ---- polling ----

  start() {
    this.poll();
  }

  async poll() {
    try {
      await this.refresh();
    } catch (exc) {
      // A failed poll is shown and retried: the server may be restarting.
      this.updated.textContent = `Not updated: ${exc instanceof ApiError ? exc.message : exc}`;
      this.updated.classList.add("error");
    }
    if (!this.stopped) this.timer = setTimeout(() => this.poll(), POLL_MS);
  }

  async refresh() {
    const [{ nodes, control_planes: replicas }, { models: loaded }] = await Promise.all([
      this.api.get("/api/fleet"),
      this.api.get("/api/ps"),
    ]);
    if (this.stopped) return;
    // This node reports no heartbeat: its load is what its own engines run now.
    const local = {
      active: loaded.reduce((sum, entry) => sum + (entry.active ?? 0), 0),
      loaded: loaded.map((entry) => entry.name),
    };
    const seen = new Set();
    nodes.forEach((node, i) => {
      seen.add(node.name);
      this.show(node, i === 0 ? local : null, i);
    });
    for (const [name, { row }] of this.rows) {
      if (seen.has(name)) continue;
      row.remove();
      this.rows.delete(name);
      this.states.delete(name);
    }
    this.showReplicas(replicas);
    this.updated.classList.remove("error");
    this.updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }

  show(node, local, position) {
    let entry = this.rows.get(node.name);
    if (!entry) {
      entry = this.newRow(node, local != null);
      this.rows.set(node.name, entry);
    }
    const { row, cells } = entry;
    if (this.body.children[position] !== row) this.body.insertBefore(row, this.body.children[position] ?? null);
    const state = health(node);
    row.dataset.state = state;
    cells.state.dataset.state = state;
    cells.state.textContent = stateText(node, state);
    cells.error.textContent = state === "down" ? node.last_error ?? "" : "";
    cells.kind.textContent = node.kind;
    cells.url.textContent = node.url ?? "this node";
    cells.models.replaceChildren(...(node.models.length ? node.models : ["none"])
      .map((name) => element("li", {}, name)));
    cells.load.textContent = loadText(node, local);
    cells.speed.textContent = speedText(node);
    cells.seen.textContent = local ? "now" : formatTime(node.last_seen);
    if (cells.drain) {
      cells.drain.textContent = node.draining ? "Undrain" : "Drain";
      cells.drain.setAttribute("aria-pressed", String(Boolean(node.draining)));
      row.dataset.draining = String(Boolean(node.draining));
    }
    const before = this.states.get(node.name);
    if (before && before !== state) this.announcer.textContent = `${node.name} is ${state}.`;
    this.states.set(node.name, state);
  }

  newRow(node, local) {
    const cells = {
      kind: element("span"),
      url: element("span", { class: "muted fleet-url" }),
      state: element("span", { class: "state-badge" }),
      error: element("span", { class: "fleet-error" }),
      models: element("ul", { class: "fleet-models", "aria-label": `Models of ${node.name}` }),
      load: element("td"),
      speed: element("td"),
      seen: element("td"),
    };
    cells.drain = local ? null : element("button", {
      "aria-label": `Drain ${node.name}`, "aria-pressed": "false",
      onclick: () => this.drain(node.name, cells.drain.getAttribute("aria-pressed") !== "true")
        .catch(this.desktop.error),
    }, "Drain");
    const actions = local
      ? element("td", { class: "muted" }, "—")
      : element("td", {}, cells.drain, " ", element("button", {
        class: "danger", "aria-label": `Remove ${node.name}`,
        onclick: () => this.remove(node.name).catch(this.desktop.error),
      }, "Remove"));
    const row = element("tr", { "data-node": node.name },
      element("th", { scope: "row" }, node.name),
      element("td", { class: "fleet-kind" }, cells.kind, element("br"), cells.url),
      element("td", { class: "fleet-state" }, cells.state, cells.error),
      element("td", {}, cells.models), cells.load, cells.speed, cells.seen, actions,
    );
    return { row, cells };
  }

  // ---- changes ----

  async add(form) {
    this.addError.textContent = "";
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      const body = { name: this.addName.value.trim(), kind: this.addKind.value, url: this.addUrl.value.trim() };
      if (this.addKey.value) body.key = this.addKey.value;
      const added = await this.api.post("/api/fleet/nodes", body);
      form.reset();
      this.desktop.notify(`Added ${added.name}: ${added.models.length} models.`);
      await this.refresh();
    } catch (exc) {
      if (!(exc instanceof ApiError)) throw exc;
      this.addError.textContent = exc.message; // the server says what is wrong with the peer
    } finally {
      submit.disabled = false;
    }
  }

  async drain(name, draining) {
    await this.api.post(`/api/fleet/nodes/${encodeURIComponent(name)}/drain`, { draining });
    this.desktop.notify(draining ? `${name} takes no new work.` : `${name} takes work again.`);
    await this.refresh();
  }

  async remove(name) {
    if (!confirm(`Remove ${name} from the fleet? A joined node's credential is revoked.`)) return;
    await this.api.delete(`/api/fleet/nodes/${encodeURIComponent(name)}`);
    this.desktop.notify(`Removed ${name}.`);
    await this.refresh();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
  }
}

export default {
  id: "fleet",
  title: "Fleet",
  admin: true,
  order: 30,
  width: 1100,
  height: 600,
  styles: "/desktop/apps/fleet.css",
  mount(container, api, desktop) {
    const fleet = new Fleet(container, api, desktop);
    fleet.start();
    return () => fleet.stop();
  },
};
