// Small DOM helpers shared by the shell and the apps: elements built from text
// (never from HTML strings: what the server sends is data, not markup).

/** A new element: attributes (on* are listeners, true/false/null switch one on or off), children. */
export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, "");
    else if (value !== false && value != null) node.setAttribute(name, value);
  }
  node.append(...children.filter((child) => child != null));
  return node;
}

/** A labelled control: the label, then `control` (given an id if it has none), in one block. */
export function field(label, control, { hint = null } = {}) {
  control.id ||= uniqueId("field");
  const note = hint ? element("span", { class: "muted field-hint", id: uniqueId("hint") }, hint) : null;
  if (note) control.setAttribute("aria-describedby", note.id);
  return element("div", { class: "field" }, element("label", { for: control.id }, label), control, note);
}

/** A table of the shared look: `columns` [{label, number}], `rows` arrays of cells (text or nodes). */
export function dataTable(caption, columns, rows, { empty = "Nothing yet." } = {}) {
  const body = element("tbody", {}, ...rows.map((cells) => element("tr", {}, ...cells.map((cell, i) =>
    element("td", { class: columns[i]?.number ? "number" : null }, cell ?? "—")))));
  if (!rows.length) {
    body.append(element("tr", {}, element("td", { colspan: String(columns.length), class: "muted" }, empty)));
  }
  return element("div", { class: "table-scroll" }, element("table", { class: "data-table" },
    element("caption", {}, caption),
    element("thead", {}, element("tr", {}, ...columns.map((column) =>
      element("th", { scope: "col", class: column.number ? "number" : null }, column.label)))),
    body));
}

let unique = 0;

/** An id no other element of the page has, for label/aria references. */
export function uniqueId(prefix) {
  unique += 1;
  return `${prefix}-${unique}`;
}

const BYTE_UNITS = ["B", "KB", "MB", "GB", "TB"];

/** A byte count for people: 98362432 -> "98.4 MB" (decimal units, as Ollama shows sizes). */
export function formatBytes(bytes) {
  if (bytes == null) return "—";
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < BYTE_UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${BYTE_UNITS[unit]}`;
}

/** A date and time from the server (ISO 8601) in the browser's locale; "—" for none. */
export function formatTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}


/** Run `work` again `ms` after each run ends, until the returned function is called. A
 * failed run is tried again at the next: the server may be restarting. */
export function every(ms, work) {
  let timer = null;
  let stopped = false;
  const next = () => {
    timer = setTimeout(async () => {
      try {
        await work();
      } catch {
        // tried again at the next run
      }
      if (!stopped) next();
    }, ms);
  };
  next();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
