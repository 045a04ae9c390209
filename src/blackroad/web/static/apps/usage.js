// Usage: tokens over time per model, user or node (/api/usage: a user's own, an admin's
// everyone's), and for admins what it cost and where self-hosting breaks even against
// cloud models (/api/usage/cost, priced by usage/cost.py). Every chart is drawn by
// chart.js and followed by the same numbers as a table. The window and the grouping are
// the hash state ("30-model"), so a reload shows the same view.

import { horizontalBars, stackedBars } from "/desktop/chart.js";
import { dataTable, element, field, uniqueId } from "/desktop/ui.js";

const WINDOWS = [7, 30, 90];
const GROUPS = { model: "Model", user: "User", node: "Node" };
const DAY_MS = 86_400_000;
const STANDING = {
  pays: "pays for itself",
  below: "below break-even",
  "beyond capacity": "cannot break even on this hardware",
  never: "never breaks even",
  unmeasured: "nothing measured yet",
};

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

function money(currency, amount) {
  if (amount == null) return "—";
  const digits = Math.abs(amount) >= 1 || amount === 0 ? { maximumFractionDigits: 2, minimumFractionDigits: 2 }
    : { maximumSignificantDigits: 3 };
  return `${currency} ${new Intl.NumberFormat(undefined, digits).format(amount)}`;
}

/** The window's days, oldest first, as the server writes them (UTC dates). */
function windowDays(days) {
  const today = Date.now();
  return Array.from({ length: days }, (_, i) => new Date(today - (days - 1 - i) * DAY_MS)
    .toISOString().slice(0, 10));
}

/** Per group, tokens (in + out) on each day: the series of a stacked chart. */
function tokenSeries(rows, days, group) {
  const byGroup = new Map();
  for (const row of rows) {
    const name = row[group] ?? "—";
    if (!byGroup.has(name)) byGroup.set(name, new Array(days.length).fill(0));
    const at = days.indexOf(row.day);
    if (at >= 0) byGroup.get(name)[at] += (row.prompt_tokens ?? 0) + (row.completion_tokens ?? 0);
  }
  return [...byGroup.entries()]
    .map(([name, values]) => ({ name, values }))
    .sort((a, b) => b.values.reduce((x, y) => x + y, 0) - a.values.reduce((x, y) => x + y, 0));
}

class Usage {
  constructor(container, api, desktop) {
    this.api = api;
    this.desktop = desktop;
    const [days, group] = desktop.state.split("-");
    this.days = WINDOWS.includes(Number(days)) ? Number(days) : 7;
    this.group = group in GROUPS ? group : "model";
    this.build(container);
  }

  build(container) {
    this.window = element("select", { onchange: () => this.changed() },
      ...WINDOWS.map((days) => element("option", { value: String(days), selected: days === this.days }, `Last ${days} days`)));
    this.grouping = element("select", { onchange: () => this.changed() },
      ...Object.entries(GROUPS).map(([value, label]) => element("option", { value, selected: value === this.group }, label)));
    this.status = element("p", { class: "muted", role: "status" });
    this.tokens = element("section", { class: "usage-section", "aria-labelledby": uniqueId("usage-h") });
    this.cost = element("section", { class: "usage-section", "aria-labelledby": uniqueId("usage-h"), hidden: !this.desktop.isAdmin });
    container.append(element("div", { class: "usage" },
      element("div", { class: "row usage-toolbar" },
        field("Window", this.window), field("Group by", this.grouping),
        element("button", { onclick: () => this.refresh().catch(this.desktop.error) }, "Refresh")),
      this.status, this.tokens, this.cost));
  }

  changed() {
    this.days = Number(this.window.value);
    this.group = this.grouping.value;
    this.desktop.setState(`${this.days}-${this.group}`);
    this.refresh().catch(this.desktop.error);
  }

  async refresh() {
    this.status.textContent = "Loading…";
    const [usage, cost] = await Promise.all([
      this.api.get(`/api/usage?days=${this.days}`),
      this.desktop.isAdmin ? this.api.get(`/api/usage/cost?days=${this.days}`) : null,
    ]);
    const days = windowDays(this.days);
    this.showTokens(usage.usage, days, cost);
    if (cost) this.showCost(cost);
    this.status.textContent = this.desktop.isAdmin
      ? "Everyone's usage, and the installation's cost."
      : `Your usage (${usage.user}). What the installation costs is shown to admins.`;
  }

