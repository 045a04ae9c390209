// The desktop shell: login, the window manager, the launcher and the taskbar.
//
// THE APP CONTRACT. An app is one ES module, static/apps/<id>.js, found by the
// server (GET /desktop/manifest.json lists every file there), whose default export is
//
//   export default {
//     id: "chat",             // unique; names its window and its part of the URL hash
//     title: "Chat",          // the launcher's and the window's title
//     admin: false,           // true: listed and opened only for callers with the admin scope
//     order: 10,              // position in the launcher, lower first
//     width: 960, height: 640,// preferred window size in px (optional; phones get full screen)
//     styles: "/desktop/apps/chat.css", // its own stylesheet (optional), linked on first open
//     mount(container, api, desktop) { ...; return () => { /* cleanup on close */ }; },
//   };
//
// mount() fills `container` (the window's body, an empty <div>) and may return a
// cleanup function, called when the window closes. `api` is api.js's object (JSON
// with CSRF, ApiError from the server's error format, sse/ndjson streams, upload
// with progress, vendor libraries). `desktop` gives the app:
//   desktop.me          GET /api/me of the caller: {user, role, scopes, ...}
//   desktop.isAdmin     whether the caller has the admin scope
//   desktop.state       the app's part of the URL hash when the page loaded ("" if none)
//   desktop.setState(s) replace it (e.g. the open conversation's id), so a reload restores it
//   desktop.setTitle(t) the window's title
//   desktop.notify(message, {error}) a toast; desktop.error(exc) shows an ApiError's message
// An app keeps no state the server does not hold: what it shows comes from the API,
// and what a reload must restore goes in its hash state. Everything it puts in the
// page is text or sanitized HTML (markdown.js); the page's CSP forbids inline script
// and style attributes (set element.style properties instead).
//
// Keyboard: Tab reaches the launcher button, the window list and every window's
// controls; Alt+A opens the launcher (arrows move, Enter opens, Escape closes);
// Alt+W cycles the windows; Escape closes menus. A window's grip button (its first
// control) moves the window with the arrow keys and resizes it with Shift+arrows.

import { api, ApiError, manifest } from "/desktop/api.js";
import { element } from "/desktop/ui.js";

const THEME_KEY = "blackroad-theme"; // the one thing kept in the browser: a cosmetic choice
const THEMES = ["auto", "light", "dark"];
const $ = (id) => document.getElementById(id);

const windows = new Map(); // app id -> {app, element, body, button, cleanup, state}
let apps = [];
let me = null;
let topZ = 10;

// ---- toasts ---------------------------------------------------------------------------------

export function notify(message, { error = false } = {}) {
  const toast = element("div", { class: error ? "toast error" : "toast" }, message);
  $("toasts").append(toast);
  setTimeout(() => toast.remove(), error ? 8000 : 4000);
}

function showError(exc) {
  notify(exc instanceof ApiError ? exc.message : String(exc?.message ?? exc), { error: true });
}

// ---- theme ----------------------------------------------------------------------------------

