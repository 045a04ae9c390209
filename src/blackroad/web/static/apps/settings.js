// Settings (admins): users (add, role, disable), groups (members, models), API keys
// (create — the secret is shown once, with a copy button — list, revoke) and limits of a
// user or a key, all through /api/admin. After each change the tab is read back from the
// server, so what is shown is what it holds. The open tab is the hash state.

import { ApiError } from "/desktop/api.js";
import { dataTable, element, field, formatTime, uniqueId } from "/desktop/ui.js";

const TABS = { users: "Users", groups: "Groups", keys: "Keys", limits: "Limits" };
const LIMITS = {
  rpm: "Requests a minute",
  tpm: "Tokens a minute",
  max_concurrent: "Concurrent requests",
  daily_tokens: "Tokens a day",
  monthly_tokens: "Tokens a month",
};
const DAY_SECONDS = 86_400;

/** A comma-separated list as typed, as a list of names (empty: none). */
function names(text) {
  return text.split(",").map((name) => name.trim()).filter(Boolean);
}

function limitsText(limits) {
  const set = Object.entries(limits ?? {}).filter(([, value]) => value != null);
  return set.length ? set.map(([name, value]) => `${name} ${value}`).join(", ") : "none";
}

/** A form that runs `action(form)` on submit, showing the server's error beside its button. */
function form(label, controls, submitLabel, action) {
  const error = element("p", { class: "error", role: "alert" });
  const submit = element("button", { type: "submit", class: "primary" }, submitLabel);
  const node = element("form", {
    class: "settings-form", "aria-label": label,
    onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = "";
      submit.disabled = true;
      try {
        await action(node);
      } catch (exc) {
        error.textContent = exc instanceof ApiError ? exc.message : String(exc);
      } finally {
        submit.disabled = false;
      }
    },
  }, element("div", { class: "form-grid" }, ...controls), element("div", { class: "row" }, submit), error);
  return node;
}

class Settings {
  constructor(container, api, desktop) {
    this.api = api;
    this.desktop = desktop;
    this.tab = desktop.state in TABS ? desktop.state : "users";
    this.build(container);
  }

  build(container) {
    this.tabs = {};
    this.panels = {};
    const list = element("div", { class: "settings-tabs", role: "tablist", "aria-label": "Settings" });
    for (const [id, title] of Object.entries(TABS)) {
      const tab = element("button", {
        role: "tab", id: uniqueId(`settings-tab-${id}`), "aria-selected": "false", tabindex: "-1",
        onclick: () => this.show(id), onkeydown: (event) => this.tabKeys(event, id),
      }, title);
      const panel = element("section", { role: "tabpanel", class: "settings-panel", "aria-labelledby": tab.id, hidden: true });
      tab.setAttribute("aria-controls", panel.id = uniqueId(`settings-panel-${id}`));
      this.tabs[id] = tab;
      this.panels[id] = panel;
      list.append(tab);
    }
    container.append(element("div", { class: "settings" }, list, ...Object.values(this.panels)));
  }

  tabKeys(event, id) {
    const ids = Object.keys(TABS);
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    event.preventDefault();
    const next = ids[(ids.indexOf(id) + step + ids.length) % ids.length];
    this.show(next);
    this.tabs[next].focus();
  }

  show(id) {
    this.tab = id;
    this.desktop.setState(id === "users" ? "" : id);
    for (const [other, tab] of Object.entries(this.tabs)) {
      const selected = other === id;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;
      this.panels[other].hidden = !selected;
    }
    this.refresh().catch(this.desktop.error);
  }

  async refresh() {
    const panel = this.panels[this.tab];
    const fill = { users: () => this.users(), groups: () => this.groups(), keys: () => this.keys(), limits: () => this.limits() };
    panel.replaceChildren(...await fill[this.tab]());
  }

  async change(call) {
    try {
      await call();
    } catch (exc) {
      this.desktop.error(exc);
    }
    await this.refresh();
  }

  // ---- users ----

