// Markdown for untrusted text (model output, documents): marked makes the HTML, DOMPurify
// removes anything active from it, highlight.js colours code blocks. Without those
// libraries (node_modules not installed) the text is shown as plain text, never unsanitized.

import { api } from "/desktop/api.js";

let loading = null;

function libraries() {
  loading ??= Promise.all([api.vendor("marked.js"), api.vendor("purify.js"), api.vendor("highlight.js")])
    .then(([marked, purify, highlight]) => ({
      marked: marked?.marked ?? null,
      purify: purify?.default ?? null,
      highlight: highlight?.default ?? null,
    }))
    .catch(() => ({ marked: null, purify: null, highlight: null }));
  return loading;
}

/** Whether Markdown is rendered (true) or shown as plain text for want of the libraries. */
export async function available() {
  const { marked, purify } = await libraries();
  return Boolean(marked && purify);
}

/** Show `text` in `node` as sanitized, highlighted Markdown (or plain text without the libraries). */
export async function renderMarkdown(node, text) {
  const { marked, purify, highlight } = await libraries();
  node.classList.add("markdown");
  if (!marked || !purify) {
    node.classList.add("plain");
    node.textContent = text;
    return;
  }
  const html = marked.parse(text, { gfm: true, breaks: false, async: false });
  node.innerHTML = purify.sanitize(html, { USE_PROFILES: { html: true }, FORBID_TAGS: ["style", "form"] });
  for (const link of node.querySelectorAll("a[href]")) link.rel = "noopener noreferrer";
  if (highlight) {
    for (const block of node.querySelectorAll("pre code")) highlight.highlightElement(block);
  }
}