function effectiveTheme(choice) {
  if (choice !== "auto") return choice;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

function applyTheme() {
  const choice = localStorage.getItem(THEME_KEY) ?? "auto";
  const root = document.documentElement;
  if (choice === "auto") delete root.dataset.theme;
  else root.dataset.theme = choice;
  const effective = effectiveTheme(choice);
  root.dataset.effectiveTheme = effective;
  $("theme-button").textContent = `Theme: ${choice}`;
  for (const link of document.querySelectorAll("link[data-theme-sheet]")) {
    link.disabled = link.dataset.themeSheet !== effective;
  }
}

async function loadThemeSheets() {
  // highlight.js's code colours, one sheet per theme, enabled by applyTheme().
  for (const [theme, name] of [["light", "highlight-light.css"], ["dark", "highlight-dark.css"]]) {
    const url = await api.vendorUrl(name);
    if (url) document.head.append(element("link", { rel: "stylesheet", href: url, "data-theme-sheet": theme }));
  }
  applyTheme();
}

function cycleTheme() {
  const choice = localStorage.getItem(THEME_KEY) ?? "auto";
  localStorage.setItem(THEME_KEY, THEMES[(THEMES.indexOf(choice) + 1) % THEMES.length]);
  applyTheme();
}

// ---- URL hash: which windows are open, and each app's state ----------------------------------

function readHash() {
  const open = new Map();
  for (const part of location.hash.replace(/^#/, "").split(",")) {
    if (!part) continue;
    const [id, ...state] = part.split("=");
    open.set(decodeURIComponent(id), decodeURIComponent(state.join("=")));
  }
  return open;
}

function writeHash() {
  const parts = [...windows.entries()].map(([id, w]) =>
    w.state ? `${encodeURIComponent(id)}=${encodeURIComponent(w.state)}` : encodeURIComponent(id),
  );
  history.replaceState(null, "", parts.length ? `#${parts.join(",")}` : location.pathname);
}

// ---- windows --------------------------------------------------------------------------------

function focusWindow(id) {
  const w = windows.get(id);
  if (!w) return;
  w.element.hidden = false;
  w.element.style.zIndex = String(++topZ);
  for (const [other, o] of windows) {
    const active = other === id;
    o.element.classList.toggle("active", active);
    o.button.setAttribute("aria-pressed", String(active));
  }
  if (!w.element.contains(document.activeElement)) w.element.focus();
}

function minimise(id) {
  const w = windows.get(id);
  w.element.hidden = true;
  w.element.classList.remove("active");
  w.button.setAttribute("aria-pressed", "false");
  w.button.focus();
}

function toggleMaximised(id) {
  const w = windows.get(id);
  const maximised = w.element.classList.toggle("maximised");
  w.maximiseButton.setAttribute("aria-pressed", String(maximised));
}

export function closeWindow(id) {
  const w = windows.get(id);
  if (!w) return;
  windows.delete(id);
  try {
    w.cleanup?.();
  } finally {
    w.element.remove();
    w.button.closest("li").remove();
    writeHash();
    $("launcher-button").focus();
  }
}

function dragWith(handle, onMove) {
  // Pointer drags (mouse, pen, touch) on `handle`; onMove(dx, dy, start) from the first point.
  handle.addEventListener("pointerdown", (down) => {
    if (down.button !== 0 || down.target.closest("button")) return;
    down.preventDefault();
    handle.setPointerCapture(down.pointerId);
    const start = onMove.start();
    const move = (event) => onMove(event.clientX - down.clientX, event.clientY - down.clientY, start);
    const stop = () => {
      handle.removeEventListener("pointermove", move);
      handle.removeEventListener("pointerup", stop);
      handle.removeEventListener("pointercancel", stop);
    };
    handle.addEventListener("pointermove", move);
    handle.addEventListener("pointerup", stop);
    handle.addEventListener("pointercancel", stop);
  });
}

function placeNew(node, app) {
  const desk = $("desktop").getBoundingClientRect();
  const width = Math.min(app.width ?? 720, desk.width - 16);
  const height = Math.min(app.height ?? 520, desk.height - 16);
  const offset = (windows.size % 6) * 28;
  node.style.width = `${width}px`;
  node.style.height = `${height}px`;
  node.style.left = `${Math.max(8, Math.min(48 + offset, desk.width - width - 8))}px`;
  node.style.top = `${Math.max(8, Math.min(24 + offset, desk.height - height - 8))}px`;
}

const KEY_STEP = 16; // pixels a window moves, or grows, per arrow key
const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

function makeMovable(node, titlebar, resizer, grip) {
  const move = (dx, dy, start) => {
    const desk = $("desktop").getBoundingClientRect();
    node.style.left = `${Math.min(Math.max(start.left + dx, -start.width + 80), desk.width - 80)}px`;
    node.style.top = `${Math.min(Math.max(start.top + dy, 0), desk.height - 32)}px`;
  };
  move.start = () => ({ left: node.offsetLeft, top: node.offsetTop, width: node.offsetWidth });
  dragWith(titlebar, move);
  const resize = (dx, dy, start) => {
    node.style.width = `${Math.max(280, start.width + dx)}px`;
    node.style.height = `${Math.max(180, start.height + dy)}px`;
  };
  resize.start = () => ({ width: node.offsetWidth, height: node.offsetHeight });
  dragWith(resizer, resize);
  grip.addEventListener("keydown", (event) => {
    const arrow = ARROWS[event.key];
    if (!arrow || event.altKey || event.ctrlKey || event.metaKey) return;
    event.preventDefault();
    const change = event.shiftKey ? resize : move;
    change(arrow[0] * KEY_STEP, arrow[1] * KEY_STEP, change.start());
  });
}

export async function openApp(id, state = "") {
  if (windows.has(id)) {
    focusWindow(id);
    return;
  }
  const app = apps.find((a) => a.id === id);
  if (!app) return;
  if (app.styles && !document.querySelector(`link[href="${app.styles}"]`)) {
    document.head.append(element("link", { rel: "stylesheet", href: app.styles }));
  }
  const titleId = `window-title-${id}`;
  const title = element("h2", { id: titleId, class: "window-title" }, app.title);
  const maximiseButton = element("button", {
    class: "window-control", "aria-label": `Maximise ${app.title}`, "aria-pressed": "false",
    title: "Maximise", onclick: () => toggleMaximised(id),
  }, "□");
  const grip = element("button", {
    class: "window-control grip", "aria-label": `Move ${app.title}`,
    "aria-describedby": "grip-help", title: "Arrow keys move, Shift+arrow keys resize",
    onclick: () => notify("Arrow keys move the window; Shift+arrow keys resize it."),
  }, "✥");
  const titlebar = element("header", { class: "titlebar", ondblclick: () => toggleMaximised(id) },
    title,
    element("div", { class: "window-controls" },
      grip,
      element("button", {
        class: "window-control", "aria-label": `Minimise ${app.title}`, title: "Minimise",
        onclick: () => minimise(id),
      }, "–"),
      maximiseButton,
      element("button", {
        class: "window-control close", "aria-label": `Close ${app.title}`, title: "Close",
        onclick: () => closeWindow(id),
      }, "×"),
    ),
  );
  const body = element("div", { class: "window-body" });
  const resizer = element("div", { class: "resize-handle", "aria-hidden": "true" });
  const node = element("section", {
    class: "window", role: "dialog", "aria-labelledby": titleId, tabindex: "-1",
    "data-app": id, onpointerdown: () => focusWindow(id), onfocusin: () => raise(id),
  }, titlebar, body, resizer);
  placeNew(node, app);
  makeMovable(node, titlebar, resizer, grip);
  const button = element("button", {
    class: "window-button", "aria-pressed": "false", "data-app": id,
    onclick: () => (windows.get(id).element.hidden || !node.classList.contains("active")
      ? focusWindow(id) : minimise(id)),
  }, app.title);
  $("window-list").append(element("li", {}, button));
  $("desktop").append(node);
  const entry = { app, element: node, body, button, maximiseButton, cleanup: null, state };
  windows.set(id, entry);
  writeHash();
  focusWindow(id);
  const desktop = {
    me,
    isAdmin: isAdmin(),
    state,
    setState(value) {
      entry.state = value ?? "";
      writeHash();
    },
    setTitle(text) {
      title.textContent = text;
    },
    notify,
    error: showError,
  };
  try {
    entry.cleanup = (await app.mount(body, api, desktop)) ?? null;
  } catch (exc) {
    showError(exc);
  }
}

function raise(id) {
  const w = windows.get(id);
  if (w && !w.element.classList.contains("active")) focusWindow(id);
}

function cycleWindows() {
  const visible = [...windows.keys()];
  if (!visible.length) return;
  const active = visible.findIndex((id) => windows.get(id).element.classList.contains("active"));
  focusWindow(visible[(active + 1) % visible.length]);
}

// ---- menus: the launcher and the account menu ----------------------------------------------

function openMenu(menu, opener) {
  closeMenus();
  menu.hidden = false;
  opener.setAttribute("aria-expanded", "true");
  menu.querySelector("[role=menuitem]")?.focus();
}

function closeMenus({ restoreFocus = false } = {}) {
  for (const [menu, opener] of [[$("launcher"), $("launcher-button")], [$("user-menu"), $("user-button")]]) {
    if (menu.hidden) continue;
    menu.hidden = true;
    opener.setAttribute("aria-expanded", "false");
    if (restoreFocus) opener.focus();
  }
}

function menuKeys(menu) {
  menu.addEventListener("keydown", (event) => {
    const items = [...menu.querySelectorAll("[role=menuitem]")];
    const at = items.indexOf(document.activeElement);
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const step = event.key === "ArrowDown" ? 1 : -1;
      items[(at + step + items.length) % items.length]?.focus();
    } else if (event.key === "Home" || event.key === "End") {
      event.preventDefault();
      items[event.key === "Home" ? 0 : items.length - 1]?.focus();
    } else if (event.key === "Tab") {
      closeMenus();
    }
  });
}

function menuItem(label, action) {
  return element("button", {
    role: "menuitem", class: "menu-item",
    onclick: () => {
      closeMenus();
      action();
    },
  }, label);
}

function fillLauncher() {
  const launcher = $("launcher");
  launcher.replaceChildren(...visibleApps().map((app) =>
    menuItem(app.title, () => openApp(app.id)),
  ));
  if (!launcher.children.length) launcher.append(element("p", { class: "muted" }, "No apps"));
  // The same apps as icons on the desktop itself, for the mouse and the finger.
  $("desktop-icons").replaceChildren(...visibleApps().map((app) => element("li", {},
    element("button", { class: "desktop-icon", "data-app": app.id, onclick: () => openApp(app.id) },
      element("span", { class: "desktop-icon-glyph", "aria-hidden": "true" }, app.title[0]),
      element("span", { class: "desktop-icon-label" }, app.title)),
  )));
}

function fillUserMenu() {
  const local = me.key_prefix == null;
  $("user-button").textContent = local ? "Local admin" : me.user;
  $("user-button").title = local
    ? "No login needed on this machine: you are the local admin"
    : `${me.user} (${me.role})`;
  $("user-menu").replaceChildren(
    element("p", { class: "menu-note" }, local
      ? "Signed in as the local admin (no key is required on loopback)."
      : `Signed in as ${me.user}, ${me.role}.`),
    local ? menuItem("Log in as a user", () => showLogin({ cancellable: true }))
      : menuItem("Log out", logOut),
  );
}

// ---- apps -----------------------------------------------------------------------------------

function isAdmin() {
  return Boolean(me?.scopes?.includes("admin"));
}

function visibleApps() {
  return apps.filter((app) => !app.admin || isAdmin());
}

async function loadApps() {
  const { apps: modules } = await manifest();
  const loaded = await Promise.allSettled(modules.map((url) => import(url)));
  apps = [];
  loaded.forEach((result, i) => {
    if (result.status === "fulfilled" && result.value.default?.id) apps.push(result.value.default);
    else console.error(`app ${modules[i]} did not load`, result.reason);
  });
  apps.sort((a, b) => (a.order ?? 100) - (b.order ?? 100) || a.title.localeCompare(b.title));
}

// ---- session --------------------------------------------------------------------------------

function showLogin({ cancellable = false } = {}) {
  $("login").hidden = false;
  $("login-cancel").hidden = !cancellable;
  $("login-error").textContent = "";
  $("login-name").focus();
}

async function logIn(event) {
  event.preventDefault();
  const form = event.target;
  const submit = form.querySelector("button[type=submit]");
  submit.disabled = true;
  $("login-error").textContent = "";
  try {
    await api.post("/api/session", { name: form.name.value, password: form.password.value });
    form.password.value = "";
    $("login").hidden = true;
    await start();
  } catch (exc) {
    $("login-error").textContent = exc instanceof ApiError ? exc.message : "Could not log in.";
    form.password.select();
  } finally {
    submit.disabled = false;
  }
}

async function logOut() {
  try {
    await api.delete("/api/session");
  } catch (exc) {
    showError(exc);
  }
  for (const id of [...windows.keys()]) closeWindow(id);
  await start();
}

/** Who is calling (a session cookie, or the local admin on loopback), then the desktop. */
async function start() {
  try {
    me = await api.get("/api/me");
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 401) {
      me = null;
      for (const part of ["desktop", "taskbar"]) $(part).hidden = true;
      showLogin();
      return;
    }
    throw exc;
  }
  $("login").hidden = true;
  for (const part of ["desktop", "taskbar"]) $(part).hidden = false;
  fillLauncher();
  fillUserMenu();
  for (const [id, state] of readHash()) {
    const app = visibleApps().find((a) => a.id === id);
    if (app) await openApp(id, state);
  }
  if (!windows.size) $("launcher-button").focus();
}

