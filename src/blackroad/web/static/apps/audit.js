// Audit (admins): the tamper-evident log's records, newest first and paged, filtered by
// kind; Verify, which has the server export the log and check it with the CLI's own
// verifier (audit/verify.py) against the log's key; and Export, the inspector's bundle
// as `blackroad audit export` writes it, for `blackroad audit verify` anywhere. The kind
// filter is the hash state.

import { dataTable, element, field, formatTime } from "/desktop/ui.js";

const PAGE = 50;
// Kinds the server writes (audit/capture.py, agents/journal.py, cli/audit.py, audit/log.py).
const KINDS = ["inference", "change", "erasure", "prune", "agent.run", "agent.model",
  "agent.tool_call", "agent.tool_result", "agent.approval", "agent.end"];

/** What a record did, in a few words: the request's method and path, or its kind's facts. */
function summary(record) {
  if (record.method) return `${record.method} ${record.path ?? record.route ?? ""}`.trim();
  if (record.command) return record.command;
  if (record.kind === "erasure") return `erased the texts of record ${record.erases}`;
  if (record.tool) return record.tool;
  return record.run != null ? `run ${record.run}` : "—";
}

class Audit {
  constructor(container, api, desktop) {
    this.api = api;
    this.desktop = desktop;
    this.build(container);
  }

  build(container) {
    this.kind = element("input", {
      type: "search", list: "audit-kinds", placeholder: "every kind", value: this.desktop.state,
      onchange: () => this.filter(),
    });
    this.verifyButton = element("button", { class: "primary", onclick: () => this.verify() }, "Verify the log");
    this.verdict = element("div", { class: "audit-verdict", role: "status", "aria-live": "polite" });
    this.size = element("p", { class: "muted audit-size" });
    this.records = element("div", { class: "audit-records" });
    this.more = element("button", { hidden: true, onclick: () => this.page().catch(this.desktop.error) }, "Older records");
    container.append(element("div", { class: "audit" },
      element("div", { class: "row audit-toolbar" },
        field("Kind", this.kind),
        element("datalist", { id: "audit-kinds" }, ...KINDS.map((kind) => element("option", { value: kind }))),
        element("button", { onclick: () => this.refresh().catch(this.desktop.error) }, "Refresh"),
        this.verifyButton,
        element("a", { class: "button", href: "/api/audit/export", download: "" }, "Export a bundle")),
      this.verdict, this.size, this.records, this.more));
  }

  filter() {
    this.desktop.setState(this.kind.value.trim());
    this.refresh().catch(this.desktop.error);
  }

  query(before) {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (before != null) query.set("from", String(before));
    if (this.kind.value.trim()) query.set("kind", this.kind.value.trim());
    return `/api/audit/records?${query}`;
  }

  async refresh() {
    this.rows = [];
    this.next = null;
    await this.page();
  }

  async page() {
    const found = await this.api.get(this.query(this.next));
    this.rows.push(...found.records);
    this.next = found.next;
    this.size.textContent = `${found.size} records in the log; ${this.rows.length} shown, newest first.`;
    this.more.hidden = found.next == null;
    const kind = this.kind.value.trim();
    this.records.replaceChildren(dataTable(kind ? `Records of kind ${kind}` : "Records", [
      { label: "#", number: true }, { label: "Time" }, { label: "Kind" }, { label: "Who" },
      { label: "What" }, { label: "Status", number: true }, { label: "Record" },
    ], this.rows.map(({ index, record, texts_kept: kept }) => [
      String(index), formatTime(record.time), record.kind, record.user ?? record.owner ?? record.by ?? "—",
      summary(record), record.status == null ? "—" : String(record.status),
      element("details", {}, element("summary", {}, kept ? "JSON (texts kept)" : "JSON"),
        element("pre", { class: "audit-json" }, JSON.stringify(record, null, 2))),
    ]), { empty: "No records." }));
  }

  async verify() {
    this.verifyButton.disabled = true;
    this.verdict.replaceChildren(element("p", { class: "muted" }, "Exporting the log and verifying it…"));
    try {
      const verdict = await this.api.post("/api/audit/verify");
      const headline = verdict.verified
        ? `Verified: ${verdict.records} records, ${verdict.checkpoints} checkpoints.`
        : `NOT verified: ${verdict.problems.length} problem(s).`;
      this.verdict.replaceChildren(
        element("p", { class: verdict.verified ? "audit-ok" : "audit-failed" }, headline),
        verdict.problems.length
          ? element("ul", { class: "audit-problems" }, ...verdict.problems.map((p) => element("li", {}, p)))
          : null,
      );
    } catch (exc) {
      this.verdict.replaceChildren();
      this.desktop.error(exc);
    } finally {
      this.verifyButton.disabled = false;
    }
  }
}

export default {
  id: "audit",
  title: "Audit",
  admin: true,
  order: 70,
  width: 980,
  height: 640,
  styles: "/desktop/apps/audit.css",
  mount(container, api, desktop) {
    const audit = new Audit(container, api, desktop);
    audit.refresh().catch(desktop.error);
  },
};
