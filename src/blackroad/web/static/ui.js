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

let unique = 0;

/** An id no other element of the page has, for label/aria references. */
export function uniqueId(prefix) {
  unique += 1;
  return `${prefix}-${unique}`;
}