function wire() {
  $("login-form").addEventListener("submit", logIn);
  $("login-cancel").addEventListener("click", () => {
    $("login").hidden = true;
  });
  $("launcher-button").addEventListener("click", () =>
    $("launcher").hidden ? openMenu($("launcher"), $("launcher-button")) : closeMenus());
  $("user-button").addEventListener("click", () =>
    $("user-menu").hidden ? openMenu($("user-menu"), $("user-button")) : closeMenus());
  $("theme-button").addEventListener("click", cycleTheme);
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", applyTheme);
  menuKeys($("launcher"));
  menuKeys($("user-menu"));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && (!$("launcher").hidden || !$("user-menu").hidden)) {
      event.preventDefault();
      closeMenus({ restoreFocus: true });
    } else if (event.altKey && !event.ctrlKey && event.code === "KeyA" && me) {
      event.preventDefault();
      openMenu($("launcher"), $("launcher-button"));
    } else if (event.altKey && !event.ctrlKey && event.code === "KeyW" && me) {
      event.preventDefault();
      cycleWindows();
    }
  });
  document.addEventListener("pointerdown", (event) => {
    if (!event.target.closest(".menu, [aria-haspopup]")) closeMenus();
  });
}

wire();
applyTheme();
loadThemeSheets().catch(showError);
loadApps().then(start).catch(showError);
