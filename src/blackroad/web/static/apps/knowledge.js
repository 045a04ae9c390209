// Knowledge: the caller's knowledge bases (listed, created, deleted, shared with groups),
// a base's documents (uploaded with a progress bar, listed, deleted, downloaded) and a
// search box showing the server's hybrid results: score, the lexical and vector ranks,
// document, page and passage. The open base's id is the window's hash state.

import { ApiError } from "/desktop/api.js";
import { element, formatBytes, formatTime, uniqueId } from "/desktop/ui.js";

function labelled(label, control) {
  control.id ||= uniqueId("kb-field");
  return [element("label", { for: control.id }, label), control];
}

function rankText(rank) {
  return rank == null ? "not found" : `#${rank}`;
}

class Knowledge {
  constructor(container, api, desktop) {
    this.api = api;
    this.desktop = desktop;
    this.base = null; // the open base, as /api/kb/{id} answered
    this.build(container);
  }

  build(container) {
    this.list = element("ul", { class: "kb-list", "aria-label": "Knowledge bases" });
    this.createName = element("input", { required: true, maxlength: "128", autocomplete: "off" });
    this.createDescription = element("input", { maxlength: "4096", autocomplete: "off" });
    this.createError = element("p", { class: "error", role: "alert" });
    const sidebar = element("nav", { class: "kb-sidebar", "aria-label": "Knowledge bases" },
      element("h3", {}, "Knowledge bases"),
      this.list,
      element("form", {
        class: "kb-create",
        onsubmit: (event) => {
          event.preventDefault();
          this.create().catch(this.desktop.error);
        },
      },
        element("h4", {}, "New knowledge base"),
        ...labelled("Name", this.createName),
        ...labelled("Description", this.createDescription),
        element("button", { type: "submit", class: "primary" }, "Create"),
        this.createError),
    );
    this.main = element("div", { class: "kb-main" });
    container.append(element("div", { class: "kb" }, sidebar, this.main));
  }

  async start() {
    const wanted = /^\d+$/.test(this.desktop.state) ? Number(this.desktop.state) : null;
    await this.refreshList();
    await this.open(wanted);
  }

  // ---- bases ----

  async refreshList() {
    const { knowledge_bases: bases } = await this.api.get("/api/kb");
    this.list.replaceChildren(...bases.map((base) => {
      const current = base.id === this.base?.id;
      return element("li", {}, element("button", {
        class: "kb-item", "aria-current": current ? "true" : null, "data-kb": String(base.id),
        onclick: () => this.open(base.id).catch(this.desktop.error),
      }, element("span", {}, base.name),
        element("span", { class: "muted kb-item-owner" },
          base.permission === "owner" ? "yours" : `${base.owner}'s, ${base.permission}`)));
    }));
    if (!bases.length) this.list.append(element("li", { class: "muted" }, "None yet: create one below."));
  }

  async create() {
    this.createError.textContent = "";
    try {
      const made = await this.api.post("/api/kb", {
        name: this.createName.value.trim(), description: this.createDescription.value.trim(),
      });
      this.createName.value = "";
      this.createDescription.value = "";
      await this.open(made.id);
    } catch (exc) {
      if (!(exc instanceof ApiError)) throw exc;
      this.createError.textContent = exc.message;
    }
  }

  async open(id) {
    this.base = null;
    if (id != null) {
      try {
        this.base = await this.api.get(`/api/kb/${id}`);
      } catch (exc) {
        if (!(exc instanceof ApiError && exc.status === 404)) throw exc;
        this.desktop.notify("That knowledge base no longer exists.", { error: true });
      }
    }
    this.desktop.setState(this.base ? String(this.base.id) : "");
    this.desktop.setTitle(this.base ? `Knowledge — ${this.base.name}` : "Knowledge");
    await this.refreshList();
    if (!this.base) {
      this.main.replaceChildren(element("p", { class: "muted kb-empty" },
        "Open a knowledge base, or create one, to upload documents and search them."));
      return;
    }
    this.showBase();
    await this.refreshDocuments();
  }

  showBase() {
    const base = this.base;
    const owner = base.permission === "owner";
    const writable = owner || base.permission === "write";
    const heading = element("h3", { id: uniqueId("kb-title") }, base.name);
    const parts = [
      element("header", { class: "kb-head" },
        element("div", {}, heading,
          element("p", { class: "muted" }, [
            base.description || null,
            `owner ${base.owner}`, `your permission: ${base.permission}`,
            `embedded with ${base.embedding_model}`,
            `chunks of ${base.chunk_tokens} tokens, ${base.chunk_overlap} overlapping`,
          ].filter(Boolean).join(" · "))),
        owner ? element("button", {
          class: "danger", onclick: () => this.removeBase().catch(this.desktop.error),
        }, "Delete knowledge base") : null),
      this.buildSearch(),
      writable ? this.buildUpload() : null,
      this.buildDocuments(writable),
      owner ? this.buildShares() : null,
    ];
    this.main.replaceChildren(element("section", { class: "kb-base", "aria-labelledby": heading.id },
      ...parts.filter(Boolean)));
  }

