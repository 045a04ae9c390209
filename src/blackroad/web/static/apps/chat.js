// Chat: a model picker, answers streamed as Markdown, stop and regenerate, the caller's
// conversations (listed and searched by the server), knowledge bases with clickable
// citations, long-term memory on or off. The open conversation's id is the window's
// hash state, so a reload reopens it; everything shown is read back from the server.

import { ApiError } from "/desktop/api.js";
import { available, renderMarkdown } from "/desktop/markdown.js";
import { element, uniqueId } from "/desktop/ui.js";

const SEARCH_DELAY_MS = 250;

/** Chat models of /api/tags: those whose /api/show lists the completion capability. */
async function chatModels(api) {
  const { models } = await api.get("/api/tags");
  const shown = await Promise.all(models.map(async (model) => {
    if (!model.details?.format) return model; // a peer's model: its capabilities are the peer's
    try {
      const { capabilities = [] } = await api.post("/api/show", { model: model.name });
      return capabilities.includes("completion") ? model : null;
    } catch {
      return null;
    }
  }));
  return shown.filter(Boolean).map((model) => model.name);
}

function describeCitation(citation) {
  const where = [citation.document.name];
  if (citation.page != null) where.push(`page ${citation.page}`);
  if (citation.heading) where.push(citation.heading);
  return where.join(" · ");
}

class Chat {
  constructor(container, api, desktop) {
    this.api = api;
    this.desktop = desktop;
    this.conversation = /^\d+$/.test(desktop.state) ? Number(desktop.state) : null;
    this.controller = null; // the running answer's AbortController
    this.lastQuestion = null;
    this.searchTimer = null;
    this.build(container);
  }

