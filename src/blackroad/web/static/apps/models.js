// Models: the catalog with what each model's GGUF metadata says (family, parameters,
// quantization, context, capabilities) and whether it is loaded; for admins also pulling
// from the registry with a progress bar, loading and unloading, deleting, and where the
// fleet keeps replicas. Everything is read back from the Ollama API and /api/fleet after
// each action, so what is shown is what the server holds; between actions the catalog and
// what is loaded are polled, and redrawn when they changed (a model a chat loaded, one
// whose keep-alive ran out, one pulled from the CLI).

import { ApiError } from "/desktop/api.js";
import { element, every, formatBytes, formatTime, uniqueId } from "/desktop/ui.js";

const MAX_REPLICAS = 64; // fleet/placement.py's
const POLL_MS = 5000;

/** What a redraw of the catalog depends on: which models there are and which are loaded. */
function catalogState(models, loaded) {
  return JSON.stringify([models.map((m) => [m.name, m.digest]), loaded.map((m) => m.name).sort()]);
}

/** The model's /api/show, or null for a model only peers serve (this node has no file of it). */
async function shown(api, model) {
  if (!model.details?.format) return null;
  try {
    return await api.post("/api/show", { model: model.name });
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 404) return null; // deleted meanwhile
    throw exc;
  }
}

function contextLength(show) {
  const info = show?.model_info ?? {};
  return info[`${info["general.architecture"]}.context_length`] ?? null;
}

function cell(content, { number = false } = {}) {
  return element("td", { class: number ? "number" : null }, content ?? "—");
}

class Models {
  constructor(container, api, desktop) {
    this.api = api;
    this.desktop = desktop;
    this.admin = desktop.isAdmin;
    this.pulling = null; // the running pull's AbortController
    this.drawn = null; // catalogState of what is shown
    this.stopPolling = every(POLL_MS, () => this.poll());
    this.build(container);
  }

  build(container) {
    this.status = element("p", { class: "muted models-status", role: "status" });
    this.rows = element("tbody");
    const heading = element("h3", { id: uniqueId("models-h") }, "Catalog");
    const catalog = element("section", { class: "models-section", "aria-labelledby": heading.id },
      element("div", { class: "row models-head" }, heading,
        element("button", { onclick: () => this.refresh().catch(this.desktop.error) }, "Refresh")),
      element("div", { class: "table-scroll" },
        element("table", { class: "data-table models-table" },
          element("caption", { class: "visually-hidden" }, "Models on this node"),
          element("thead", {}, element("tr", {},
            ...["Model", "Family", "Parameters", "Quantization", "Context", "Capabilities", "Size", "State"]
              .map((name) => element("th", { scope: "col" }, name)),
            this.admin ? element("th", { scope: "col" }, "Actions") : null)),
          this.rows)),
      this.status,
    );
    const parts = [this.admin ? this.buildPull() : null, catalog, this.admin ? this.buildPlacements() : null];
    container.append(element("div", { class: "models" }, ...parts.filter(Boolean)));
  }

  buildPull() {
    const nameId = uniqueId("models-pull-name");
    const progressId = uniqueId("models-pull-progress");
    this.pullName = element("input", {
      id: nameId, required: true, maxlength: "256", placeholder: "team/helper:v1", autocomplete: "off",
    });
    this.pullButton = element("button", { type: "submit", class: "primary" }, "Pull");
    this.pullProgress = element("progress", { id: progressId, max: "1", value: "0" });
    this.pullStatus = element("p", { class: "muted models-pull-status", "aria-live": "polite" });
    const heading = element("h3", { id: uniqueId("models-pull-h") }, "Pull from the registry");
    return element("section", { class: "models-section", "aria-labelledby": heading.id },
      heading,
      element("form", {
        class: "row",
        onsubmit: (event) => {
          event.preventDefault();
          this.pull(this.pullName.value.trim()).catch(this.desktop.error);
        },
      },
        element("label", { for: nameId }, "Model name"), this.pullName, this.pullButton),
      element("div", { class: "row models-progress" },
        element("label", { for: progressId }, "Pull progress"), this.pullProgress),
      this.pullStatus,
    );
  }

