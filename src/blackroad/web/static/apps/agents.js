// Agents: the caller's agent definitions (create, edit, delete), their runs, and each run
// as a timeline of steps — the model's turns and the tools' inputs and outputs — followed
// live from /api/agents/runs/{id}/events (SSE: `step` and `run` events, until the run
// finishes or waits for a person). Calls that wait for approval are listed and decided
// here (approve, or reject with a reason); a running run can be cancelled. The open agent
// or run is the hash state ("agent-3", "run-12"), so a reload reopens it. The sidebar is
// polled, so a call that begins to wait elsewhere (a run started by the CLI or the API)
// appears by itself; it is redrawn only when it changed, so polling keeps the focus.

import { ApiError } from "/desktop/api.js";
import { dataTable, element, every, field, formatTime, uniqueId } from "/desktop/ui.js";

const SIDEBAR_POLL_MS = 5000;
const FINISHED = new Set(["succeeded", "failed", "cancelled", "step_limit"]);
const STATUS_WORDS = {
  running: "running",
  awaiting_approval: "awaiting approval",
  succeeded: "succeeded",
  failed: "failed",
  cancelled: "cancelled",
  step_limit: "stopped at its step limit",
  started: "started",
  completed: "completed",
  approved: "approved",
  rejected: "rejected",
};
const DEFAULTS = {
  name: "", model: "", system: "", tools: [], knowledge_bases: [], memory: "none", max_steps: 8,
  approval: {}, tool_choice: [], max_tokens: 512, temperature: 0.2, repeat_penalty: 1.1,
};

function badge(status) {
  return element("span", { class: "state-badge agent-status", "data-state": status }, STATUS_WORDS[status] ?? status);
}