  async removeBase() {
    if (!confirm(`Delete the knowledge base ${this.base.name} and all its documents?`)) return;
    await this.api.delete(`/api/kb/${this.base.id}`);
    this.desktop.notify(`Deleted ${this.base.name}.`);
    await this.open(null);
  }

  // ---- sharing ----

  buildShares() {
    this.shareGroup = element("input", { required: true, maxlength: "128", autocomplete: "off" });
    this.sharePermission = element("select", {},
      element("option", { value: "read" }, "read"), element("option", { value: "write" }, "write"));
    this.shareList = element("ul", { class: "kb-shares", "aria-label": "Shared with" });
    this.shareError = element("p", { class: "error", role: "alert" });
    this.showShares(this.base.shares ?? []);
    return element("details", { class: "kb-panel" },
      element("summary", {}, "Sharing"),
      this.shareList,
      element("form", {
        class: "row",
        onsubmit: (event) => {
          event.preventDefault();
          this.share(this.shareGroup.value.trim(), this.sharePermission.value).catch(this.desktop.error);
        },
      },
        ...labelled("Group", this.shareGroup),
        ...labelled("Permission", this.sharePermission),
        element("button", { type: "submit" }, "Share")),
      this.shareError,
    );
  }

  showShares(shares) {
    this.shareList.replaceChildren(...shares.map((share) => element("li", { class: "row" },
      element("span", {}, `${share.group}: ${share.permission}`),
      element("button", {
        "aria-label": `Stop sharing with ${share.group}`,
        onclick: () => this.unshare(share.group).catch(this.desktop.error),
      }, "Stop sharing"))));
    if (!shares.length) this.shareList.append(element("li", { class: "muted" }, "Not shared: only you see it."));
  }

  async share(group, permission) {
    this.shareError.textContent = "";
    try {
      const path = `/api/kb/${this.base.id}/shares/${encodeURIComponent(group)}`;
      const { shares } = await this.api.put(path, { permission });
      this.shareGroup.value = "";
      this.showShares(shares);
    } catch (exc) {
      if (!(exc instanceof ApiError)) throw exc;
      this.shareError.textContent = exc.message;
    }
  }

  async unshare(group) {
    await this.api.delete(`/api/kb/${this.base.id}/shares/${encodeURIComponent(group)}`);
    const { shares } = await this.api.get(`/api/kb/${this.base.id}`);
    this.showShares(shares);
  }

  // ---- documents ----

  buildUpload() {
    this.files = element("input", {
      type: "file", multiple: true, required: true,
      accept: ".txt,.md,.markdown,.html,.htm,.pdf,.docx,.csv",
    });
    this.uploadButton = element("button", { type: "submit", class: "primary" }, "Upload");
    this.uploadProgress = element("progress", { id: uniqueId("kb-progress"), max: "1", value: "0" });
    this.uploadStatus = element("p", { class: "muted kb-upload-status", "aria-live": "polite" });
    const heading = element("h4", { id: uniqueId("kb-upload-h") }, "Upload documents");
    return element("section", { class: "kb-panel", "aria-labelledby": heading.id },
      heading,
      element("form", {
        class: "row",
        onsubmit: (event) => {
          event.preventDefault();
          this.upload().catch(this.desktop.error);
        },
      }, ...labelled("Files", this.files), this.uploadButton),
      element("div", { class: "row kb-progress" },
        element("label", { for: this.uploadProgress.id }, "Upload progress"), this.uploadProgress),
      this.uploadStatus,
    );
  }

  async upload() {
    const chosen = [...this.files.files];
    if (!chosen.length) return;
    const form = new FormData();
    for (const file of chosen) form.append("files", file, file.name);
    this.uploadButton.disabled = true;
    this.uploadStatus.classList.remove("error");
    this.uploadStatus.removeAttribute("role");
    this.uploadProgress.max = 1;
    this.uploadProgress.value = 0;
    this.uploadStatus.textContent = "Sending…";
    try {
      const answer = await this.api.upload(`/api/kb/${this.base.id}/documents`, form, (sent, total) => {
        this.uploadProgress.max = total || 1;
        this.uploadProgress.value = sent;
        // The last byte sent is not the end: the server extracts, chunks and embeds first.
        this.uploadStatus.textContent = sent < total
          ? `Sending ${formatBytes(sent)} of ${formatBytes(total)}`
          : "Sent; the server is indexing…";
      });
      this.uploadStatus.textContent = answer.documents
        .map((item) => `${item.document.name}: ${item.outcome}`).join(", ");
      this.files.value = "";
      await this.refreshDocuments();
    } catch (exc) {
      if (!(exc instanceof ApiError)) throw exc;
      this.uploadStatus.textContent = exc.message;
      this.uploadStatus.classList.add("error");
      this.uploadStatus.setAttribute("role", "alert");
    } finally {
      this.uploadButton.disabled = false;
    }
  }

