// The exports list of the playback view: the centre's exports, newest first (GET
// /api/v1/exports), with status, size and download links for the file and its signed
// manifest; new ones are asked for with POST /api/v1/exports. The list refreshes every few
// seconds while the view is open. Main thread only.

import { getJSON, postJSON } from "./api.js";
import { t } from "./i18n.js";

const POLL_MS = 3000;

function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function stamp(iso) {
  const d = new Date(iso);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function size(bytes) {
  if (!bytes) return "–";
  if (bytes < 1048576) return `${Math.max(1, Math.round(bytes / 1024))} KB`;
  return `${(bytes / 1048576).toFixed(bytes < 10485760 ? 1 : 0)} MB`;
}

export class ExportsPanel {
  /**
   * @param {HTMLElement} list the element holding the rows
   * @param {{cameraName: (id: string) => string}} options
   */
  constructor(list, options) {
    this.list = list;
    this.options = options;
    this.exports = [];
    this.available = null;
    this.timer = null;
    this.busy = false;
  }

  start() {
    this.stop();
    this.refresh();
    this.timer = setInterval(() => this.refresh(), POLL_MS);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  async refresh() {
    if (this.busy) return;
    this.busy = true;
    try {
      const body = await getJSON("/exports");
      this.exports = Array.isArray(body) ? body : body.exports || [];
      this.available = true;
    } catch (err) {
      if (err.status === 401) return;
      this.available = false;
    } finally {
      this.busy = false;
    }
    this.render();
  }

  /** Ask for one export; resolves to the new export object. */
  async create(cameraId, from, to, reason) {
    const body = { camera_id: cameraId, start: new Date(from).toISOString(), end: new Date(to).toISOString() };
    if (reason) body.reason = reason;
    const made = await postJSON("/exports", body);
    this.exports = [made, ...this.exports.filter((e) => e.id !== made.id)];
    this.render();
    return made;
  }

  render() {
    if (!this.exports.length) {
      const note = el("li", "pb-exports-empty");
      note.textContent = this.available === false ? t("exports.unavailable") : t("exports.empty");
      this.list.replaceChildren(note);
      return;
    }
    this.list.replaceChildren(...this.exports.map((e) => this.item(e)));
  }

  item(e) {
    const li = el("li", "pb-export-item", { "data-export-id": String(e.id), "data-status": e.status });
    const what = el("span", "pb-export-what");
    what.textContent = `${this.options.cameraName(e.camera_id)} · ${stamp(e.start || e.requested_start)} – ${stamp(e.end || e.requested_end).slice(11)}`;
    const status = el("span", "pb-export-status");
    status.textContent = t(`exports.status.${e.status}`);
    if (e.error) status.title = e.error; // a failure, or a ready export cut short
    const bytes = el("span", "pb-export-size");
    bytes.textContent = size(e.bytes);
    li.append(what, status, bytes);
    if (e.status === "ready") {
      for (const [key, url] of [
        ["exports.file", e.file_url],
        ["exports.manifest", e.manifest_url],
      ]) {
        if (!url) continue;
        const a = el("a", "pb-export-link", { href: url, download: "" });
        a.textContent = t(key);
        li.append(a);
      }
    }
    if (e.reason) li.title = e.reason;
    return li;
  }
}