  showTokens(rows, days, cost) {
    const heading = element("h3", { id: this.tokens.getAttribute("aria-labelledby") },
      `Tokens per day by ${GROUPS[this.group].toLowerCase()}`);
    const series = tokenSeries(rows, days, this.group);
    const labels = days.map((day) => day.slice(5));
    const charts = [element("div", {}, element("h4", {}, "Tokens (prompt and completion)"), stackedBars({
      title: `Tokens per day by ${GROUPS[this.group].toLowerCase()}, last ${this.days} days`,
      labels, series, format: (n) => compact.format(n),
    }))];
    const perMillion = cost?.total.cost_per_million;
    if (perMillion != null) {
      charts.push(element("div", {}, element("h4", {}, `Cost per day at the measured ${money(cost.currency, perMillion)} per 1M tokens`),
        stackedBars({
          title: `Cost per day by ${GROUPS[this.group].toLowerCase()} (${cost.currency})`,
          labels,
          series: series.map((s) => ({ name: s.name, values: s.values.map((v) => v * perMillion / 1e6) })),
          format: (n) => money(cost.currency, n),
        })));
    }
    const table = dataTable(`Usage rows, last ${this.days} days`, [
      { label: "Day" }, { label: "User" }, { label: "Key" }, { label: "Model" }, { label: "Node" },
      { label: "Requests", number: true }, { label: "Prompt tokens", number: true },
      { label: "Completion tokens", number: true }, { label: "Busy s", number: true },
    ], rows.map((row) => [row.day, row.user ?? "—", row.key_prefix ?? "local", row.model, row.node, integer.format(row.requests),
      integer.format(row.prompt_tokens ?? 0), integer.format(row.completion_tokens ?? 0),
      ((row.busy_ms ?? 0) / 1000).toFixed(1)]), { empty: "No requests in this window." });
    table.classList.add("usage-rows");
    this.tokens.replaceChildren(heading, element("div", { class: "usage-charts" }, ...charts),
      element("details", { class: "usage-table", open: true }, element("summary", {}, "The numbers as a table"), table));
  }

  showCost(cost) {
    const currency = cost.currency;
    const total = cost.total;
    const heading = element("h3", { id: this.cost.getAttribute("aria-labelledby") }, "Cost and break-even");
    const nodes = dataTable("Cost per node", [
      { label: "Node" }, { label: "Days", number: true }, { label: "Tokens", number: true },
      { label: "Tokens/day", number: true }, { label: "Utilisation", number: true },
      { label: "Energy kWh", number: true }, { label: "Cost", number: true },
      { label: "Per 1M tokens", number: true }, { label: "Capacity tokens/day", number: true },
    ], [...cost.nodes, total].map((n) => [n.node, n.days.toFixed(1), integer.format(n.tokens),
      compact.format(n.tokens_per_day), `${(n.utilisation * 100).toFixed(1)} %`, n.energy_kwh.toFixed(3),
      money(currency, n.total_cost), money(currency, n.cost_per_million),
      n.capacity_tokens_per_day == null ? "—" : compact.format(n.capacity_tokens_per_day)]));
    const chart = horizontalBars({
      title: "Break-even volume against each cloud model (tokens a day)",
      items: cost.cloud.map((c) => ({ label: c.model, value: c.break_even_tokens_per_day })),
      marker: { value: total.tokens_per_day, label: "measured" },
      format: (n) => compact.format(n),
      missing: "no break-even",
    });
    const cloud = dataTable("Against cloud models", [
      { label: "Cloud model" }, { label: "Price in / out per 1M", number: true },
      { label: "Blended per 1M", number: true }, { label: "Cloud cost of this window", number: true },
      { label: "Break-even tokens/day", number: true }, { label: "Standing" },
    ], cost.cloud.map((c) => [c.model, `${money(currency, c.input_price)} / ${money(currency, c.output_price)}`,
      money(currency, c.blended_price), money(currency, c.cloud_cost),
      c.break_even_tokens_per_day == null ? "—" : compact.format(c.break_even_tokens_per_day),
      STANDING[c.standing] ?? c.standing]));
    this.cost.replaceChildren(heading,
      element("p", { class: "usage-verdict" }, cost.verdict),
      element("p", { class: "muted" }, `Power profile ${cost.profile.name}: ${cost.profile.watts_idle} W idle, `
        + `${cost.profile.watts_busy} W busy, hardware ${money(currency, cost.profile.hardware_cost)} over `
        + `${cost.amortisation_years} years; electricity ${money(currency, cost.electricity_price)} per kWh. `
        + `The market's rule of thumb: ~${compact.format(cost.rule_of_thumb_tokens_per_day)} tokens a day.`),
      nodes, element("h4", {}, "Break-even"), chart,
      element("details", { class: "usage-table", open: true }, element("summary", {}, "The numbers as a table"), cloud));
  }
}

export default {
  id: "usage",
  title: "Usage",
  admin: false,
  order: 60,
  width: 900,
  height: 640,
  styles: "/desktop/apps/usage.css",
  mount(container, api, desktop) {
    const usage = new Usage(container, api, desktop);
    usage.refresh().catch(desktop.error);
  },
};