function shown(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function excerpt(text, length = 80) {
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}

class Agents {
  constructor(container, api, desktop) {
    this.api = api;
    this.desktop = desktop;
    this.stream = null; // the followed run's AbortController
    this.sidebar = ""; // what the sidebar shows, to redraw it only when that changes
    this.stopPolling = every(SIDEBAR_POLL_MS, () => this.refreshSidebar());
    this.build(container);
  }

  build(container) {
    this.agentList = element("ul", { class: "agents-list", "aria-label": "Agents" });
    this.approvalList = element("ul", { class: "agents-list", "aria-label": "Pending approvals" });
    this.main = element("div", { class: "agents-main" });
    container.append(element("div", { class: "agents" },
      element("nav", { class: "agents-sidebar", "aria-label": "Agents and approvals" },
        element("button", { class: "primary", onclick: () => this.openNew() }, "New agent"),
        element("h3", {}, "Agents"), this.agentList,
        element("h3", {}, "Pending approvals"), this.approvalList),
      this.main));
  }

  async start() {
    const [tools, tags, bases] = await Promise.all([
      this.api.get("/api/agents/tools"), this.api.get("/api/tags"), this.api.get("/api/kb"),
    ]);
    this.tools = tools.tools;
    this.models = tags.models.map((model) => model.name);
    this.bases = bases.knowledge_bases;
    await this.refreshSidebar();
    const [kind, id] = this.desktop.state.split("-");
    if (kind === "run" && /^\d+$/.test(id)) await this.openRun(Number(id));
    else if (kind === "agent" && /^\d+$/.test(id)) await this.openAgent(Number(id));
    else this.openNew();
  }

  stop() {
    this.stream?.abort();
    this.stream = null;
  }

  close() {
    this.stopPolling?.();
    this.stop();
  }

  async refreshSidebar() {
    const [{ agents }, { approvals }] = await Promise.all([
      this.api.get("/api/agents"), this.api.get("/api/agents/approvals"),
    ]);
    const waiting = approvals.map(({ run, step }) => [run.id, run.agent, step.id, step.name]);
    const shown = JSON.stringify([agents, waiting]);
    if (shown === this.sidebar) return;
    this.sidebar = shown;
    this.agentList.replaceChildren(...agents.map((agent) => element("li", {},
      element("button", { class: "agents-item", onclick: () => this.openAgent(agent.id).catch(this.desktop.error) },
        agent.name, element("span", { class: "muted" }, ` · ${agent.model}`)))));
    if (!agents.length) this.agentList.append(element("li", { class: "muted" }, "No agents yet."));
    this.approvalList.replaceChildren(...approvals.map(({ run, step }) => element("li", {},
      element("button", { class: "agents-item", onclick: () => this.openRun(run.id).catch(this.desktop.error) },
        `${step.name} in run ${run.id}`, element("span", { class: "muted" }, ` · ${run.agent}`)))));
    if (!approvals.length) this.approvalList.append(element("li", { class: "muted" }, "Nothing waits for you."));
  }

  // ---- definitions ----

  openNew() {
    this.stop();
    this.desktop.setState("");
    this.desktop.setTitle("Agents — new agent");
    this.main.replaceChildren(element("h3", {}, "New agent"), this.definitionForm(null));
  }

  async openAgent(id) {
    this.stop();
    let agent;
    try {
      agent = await this.api.get(`/api/agents/${id}`);
    } catch (exc) {
      if (!(exc instanceof ApiError && exc.status === 404)) throw exc;
      this.desktop.notify("That agent no longer exists.", { error: true });
      return this.openNew();
    }
    this.desktop.setState(`agent-${id}`);
    this.desktop.setTitle(`Agents — ${agent.name}`);
    const { runs } = await this.api.get(`/api/agents/runs?agent=${id}&limit=20`);
    const task = element("textarea", { rows: "3", required: true, placeholder: "What should the agent do?" });
    const error = element("p", { class: "error", role: "alert" });
    const runForm = element("form", {
      class: "agents-form", "aria-label": "Start a run",
      onsubmit: async (event) => {
        event.preventDefault();
        error.textContent = "";
        try {
          const run = await this.api.post(`/api/agents/${id}/runs`, { input: task.value });
          await this.openRun(run.id);
        } catch (exc) {
          error.textContent = exc instanceof ApiError ? exc.message : String(exc);
        }
      },
    }, field("Task", task), element("div", { class: "row" }, element("button", { type: "submit", class: "primary" }, "Start run")), error);
    this.main.replaceChildren(
      element("h3", {}, `Run ${agent.name}`), runForm,
      dataTable(`Runs of ${agent.name}`, [{ label: "Run", number: true }, { label: "Started" }, { label: "Task" },
        { label: "Status" }, { label: "" }],
      runs.map((run) => [String(run.id), formatTime(run.created_at), excerpt(run.input), badge(run.status),
        element("button", { onclick: () => this.openRun(run.id).catch(this.desktop.error) }, `Open run ${run.id}`)]),
      { empty: "No runs yet." }),
      element("h3", {}, `Definition of ${agent.name}`), this.definitionForm(agent),
    );
  }

  definitionForm(agent) {
    const value = { ...DEFAULTS, ...(agent ?? {}) };
    const name = element("input", { value: value.name, required: true, autocomplete: "off", pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,63}" });
    const model = element("select", { required: true }, ...this.models.map((m) => element("option", { value: m, selected: m === value.model }, m)));
    const system = element("textarea", { rows: "3" });
    system.value = value.system;
    const number = (v, attributes) => element("input", { type: "number", value: String(v), required: true, ...attributes });
    const maxSteps = number(value.max_steps, { min: "1", max: "100" });
    const maxTokens = number(value.max_tokens, { min: "16", max: "8192" });
    const temperature = number(value.temperature, { min: "0", max: "2", step: "0.1" });
    const memory = element("select", {}, ...["none", "read", "write"].map((m) => element("option", { value: m, selected: m === value.memory }, m)));
    const toolChoice = element("input", { value: value.tool_choice.join(", "), autocomplete: "off" });
    const toolRows = this.tools.map((tool) => {
      const use = element("input", { type: "checkbox", id: uniqueId("agent-tool"), checked: value.tools.includes(tool.name), value: tool.name });
      const policy = element("select", { "aria-label": `Approval for ${tool.name}` },
        element("option", { value: "" }, tool.side_effects ? "asks (side effects)" : tool.needs_approval ? "asks (sends data out)" : "runs"),
        element("option", { value: "ask", selected: value.approval[tool.name] === "ask" }, "ask"),
        element("option", { value: "deny", selected: value.approval[tool.name] === "deny" }, "deny"));
      return { tool, use, policy, row: element("li", { class: "row agents-tool" }, use,
        element("label", { for: use.id, title: tool.description }, tool.name), policy,
        element("span", { class: "muted agents-tool-note" }, excerpt(tool.description, 70))) };
    });
    const baseBoxes = this.bases.map((base) => {
      const box = element("input", { type: "checkbox", id: uniqueId("agent-kb"), value: String(base.id), checked: value.knowledge_bases.includes(base.id) });
      return element("span", { class: "row" }, box, element("label", { for: box.id }, base.name));
    });
    const error = element("p", { class: "error", role: "alert" });
    const buttons = element("div", { class: "row" }, element("button", { type: "submit", class: "primary" }, agent ? "Save agent" : "Create agent"));
    if (agent) {
      buttons.append(element("button", { type: "button", class: "danger", onclick: () => this.remove(agent).catch(this.desktop.error) }, "Delete agent"));
    }
    const form = element("form", {
      class: "agents-form", "aria-label": agent ? `Definition of ${agent.name}` : "New agent",
      onsubmit: async (event) => {
        event.preventDefault();
        error.textContent = "";
        const chosen = toolRows.filter((t) => t.use.checked);
        const body = {
          name: name.value.trim(), model: model.value, system: system.value,
          tools: chosen.map((t) => t.tool.name),
          approval: Object.fromEntries(chosen.filter((t) => t.policy.value).map((t) => [t.tool.name, t.policy.value])),
          tool_choice: toolChoice.value.split(",").map((s) => s.trim()).filter(Boolean),
          knowledge_bases: baseBoxes.map((b) => b.querySelector("input")).filter((b) => b.checked).map((b) => Number(b.value)),
          memory: memory.value, max_steps: Number(maxSteps.value), max_tokens: Number(maxTokens.value),
          temperature: Number(temperature.value), repeat_penalty: value.repeat_penalty,
        };
        try {
          const saved = agent ? await this.api.put(`/api/agents/${agent.id}`, body) : await this.api.post("/api/agents", body);
          this.desktop.notify(`Saved ${saved.name}.`);
          await this.refreshSidebar();
          await this.openAgent(saved.id);
        } catch (exc) {
          error.textContent = exc instanceof ApiError ? exc.message : String(exc);
        }
      },
    },
      element("div", { class: "form-grid" }, field("Name", name), field("Model", model), field("Memory", memory),
        field("Max steps", maxSteps), field("Max tokens", maxTokens), field("Temperature", temperature)),
      field("System prompt", system),
      element("fieldset", { class: "agents-tools" }, element("legend", {}, "Tools and their approval"),
        element("ul", {}, ...toolRows.map((t) => t.row))),
      field("Tool choice of the first steps", toolChoice, { hint: "comma-separated: a tool's name, auto, required or none" }),
      baseBoxes.length ? element("fieldset", { class: "row" }, element("legend", {}, "Knowledge bases"), ...baseBoxes) : null,
      buttons, error);
    return form;
  }

  async remove(agent) {
    if (!confirm(`Delete the agent ${agent.name}? Its runs stay in the journal.`)) return;
    await this.api.delete(`/api/agents/${agent.id}`);
    await this.refreshSidebar();
    this.openNew();
  }

  // ---- runs ----

  async openRun(id) {
    this.stop();
    this.desktop.setState(`run-${id}`);
    this.run = null;
    this.steps = new Map();
    this.heading = element("h3", {}, `Run ${id}`);
    this.runInfo = element("div", { class: "agents-run-info" });
    this.timeline = element("ol", { class: "agents-timeline", "aria-label": "Steps" });
    this.outcome = element("div", { class: "agents-outcome", role: "status", "aria-live": "polite" });
    this.main.replaceChildren(this.heading, this.runInfo, this.timeline, this.outcome);
    await this.follow(id);
  }

  /** Read the run's events until it finishes or waits; then the sidebar's approvals again. */
  async follow(id) {
    const controller = new AbortController();
    this.stream = controller;
    try {
      for await (const { event, data } of this.api.events(`/api/agents/runs/${id}/events`, { signal: controller.signal })) {
        if (event === "step") this.steps.set(data.id, data);
        else if (event === "run") this.run = data;
        this.render();
      }
    } catch (exc) {
      if (controller.signal.aborted) return;
      if (exc instanceof ApiError && exc.status === 404) {
        this.desktop.notify("That run does not exist.", { error: true });
        this.openNew();
        return;
      }
      throw exc;
    } finally {
      if (this.stream === controller) this.stream = null;
    }
    await this.refreshSidebar();
  }

  render() {
    const run = this.run;
    if (!run) return;
    this.desktop.setTitle(`Agents — run ${run.id}`);
    this.heading.replaceChildren(`Run ${run.id} of ${run.agent} `, badge(run.status));
    this.runInfo.replaceChildren(
      element("p", {}, element("strong", {}, "Task: "), run.input),
      element("div", { class: "row" },
        element("button", { onclick: () => this.openAgent(run.agent_id).catch(this.desktop.error) }, `Back to ${run.agent}`),
        FINISHED.has(run.status) ? null
          : element("button", { class: "danger", onclick: () => this.cancel(run).catch(this.desktop.error) }, "Cancel run")),
    );
    const steps = [...this.steps.values()].sort((a, b) => a.seq - b.seq || a.id - b.id);
    this.timeline.replaceChildren(...steps.map((step) => this.stepItem(run, step)));
    const outcome = [];
    if (run.answer) outcome.push(element("h4", {}, "Answer"), element("p", { class: "agents-answer" }, run.answer));
    if (run.error) outcome.push(element("p", { class: "error" }, run.error));
    if (FINISHED.has(run.status)) outcome.unshift(element("p", { class: "agents-finished" }, `The run ${STATUS_WORDS[run.status]}.`));
    this.outcome.replaceChildren(...outcome);
  }

  stepItem(run, step) {
    const title = step.kind === "model" ? `Model ${step.name}` : `Tool ${step.name}`;
    const parts = [element("div", { class: "row agents-step-head" },
      element("h4", {}, `${step.seq}. ${title}`), badge(step.status),
      step.duration_ms != null ? element("span", { class: "muted" }, `${Math.round(step.duration_ms)} ms`) : null)];
    if (step.kind === "tool") {
      parts.push(element("p", { class: "agents-label" }, "Input"), element("pre", { class: "agents-io" }, shown(step.input)));
      if (step.output) {
        parts.push(element("p", { class: "agents-label" }, step.output.is_error ? "Output (an error)" : "Output"),
          element("pre", { class: `agents-io${step.output.is_error ? " failed" : ""}` }, shown(step.output.content ?? step.output)));
      }
      if (step.decided_by) {
        // A rejection is the call's result (an error saying so): the decision itself is neutral here.
        parts.push(element("p", { class: "muted" }, `Decided by ${step.decided_by}${step.reason ? `: ${step.reason}` : ""}`));
      }
      // A run cancelled while it waited leaves its call undecided: nothing is left to decide.
      if (step.status === "awaiting_approval" && run.status === "awaiting_approval") parts.push(this.decision(run, step));
    } else if (step.output) {
      if (step.output.content) parts.push(element("pre", { class: "agents-io" }, step.output.content));
      for (const call of step.output.calls ?? []) {
        parts.push(element("p", { class: "muted" }, `Calls ${call.name}`));
      }
    } else {
      parts.push(element("p", { class: "muted" }, "Thinking…"));
    }
    return element("li", { class: `agents-step ${step.kind}`, "data-status": step.status }, ...parts);
  }

  decision(run, step) {
    const reason = element("input", { autocomplete: "off", placeholder: "optional" });
    const decide = async (approve) => {
      for (const button of box.querySelectorAll("button")) button.disabled = true;
      try {
        const body = { approve };
        if (reason.value.trim()) body.reason = reason.value.trim();
        await this.api.post(`/api/agents/runs/${run.id}/steps/${step.id}/decision`, body);
      } catch (exc) {
        this.desktop.error(exc);
      }
      await this.openRun(run.id).catch(this.desktop.error); // the run goes on: follow it again
    };
    const box = element("div", { class: "agents-decision", role: "group", "aria-label": `Decision on ${step.name}` },
      element("p", {}, element("strong", {}, `${step.name} waits for your approval.`)),
      field("Reason", reason),
      element("div", { class: "row" },
        element("button", { class: "primary", onclick: () => decide(true) }, "Approve"),
        element("button", { class: "danger", onclick: () => decide(false) }, "Reject")));
    return box;
  }

  async cancel(run) {
    await this.api.post(`/api/agents/runs/${run.id}/cancel`);
    await this.openRun(run.id);
  }
}

export default {
  id: "agents",
  title: "Agents",
  admin: false,
  order: 50,
  width: 1040,
  height: 680,
  styles: "/desktop/apps/agents.css",
  mount(container, api, desktop) {
    const agents = new Agents(container, api, desktop);
    agents.start().catch(desktop.error);
    return () => agents.close();
  },
};