  async users() {
    const { users } = await this.api.get("/api/admin/users");
    const rows = users.map((user) => {
      const role = element("select", {
        "aria-label": `Role of ${user.name}`,
        onchange: () => this.change(() => this.api.patch(`/api/admin/users/${encodeURIComponent(user.name)}`, { role: role.value })),
      }, ...["user", "admin"].map((r) => element("option", { value: r, selected: r === user.role }, r)));
      const toggle = element("button", {
        class: user.disabled ? null : "danger",
        onclick: () => this.change(() => this.api.patch(`/api/admin/users/${encodeURIComponent(user.name)}`, { disabled: !user.disabled })),
      }, user.disabled ? `Enable ${user.name}` : `Disable ${user.name}`);
      return [user.name, role, user.disabled ? "disabled" : "active", user.groups.join(", ") || "—",
        limitsText(user.limits), formatTime(user.created_at), toggle];
    });
    const name = element("input", { name: "name", required: true, autocomplete: "off" });
    const role = element("select", { name: "role" }, element("option", { value: "user" }, "user"), element("option", { value: "admin" }, "admin"));
    const password = element("input", { name: "password", type: "password", minlength: "8", autocomplete: "new-password" });
    const add = form("Add a user", [field("Name", name), field("Role", role),
      field("Password", password, { hint: "8 characters or more; empty: key access only" })], "Add user", async () => {
      const body = { name: name.value.trim(), role: role.value };
      if (password.value) body.password = password.value;
      await this.api.post("/api/admin/users", body);
      this.desktop.notify(`Added ${body.name}.`);
      await this.refresh();
    });
    return [element("h3", {}, "Add a user"), add, dataTable("Users", [
      { label: "Name" }, { label: "Role" }, { label: "State" }, { label: "Groups" }, { label: "Limits" },
      { label: "Created" }, { label: "Actions" },
    ], rows)];
  }

  // ---- groups ----

  async groups() {
    const { groups } = await this.api.get("/api/admin/groups");
    const rows = groups.map((group) => [group.name, group.members.join(", ") || "—",
      group.models == null ? "every model" : group.models.join(", ") || "none",
      element("div", { class: "row" },
        element("button", { onclick: () => this.editGroup(group) }, `Edit ${group.name}`),
        element("button", {
          class: "danger",
          onclick: () => confirm(`Delete the group ${group.name}?`)
            && this.change(() => this.api.delete(`/api/admin/groups/${encodeURIComponent(group.name)}`)),
        }, `Delete ${group.name}`))]);
    this.groupEditor = element("div", { class: "settings-editor" });
    const name = element("input", { required: true, autocomplete: "off" });
    const members = element("input", { autocomplete: "off" });
    const models = element("input", { autocomplete: "off" });
    const add = form("Add a group", [field("Name", name), field("Members", members, { hint: "user names, comma-separated" }),
      field("Models", models, { hint: "patterns, comma-separated; empty: every model" })], "Add group", async () => {
      const body = { name: name.value.trim(), members: names(members.value) };
      if (names(models.value).length) body.models = names(models.value);
      await this.api.post("/api/admin/groups", body);
      await this.refresh();
    });
    return [element("h3", {}, "Add a group"), add, this.groupEditor, dataTable("Groups", [
      { label: "Name" }, { label: "Members" }, { label: "Models" }, { label: "Actions" },
    ], rows)];
  }

  editGroup(group) {
    const members = element("input", { value: group.members.join(", "), autocomplete: "off" });
    const models = element("input", { value: (group.models ?? []).join(", "), autocomplete: "off" });
    const edit = form(`Edit ${group.name}`, [field("Members", members, { hint: "user names, comma-separated" }),
      field("Models", models, { hint: "patterns, comma-separated; empty: every model" })], "Save group", async () => {
      const wanted = names(members.value);
      await this.api.patch(`/api/admin/groups/${encodeURIComponent(group.name)}`, {
        models: names(models.value).length ? names(models.value) : null,
        add: wanted.filter((m) => !group.members.includes(m)),
        remove: group.members.filter((m) => !wanted.includes(m)),
      });
      await this.refresh();
    });
    this.groupEditor.replaceChildren(element("h3", {}, `Edit ${group.name}`), edit);
    members.focus();
  }

  // ---- keys ----