  build(container) {
    const searchId = uniqueId("chat-search");
    const modelId = uniqueId("chat-model");
    const inputId = uniqueId("chat-input");
    const maxId = uniqueId("chat-max");
    this.search = element("input", {
      id: searchId, type: "search", placeholder: "Search conversations",
      oninput: () => this.scheduleSearch(),
    });
    this.list = element("ul", { class: "chat-list", "aria-label": "Conversations" });
    const sidebar = element("nav", { class: "chat-sidebar", "aria-label": "Conversations" },
      element("button", { class: "primary", onclick: () => this.newChat() }, "New chat"),
      element("label", { for: searchId, class: "visually-hidden" }, "Search conversations"),
      this.search,
      this.list,
    );
    this.model = element("select", { id: modelId });
    this.memory = element("input", { type: "checkbox", id: uniqueId("chat-memory") });
    this.maxTokens = element("input", {
      id: maxId, type: "number", min: "1", max: "32768", placeholder: "default", class: "chat-max",
    });
    this.knowledge = element("fieldset", { class: "chat-kb-list" },
      element("legend", {}, "Knowledge bases"));
    this.knowledgeSummary = element("summary", {}, "Knowledge: none");
    const toolbar = element("div", { class: "chat-toolbar row" },
      element("label", { for: modelId }, "Model"), this.model,
      element("details", { class: "chat-kb" }, this.knowledgeSummary, this.knowledge),
      element("span", { class: "row" }, this.memory,
        element("label", { for: this.memory.id }, "Memory")),
      element("label", { for: maxId }, "Max tokens"), this.maxTokens,
    );
    this.notice = element("p", { class: "muted chat-notice", hidden: true });
    this.log = element("div", { class: "chat-log", role: "log", "aria-live": "polite", "aria-label": "Messages" });
    this.input = element("textarea", {
      id: inputId, rows: "3", placeholder: "Message (Enter sends, Shift+Enter a new line)",
      onkeydown: (event) => {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          this.form.requestSubmit();
        }
      },
    });
    this.sendButton = element("button", { type: "submit", class: "primary" }, "Send");
    this.stopButton = element("button", { type: "button", disabled: true, onclick: () => this.stop() }, "Stop");
    this.regenerateButton = element("button", {
      type: "button", disabled: true, onclick: () => this.regenerate(),
    }, "Regenerate");
    this.form = element("form", {
      class: "chat-composer",
      onsubmit: (event) => {
        event.preventDefault();
        this.send(this.input.value);
      },
    },
      element("label", { for: inputId, class: "visually-hidden" }, "Message"),
      this.input,
      element("div", { class: "row" }, this.sendButton, this.stopButton, this.regenerateButton),
    );
    this.sourceTitle = element("h3", { id: uniqueId("chat-source") }, "Source");
    this.sourceBody = element("div", { class: "chat-source-body" });
    this.source = element("aside", {
      class: "chat-source", "aria-labelledby": this.sourceTitle.id, hidden: true,
    },
      element("div", { class: "row chat-source-head" }, this.sourceTitle,
        element("button", { "aria-label": "Close the source", onclick: () => this.closeSource() }, "×")),
      this.sourceBody,
    );
    const main = element("div", { class: "chat-main" }, toolbar, this.notice, this.log, this.form);
    container.append(element("div", { class: "chat" }, sidebar, main, this.source));
  }

  async start() {
    const [models, bases, markdown] = await Promise.all([
      chatModels(this.api),
      this.api.get("/api/kb").then((found) => found.knowledge_bases),
      available(),
    ]);
    this.model.replaceChildren(...models.map((name) => element("option", { value: name }, name)));
    for (const base of bases) {
      const id = uniqueId("chat-kb");
      this.knowledge.append(element("div", { class: "row" },
        element("input", {
          type: "checkbox", id, value: String(base.id), onchange: () => this.countKnowledge(),
        }),
        element("label", { for: id }, base.name)));
    }
    if (!bases.length) this.knowledge.append(element("p", { class: "muted" }, "No knowledge bases yet."));
    if (!markdown) {
      this.notice.hidden = false;
      this.notice.textContent = "Markdown is shown as plain text: the desktop's front-end libraries "
        + "are not installed on the server (npm ci in web/).";
    }
    await Promise.all([this.refreshList(), this.open(this.conversation)]);
    // Into the message box, unless the user moved the focus while the app loaded.
    const active = document.activeElement;
    if (!active || active === document.body || active.matches(".window")) this.input.focus();
  }

  countKnowledge() {
    const names = this.chosenKnowledge().map((input) => input.labels[0].textContent);
    this.knowledgeSummary.textContent = `Knowledge: ${names.length ? names.join(", ") : "none"}`;
  }

  chosenKnowledge() {
    return [...this.knowledge.querySelectorAll("input:checked")];
  }

  // ---- conversations ----

  scheduleSearch() {
    clearTimeout(this.searchTimer);
    this.searchTimer = setTimeout(() => this.refreshList().catch(this.desktop.error), SEARCH_DELAY_MS);
  }

  async refreshList() {
    const query = this.search.value.trim();
    const path = query ? `/api/conversations?q=${encodeURIComponent(query)}` : "/api/conversations";
    const { conversations } = await this.api.get(path);
    this.list.replaceChildren(...conversations.map((c) => {
      const current = c.id === this.conversation;
      return element("li", { class: current ? "current" : "" },
        element("button", {
          class: "chat-item", "aria-current": current ? "true" : null, "data-conversation": String(c.id),
          onclick: () => this.open(c.id).catch(this.desktop.error),
        }, element("span", { class: "chat-item-title" }, c.title || "Untitled"),
          c.match ? element("span", { class: "muted chat-item-match" }, c.match) : null),
        element("button", {
          class: "chat-item-delete", "aria-label": `Delete ${c.title || "the conversation"}`,
          onclick: () => this.remove(c).catch(this.desktop.error),
        }, "×"));
    }));
    if (!conversations.length) {
      this.list.append(element("li", { class: "muted" }, query ? "No conversation matches." : "No conversations yet."));
    }
  }

  async open(id) {
    this.stop();
    this.conversation = id;
    this.desktop.setState(id == null ? "" : String(id));
    this.log.replaceChildren();
    this.lastQuestion = null;
    this.closeSource();
    if (id != null) {
      let found;
      try {
        found = await this.api.get(`/api/conversations/${id}`);
      } catch (exc) {
        if (!(exc instanceof ApiError && exc.status === 404)) throw exc;
        this.desktop.notify("That conversation no longer exists.", { error: true });
        return this.open(null);
      }
      this.desktop.setTitle(`Chat — ${found.title || "Untitled"}`);
      if (found.model && [...this.model.options].some((o) => o.value === found.model)) {
        this.model.value = found.model;
      }
      for (const message of found.messages) {
        if (message.role === "user") this.lastQuestion = message.content;
        if (message.role === "user" || message.role === "assistant") {
          await this.addMessage(message.role, message.content, message);
        }
      }
    } else {
      this.desktop.setTitle("Chat");
    }
    this.regenerateButton.disabled = this.lastQuestion == null;
    this.markCurrent();
  }

  markCurrent() {
    for (const button of this.list.querySelectorAll(".chat-item")) {
      const current = Number(button.dataset.conversation) === this.conversation;
      button.closest("li").classList.toggle("current", current);
      if (current) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
  }

  newChat() {
    this.open(null).catch(this.desktop.error);
    this.input.focus();
  }

  async remove(conversation) {
    if (!confirm(`Delete "${conversation.title || "Untitled"}"?`)) return;
    await this.api.delete(`/api/conversations/${conversation.id}`);
    if (conversation.id === this.conversation) await this.open(null);
    await this.refreshList();
  }

  // ---- messages ----

  async addMessage(role, text, { model = null, citations = null } = {}) {
    const content = element("div", { class: "message-content" });
    const status = element("p", { class: "message-status muted" });
    const node = element("article", { class: `message ${role}` },
      element("h3", { class: "message-author" }, role === "user" ? "You" : model ?? "Assistant"),
      content,
      status,
    );
    this.log.append(node);
    const message = { node, content, status, text: "" };
    if (role === "user") {
      content.textContent = text; // what the user typed is shown as typed
      content.classList.add("plain");
    } else {
      await renderMarkdown(content, text);
    }
    message.text = text;
    if (citations?.length) this.showCitations(message, citations);
    this.log.scrollTop = this.log.scrollHeight;
    return message;
  }

  showCitations(message, citations) {
    const list = element("ol", { class: "citations", "aria-label": "Sources" });
    for (const citation of citations) {
      list.append(element("li", {}, element("button", {
        class: "citation", onclick: () => this.showSource(citation),
      }, `[${citation.index}] ${describeCitation(citation)}`)));
    }
    message.node.append(list);
  }

  showSource(citation) {
    this.source.hidden = false;
    this.sourceTitle.textContent = citation.document.name;
    const file = `/api/kb/${citation.knowledge_base}/documents/${citation.document.id}/file`;
    this.sourceBody.replaceChildren(
      element("p", { class: "muted" }, [
        citation.page != null ? `Page ${citation.page}` : null,
        citation.heading,
        `characters ${citation.start}–${citation.end}`,
      ].filter(Boolean).join(" · ")),
      element("blockquote", { class: "chat-quote" }, citation.quote),
      element("a", { href: file, download: citation.document.name }, "Download the document"),
    );
    this.source.querySelector("button").focus();
  }

  closeSource() {
    this.source.hidden = true;
  }

  // ---- asking ----

  request(question, regenerate = false) {
    const extension = { conversation: this.conversation ?? "new", memory: this.memory.checked };
    // The server replaces the stored question and its answer once the new answer is complete.
    if (regenerate && this.conversation != null) extension.regenerate = true;
    const bases = this.chosenKnowledge().map((input) => Number(input.value));
    if (bases.length) extension.knowledge_bases = bases;
    const body = {
      model: this.model.value,
      messages: [{ role: "user", content: question }],
      stream: true,
      blackroad: extension,
    };
    if (this.maxTokens.value) body.max_tokens = Number(this.maxTokens.value);
    return body;
  }

  async send(text) {
    const question = text.trim();
    if (!question || this.controller) return;
    if (!this.model.value) {
      this.desktop.notify("No chat model is available.", { error: true });
      return;
    }
    this.input.value = "";
    this.lastQuestion = question;
    await this.addMessage("user", question);
    await this.answer(question);
  }

  async regenerate() {
    if (this.lastQuestion == null || this.controller) return;
    const questions = this.log.querySelectorAll(".message.user");
    const last = questions[questions.length - 1];
    while (last?.nextSibling) last.nextSibling.remove();
    await this.answer(this.lastQuestion, true);
  }

  async answer(question, regenerate = false) {
    const controller = new AbortController();
    this.controller = controller;
    this.setBusy(true);
    const message = await this.addMessage("assistant", "", { model: this.model.value });
    message.node.setAttribute("aria-busy", "true");
    message.status.textContent = "Thinking…";
    let text = "";
    let finished = false;
    let pending = false;
    const render = () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(async () => {
        pending = false;
        await renderMarkdown(message.content, text);
        this.log.scrollTop = this.log.scrollHeight;
      });
    };
    try {
      const body = this.request(question, regenerate);
      for await (const chunk of this.api.sse("/v1/chat/completions", body, {
        signal: controller.signal,
      })) {
        if (chunk.blackroad) this.took(chunk.blackroad, message);
        const choice = chunk.choices?.[0];
        if (choice?.delta?.content) {
          text += choice.delta.content;
          message.status.textContent = "Writing…";
          render();
        }
        if (choice?.finish_reason) finished = true;
      }
      message.status.textContent = finished ? "" : "The answer ended early.";
    } catch (exc) {
      if (controller.signal.aborted) {
        message.status.textContent = regenerate
          ? "Stopped. The conversation keeps the answer before it."
          : "Stopped. A stopped answer is not kept in the conversation.";
        message.node.classList.add("stopped");
      } else {
        message.status.textContent = exc instanceof ApiError ? exc.message : String(exc);
        message.node.classList.add("failed");
        this.desktop.error(exc);
      }
    } finally {
      await renderMarkdown(message.content, text);
      message.node.removeAttribute("aria-busy");
      this.controller = null;
      this.setBusy(false);
    }
    await this.refreshList().catch(this.desktop.error);
  }

  took(extension, message) {
    if (extension.conversation != null && extension.conversation !== this.conversation) {
      this.conversation = extension.conversation;
      this.desktop.setState(String(extension.conversation));
    }
    if (extension.citations?.length) this.showCitations(message, extension.citations);
  }

  stop() {
    this.controller?.abort();
  }

  setBusy(busy) {
    this.sendButton.disabled = busy;
    this.stopButton.disabled = !busy;
    this.regenerateButton.disabled = busy || this.lastQuestion == null;
    if (!busy) this.input.focus();
  }
}

export default {
  id: "chat",
  title: "Chat",
  admin: false,
  order: 10,
  width: 1040,
  height: 660,
  styles: "/desktop/apps/chat.css",
  mount(container, api, desktop) {
    const chat = new Chat(container, api, desktop);
    chat.start().catch(desktop.error);
    return () => chat.stop();
  },
};