  buildPlacements() {
    const modelId = uniqueId("models-place-model");
    const replicasId = uniqueId("models-place-replicas");
    this.placeModel = element("select", { id: modelId, required: true });
    this.placeReplicas = element("input", {
      id: replicasId, type: "number", min: "0", max: String(MAX_REPLICAS), value: "1", required: true,
    });
    this.placementRows = element("tbody");
    const heading = element("h3", { id: uniqueId("models-place-h") }, "Placement across the fleet");
    return element("section", { class: "models-section", "aria-labelledby": heading.id },
      heading,
      element("p", { class: "muted" },
        "The fleet keeps this many replicas of a model on healthy peers, pulling it from the "
        + "registry onto joined nodes that have room."),
      element("form", {
        class: "row",
        onsubmit: (event) => {
          event.preventDefault();
          this.place(this.placeModel.value, Number(this.placeReplicas.value)).catch(this.desktop.error);
        },
      },
        element("label", { for: modelId }, "Model to place"), this.placeModel,
        element("label", { for: replicasId }, "Replicas"), this.placeReplicas,
        element("button", { type: "submit" }, "Place")),
      element("div", { class: "table-scroll" },
        element("table", { class: "data-table placements-table" },
          element("caption", { class: "visually-hidden" }, "Placements"),
          element("thead", {}, element("tr", {},
            ...["Model", "Replicas wanted", "Serving", "Being placed", "Actions"]
              .map((name) => element("th", { scope: "col" }, name)))),
          this.placementRows)),
    );
  }

  // ---- the catalog ----

  async refresh() {
    const [{ models }, { models: loaded }] = await Promise.all([
      this.api.get("/api/tags"),
      this.api.get("/api/ps"),
    ]);
    const shows = await Promise.all(models.map((model) => shown(this.api, model)));
    this.drawn = catalogState(models, loaded);
    const running = new Map(loaded.map((entry) => [entry.name, entry]));
    this.rows.replaceChildren(...models.map((model, i) => this.row(model, shows[i], running.get(model.name))));
    if (!models.length) {
      this.rows.append(element("tr", {}, element("td", { colspan: "9", class: "muted" }, "No models.")));
    }
    this.status.textContent = `${models.length} models, ${loaded.length} loaded.`;
    if (this.admin) {
      const names = models.map((model) => model.name);
      const chosen = this.placeModel.value;
      this.placeModel.replaceChildren(...names.map((name) => element("option", { value: name }, name)));
      if (names.includes(chosen)) this.placeModel.value = chosen;
      await this.refreshPlacements();
    }
  }

  row(model, show, running) {
    const details = model.details ?? {};
    const local = show != null;
    const state = running ? "loaded" : local ? "available" : "on peers";
    const stateText = running ? "Loaded" : local ? "Not loaded" : "Served by peers";
    const detail = running
      ? `${running.active} running · ${formatBytes(running.size)} · until ${formatTime(running.expires_at)}`
      : null;
    const row = element("tr", { "data-model": model.name, "data-state": state },
      element("th", { scope: "row" }, model.name),
      cell(details.family),
      cell(details.parameter_size),
      cell(details.quantization_level),
      cell(contextLength(show)?.toLocaleString(), { number: true }),
      cell(show ? show.capabilities.join(", ") : null),
      cell(local ? formatBytes(model.size) : null, { number: true }),
      element("td", {}, element("span", { class: "state-badge", "data-state": state }, stateText),
        detail ? element("span", { class: "muted models-detail" }, detail) : null),
    );
    if (this.admin) row.append(element("td", {}, local ? this.actions(model.name, running) : "—"));
    return row;
  }

  actions(name, running) {
    const act = (label, work) => element("button", {
      "aria-label": `${label} ${name}`,
      onclick: async (event) => {
        const button = event.currentTarget;
        button.disabled = true;
        try {
          await work();
          await this.refresh();
        } catch (exc) {
          this.desktop.error(exc);
          button.disabled = false;
        }
      },
    }, label);
    return element("div", { class: "row" },
      running
        ? act("Unload", () => this.api.post("/api/generate", { model: name, prompt: "", keep_alive: 0, stream: false }))
        : act("Load", () => this.api.post("/api/generate", { model: name, prompt: "", stream: false })),
      element("button", {
        class: "danger", "aria-label": `Delete ${name}`,
        onclick: () => this.remove(name).catch(this.desktop.error),
      }, "Delete"),
    );
  }