  async keys() {
    const [{ keys }, { users }] = await Promise.all([this.api.get("/api/admin/keys"), this.api.get("/api/admin/users")]);
    this.secret = element("div", { class: "settings-secret", hidden: true });
    const user = element("select", { required: true }, ...users.map((u) => element("option", { value: u.name }, u.name)));
    const name = element("input", { value: "default", required: true, autocomplete: "off" });
    const admin = element("input", { type: "checkbox" });
    const models = element("input", { autocomplete: "off" });
    const expires = element("input", { type: "number", min: "1", placeholder: "never" });
    const create = form("Create a key", [field("User", user), field("Key name", name),
      field("Models", models, { hint: "patterns, comma-separated; empty: the user's" }),
      field("Expires in days", expires),
      element("div", { class: "row settings-check" }, admin, element("label", { for: admin.id = uniqueId("key-admin") }, "Admin scope"))],
    "Create key", async () => {
      const body = { user: user.value, name: name.value.trim(), scopes: admin.checked ? ["inference", "admin"] : ["inference"] };
      if (names(models.value).length) body.models = names(models.value);
      if (expires.value) body.expires_in = Number(expires.value) * DAY_SECONDS;
      const made = await this.api.post("/api/admin/keys", body);
      await this.refresh();
      this.showSecret(made);
    });
    const rows = keys.map((key) => [key.prefix, key.user, key.name, key.scopes.join(", "), key.state,
      formatTime(key.created_at), formatTime(key.expires_at),
      key.state === "active" ? element("button", {
        class: "danger",
        onclick: () => confirm(`Revoke the key ${key.prefix}…?`)
          && this.change(() => this.api.delete(`/api/admin/keys/${encodeURIComponent(key.prefix)}`)),
      }, `Revoke ${key.prefix}`) : "—"]);
    return [element("h3", {}, "Create a key"), create, this.secret, dataTable("Keys", [
      { label: "Prefix" }, { label: "User" }, { label: "Name" }, { label: "Scopes" }, { label: "State" },
      { label: "Created" }, { label: "Expires" }, { label: "Actions" },
    ], rows)];
  }

  showSecret(made) {
    // The server returns a key's secret once, here: it keeps only a hash of it.
    const value = element("input", { readonly: true, value: made.key, class: "settings-secret-value", "aria-label": "The new key" });
    const copy = element("button", {
      onclick: async () => {
        try {
          await navigator.clipboard.writeText(made.key);
          this.desktop.notify("The key is copied.");
        } catch {
          value.select(); // no clipboard here (an insecure origin): selected for Ctrl+C
        }
      },
    }, "Copy");
    this.secret.hidden = false;
    this.secret.replaceChildren(
      element("p", { role: "alert" }, `Key ${made.prefix}… for ${made.user}: shown this once. Copy it now; the server keeps only its hash.`),
      element("div", { class: "row" }, value, copy,
        element("button", { onclick: () => { this.secret.hidden = true; this.secret.replaceChildren(); } }, "Done")),
    );
    copy.focus();
  }

  // ---- limits ----

  async limits() {
    const [{ users }, { keys }] = await Promise.all([this.api.get("/api/admin/users"), this.api.get("/api/admin/keys")]);
    const active = keys.filter((key) => key.state === "active");
    const target = element("select", {},
      element("optgroup", { label: "Users" }, ...users.map((u) => element("option", { value: `user:${u.name}` }, u.name))),
      element("optgroup", { label: "Keys" }, ...active.map((k) => element("option", { value: `key:${k.prefix}` }, `${k.prefix}… (${k.user}, ${k.name})`))));
    const inputs = Object.fromEntries(Object.keys(LIMITS).map((name) =>
      [name, element("input", { type: "number", min: "0", placeholder: "no limit" })]));
    const current = () => {
      const [kind, id] = target.value.split(/:(.*)/s);
      return kind === "user" ? users.find((u) => u.name === id) : active.find((k) => k.prefix === id);
    };
    const load = () => {
      const limits = current()?.limits ?? {};
      for (const [name, input] of Object.entries(inputs)) input.value = limits[name] ?? "";
    };
    target.addEventListener("change", load);
    load();
    const save = form("Limits", [field("Applies to", target),
      ...Object.entries(LIMITS).map(([name, label]) => field(label, inputs[name]))], "Save limits", async () => {
      const limits = Object.fromEntries(Object.entries(inputs).map(([name, input]) =>
        [name, input.value === "" ? null : Number(input.value)]));
      const [kind, id] = target.value.split(/:(.*)/s);
      const path = kind === "user" ? `/api/admin/users/${encodeURIComponent(id)}` : `/api/admin/keys/${encodeURIComponent(id)}`;
      await this.api.patch(path, { limits });
      this.desktop.notify("Limits saved.");
      const chosen = target.value;
      await this.refresh();
      const select = this.panels.limits.querySelector("select");
      select.value = chosen;
      select.dispatchEvent(new Event("change"));
    });
    return [element("h3", {}, "Limits of a user or a key"),
      element("p", { class: "muted" }, "Empty: no limit. They apply from the next request."), save];
  }
}

export default {
  id: "settings",
  title: "Settings",
  admin: true,
  order: 90,
  width: 980,
  height: 660,
  styles: "/desktop/apps/settings.css",
  mount(container, api, desktop) {
    const settings = new Settings(container, api, desktop);
    settings.show(settings.tab);
  },
};