  buildDocuments(writable) {
    this.writable = writable;
    this.documentRows = element("tbody");
    const heading = element("h4", { id: uniqueId("kb-docs-h") }, "Documents");
    return element("section", { class: "kb-panel", "aria-labelledby": heading.id },
      heading,
      element("div", { class: "table-scroll" },
        element("table", { class: "data-table kb-documents" },
          element("caption", { class: "visually-hidden" }, `Documents of ${this.base.name}`),
          element("thead", {}, element("tr", {},
            ...["Document", "Type", "Size", "Pages", "Chunks", "Updated", "Actions"]
              .map((name) => element("th", { scope: "col" }, name)))),
          this.documentRows)),
    );
  }

  async refreshDocuments() {
    const base = this.base;
    const { documents } = await this.api.get(`/api/kb/${base.id}/documents`);
    if (base !== this.base) return; // another base was opened meanwhile
    this.documentRows.replaceChildren(...documents.map((doc) => element("tr", { "data-document": String(doc.id) },
      element("th", { scope: "row" }, doc.name),
      element("td", {}, doc.media_type),
      element("td", { class: "number" }, formatBytes(doc.size)),
      element("td", { class: "number" }, doc.pages == null ? "—" : String(doc.pages)),
      element("td", { class: "number" }, String(doc.chunks)),
      element("td", {}, formatTime(doc.updated_at)),
      element("td", {}, element("div", { class: "row" },
        element("a", {
          href: `/api/kb/${base.id}/documents/${doc.id}/file`, download: doc.name,
          "aria-label": `Download ${doc.name}`,
        }, "Download"),
        this.writable ? element("button", {
          class: "danger", "aria-label": `Delete ${doc.name}`,
          onclick: () => this.removeDocument(doc).catch(this.desktop.error),
        }, "Delete") : null)),
    )));
    if (!documents.length) {
      this.documentRows.append(element("tr", {}, element("td", { colspan: "7", class: "muted" }, "No documents yet.")));
    }
  }

  async removeDocument(doc) {
    if (!confirm(`Delete ${doc.name} from ${this.base.name}?`)) return;
    await this.api.delete(`/api/kb/${this.base.id}/documents/${doc.id}`);
    await this.refreshDocuments();
  }

  // ---- search ----

  buildSearch() {
    this.query = element("input", {
      type: "search", required: true, maxlength: "8192", placeholder: "Ask the documents",
    });
    this.mode = element("select", {},
      ...["hybrid", "lexical", "vector"].map((mode) => element("option", { value: mode }, mode)));
    this.count = element("input", { type: "number", min: "1", max: "100", value: "5", class: "kb-count" });
    this.results = element("ol", { class: "kb-results", "aria-label": "Search results" });
    this.searchStatus = element("p", { class: "muted", "aria-live": "polite" });
    const heading = element("h4", { id: uniqueId("kb-search-h") }, "Search");
    return element("section", { class: "kb-panel", role: "search", "aria-labelledby": heading.id },
      heading,
      element("form", {
        class: "row",
        onsubmit: (event) => {
          event.preventDefault();
          this.search().catch(this.desktop.error);
        },
      },
        ...labelled("Search the documents", this.query),
        ...labelled("Mode", this.mode),
        ...labelled("Results", this.count),
        element("button", { type: "submit" }, "Search")),
      this.searchStatus,
      this.results,
    );
  }

  async search() {
    const query = this.query.value.trim();
    if (!query) return;
    this.searchStatus.classList.remove("error");
    this.searchStatus.textContent = "Searching…";
    let found;
    try {
      found = await this.api.post(`/api/kb/${this.base.id}/search`, {
        query, mode: this.mode.value, k: Number(this.count.value) || 5,
      });
    } catch (exc) {
      if (!(exc instanceof ApiError)) throw exc;
      this.searchStatus.textContent = exc.message;
      this.searchStatus.classList.add("error");
      this.results.replaceChildren();
      return;
    }
    this.searchStatus.textContent = found.results.length
      ? `${found.results.length} ${found.results.length === 1 ? "passage" : "passages"}, ${found.mode} search.`
      : "Nothing found.";
    this.results.replaceChildren(...found.results.map((hit, i) => element("li", { class: "kb-hit" },
      element("div", { class: "row kb-hit-head" },
        element("strong", {}, `${i + 1}. ${hit.document.name}`),
        hit.page != null ? element("span", {}, `page ${hit.page}`) : null,
        hit.heading ? element("span", { class: "muted" }, hit.heading) : null),
      element("dl", { class: "kb-hit-scores" },
        element("dt", {}, "Score"), element("dd", {}, hit.score.toFixed(4)),
        element("dt", {}, "Lexical rank"), element("dd", {}, rankText(hit.lexical_rank)),
        element("dt", {}, "Vector rank"), element("dd", {}, rankText(hit.vector_rank)),
        element("dt", {}, "Characters"), element("dd", {}, `${hit.start}–${hit.end}`)),
      element("blockquote", { class: "kb-passage" }, hit.text),
    )));
  }
}

export default {
  id: "knowledge",
  title: "Knowledge",
  admin: false,
  order: 15,
  width: 1060,
  height: 680,
  styles: "/desktop/apps/knowledge.css",
  mount(container, api, desktop) {
    const knowledge = new Knowledge(container, api, desktop);
    knowledge.start().catch(desktop.error);
  },
};