  async remove(name) {
    if (!confirm(`Delete ${name} from this node? Its files go when no other model uses them.`)) return;
    await this.api.delete("/api/delete", { body: { model: name } });
    this.desktop.notify(`Deleted ${name}.`);
    await this.refresh();
  }

  // ---- pulling ----

  async pull(name) {
    if (!name || this.pulling) return;
    const controller = new AbortController();
    this.pulling = controller;
    this.pullButton.disabled = true;
    this.pullStatus.classList.remove("error");
    this.pullStatus.removeAttribute("role");
    this.pullProgress.max = 1;
    this.pullProgress.value = 0;
    const layers = new Map(); // digest -> {total, completed}: the bar counts every blob's bytes
    try {
      for await (const event of this.api.ndjson("/api/pull", { model: name, stream: true }, {
        signal: controller.signal,
      })) {
        if (event.digest && event.total) {
          layers.set(event.digest, { total: event.total, completed: event.completed ?? 0 });
          const all = [...layers.values()];
          this.pullProgress.max = all.reduce((sum, layer) => sum + layer.total, 0);
          this.pullProgress.value = all.reduce((sum, layer) => sum + layer.completed, 0);
        }
        const share = this.pullProgress.max > 1
          ? ` — ${formatBytes(this.pullProgress.value)} of ${formatBytes(this.pullProgress.max)}` : "";
        this.pullStatus.textContent = `${event.status}${share}`;
        if (event.status === "success") {
          this.pullProgress.value = this.pullProgress.max;
          this.pullStatus.textContent = `Pulled ${name}.`;
        }
      }
      await this.refresh();
    } catch (exc) {
      if (controller.signal.aborted) return;
      this.pullStatus.textContent = exc instanceof ApiError ? exc.message : String(exc);
      this.pullStatus.classList.add("error");
      this.pullStatus.setAttribute("role", "alert");
    } finally {
      this.pulling = null;
      this.pullButton.disabled = false;
    }
  }

  // ---- placement ----

  async refreshPlacements() {
    const { placements } = await this.api.get("/api/fleet/placements");
    this.showPlacements(placements);
  }

  showPlacements(placements) {
    const list = (names) => (names.length ? names.join(", ") : "none");
    this.placementRows.replaceChildren(...placements.map((placement) => element("tr", { "data-model": placement.model },
      element("th", { scope: "row" }, placement.model),
      cell(String(placement.replicas), { number: true }),
      cell(list(placement.serving)),
      cell(list(placement.placing)),
      element("td", {}, element("button", {
        "aria-label": `Stop placing ${placement.model}`,
        onclick: () => this.unplace(placement.model).catch(this.desktop.error),
      }, "Stop placing")),
    )));
    if (!placements.length) {
      this.placementRows.append(element("tr", {},
        element("td", { colspan: "5", class: "muted" }, "No model is placed: each node serves what it has.")));
    }
  }

  async place(model, replicas) {
    const { placements } = await this.api.post("/api/fleet/placements", { model, replicas });
    this.showPlacements(placements);
  }

  async unplace(model) {
    await this.api.delete(`/api/fleet/placements/${encodeURIComponent(model)}`);
    await this.refreshPlacements();
  }

  /** Redraw when the catalog or what is loaded changed since the last drawing. */
  async poll() {
    const [{ models }, { models: loaded }] = await Promise.all([
      this.api.get("/api/tags"), this.api.get("/api/ps"),
    ]);
    // Not before the first drawing, nor while a pull runs (it refreshes when done).
    const ready = this.drawn !== null && !this.pulling;
    if (ready && catalogState(models, loaded) !== this.drawn) await this.refresh();
  }

  stop() {
    this.stopPolling?.();
    this.pulling?.abort();
  }
}

export default {
  id: "models",
  title: "Models",
  admin: false, // everyone sees the catalog; pulling, loading, deleting and placing are for admins
  order: 20,
  width: 1080,
  height: 640,
  styles: "/desktop/apps/models.css",
  mount(container, api, desktop) {
    const models = new Models(container, api, desktop);
    models.refresh().catch(desktop.error);
    return () => models.stop();
  },
};
