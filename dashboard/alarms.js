// The alarms panel: the list (newest first), live events over Server-Sent Events,
// acknowledgement by operators and admins, a play-back button for users who may play
// recordings, the picture of a picture alarm for users who may take snapshots, and the
// unacknowledged count in the header. Texts come in the page's language.

import { getJSON, postJSON, request } from "./api.js";
import { showAlarmPicture } from "./diagnosis.js";
import { clock, localized, t } from "./i18n.js";

const KEEP = 200;
const RECONNECT_MS = 5000;

function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

const epoch = (iso) => (iso ? Date.parse(iso) / 1000 : 0);

export class AlarmsPanel {
  /**
   * @param {HTMLElement} list the element holding the items
   * @param {HTMLElement} counter #alarm-count
   * @param {{canAck: boolean, canPlayback: boolean, canSeePictures: boolean,
   *          lookup: (id: string) => {camera: string, hall: string},
   *          onCamera: (id: string) => void, onPlayback: (alarm: object) => void,
   *          onAlarms: (alarms: object[]) => void, toast: (text: string) => void}} options
   *   canSeePictures: the "snapshot" permission; onAlarms: the alarms after every change
   */
  constructor(list, counter, options) {
    this.list = list;
    this.counter = counter;
    this.options = options;
    this.alarms = new Map();
    this.unacknowledged = 0;
    this.source = null;
    this.timer = null;
    this.countTimer = null;
    this.stopped = false;
    this.note = el("p", "alarms-empty");
    list.addEventListener("click", (ev) => this.onClick(ev));
    list.addEventListener("keydown", (ev) => {
      const item = ev.target.closest("[data-alarm-id]");
      if (item && ev.target === item && ev.key === "Enter") this.options.onCamera(item.dataset.camera);
    });
  }

  async start() {
    this.stopped = false;
    await this.load();
    this.listen();
  }

  stop() {
    this.stopped = true;
    if (this.source) this.source.close();
    this.source = null;
    clearTimeout(this.timer);
    clearTimeout(this.countTimer);
  }

  async load() {
    try {
      const body = await getJSON("/alarms?limit=" + KEEP);
      const alarms = Array.isArray(body) ? body : body.alarms || [];
      this.alarms = new Map(alarms.map((a) => [a.id, a]));
      this.unacknowledged = Number.isInteger(body.unacknowledged) ? body.unacknowledged : this.localCount();
      this.available = true;
    } catch (err) {
      if (err.status === 401) return;
      this.available = false;
    }
    this.render();
  }

  listen() {
    if (this.stopped || typeof EventSource !== "function") return;
    const source = new EventSource("/api/v1/alarms/events");
    this.source = source;
    const handle = (ev) => {
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.upsert(data, ev.type);
    };
    source.addEventListener("alarm", handle);
    source.addEventListener("ack", handle);
    source.addEventListener("resync", () => this.load());
    source.addEventListener("open", () => {
      if (!this.available) this.load();
    });
    source.addEventListener("error", () => {
      if (source.readyState !== EventSource.CLOSED || this.stopped) return;
      // Refused (expired session, service restarting): the API call reports a 401 itself.
      source.close();
      this.source = null;
      request("/auth/me").catch(() => {});
      this.timer = setTimeout(() => {
        if (!this.stopped) this.load().then(() => this.listen());
      }, RECONNECT_MS);
    });
  }

  upsert(alarm, type) {
    const before = this.alarms.get(alarm.id);
    const wasOpen = before ? !before.informational && !before.acknowledged_by : type === "ack";
    const isOpen = !alarm.informational && !alarm.acknowledged_by;
    if (before && before.acknowledged_by && !alarm.acknowledged_by) return; // an older copy
    this.alarms.set(alarm.id, alarm);
    if (wasOpen !== isOpen) this.unacknowledged = Math.max(0, this.unacknowledged + (isOpen ? 1 : -1));
    if (this.alarms.size > KEEP) {
      const oldest = [...this.alarms.values()].sort((a, b) => epoch(a.at) - epoch(b.at) || a.id - b.id)[0];
      this.alarms.delete(oldest.id);
    }
    this.render();
    this.recount();
  }

  /** Ask the server for the exact count shortly after a change (the local list is capped). */
  recount() {
    clearTimeout(this.countTimer);
    this.countTimer = setTimeout(async () => {
      try {
        const body = await getJSON("/alarms?unacknowledged=true&limit=1");
        if (Number.isInteger(body.unacknowledged)) {
          this.unacknowledged = body.unacknowledged;
          this.renderCount();
        }
      } catch {
        // The next event or reload corrects it.
      }
    }, 1000);
  }

  localCount() {
    return [...this.alarms.values()].filter((a) => !a.informational && !a.acknowledged_by).length;
  }

  async onClick(ev) {
    const button = ev.target.closest('button[data-action="ack"]');
    const item = ev.target.closest("[data-alarm-id]");
    if (!item) return;
    const alarm = [...this.alarms.values()].find((a) => String(a.id) === item.dataset.alarmId);
    if (ev.target.closest('button[data-action="playback"]')) {
      if (alarm) this.options.onPlayback(alarm);
      return;
    }
    if (ev.target.closest('button[data-action="picture"]')) {
      if (alarm) this.showPicture(alarm);
      return;
    }
    if (!button) {
      this.options.onCamera(item.dataset.camera);
      return;
    }
    button.disabled = true;
    try {
      const alarm = await postJSON(`/alarms/${encodeURIComponent(item.dataset.alarmId)}/ack`);
      this.upsert(alarm, "ack");
    } catch (err) {
      button.disabled = false;
      if (err.status !== 401) this.options.toast(`${t("alarms.ackFailed")}: ${err.detail || err.message}`);
    }
  }

  showPicture(alarm) {
    const where = this.options.lookup(alarm.camera_id);
    const caption = `${where.camera} ${where.hall} ${clock(epoch(alarm.at))}`;
    const thumb = () => this.list.querySelector(`[data-alarm-id="${alarm.id}"] button[data-action="picture"]`);
    showAlarmPicture(alarm, caption, thumb);
  }

  renderCount() {
    const n = String(this.unacknowledged);
    if (this.counter.textContent !== n) this.counter.textContent = n;
    this.counter.dataset.zero = String(this.unacknowledged === 0);
    this.counter.closest(".alarm-badge")?.setAttribute("aria-label", `${t("header.alarms")}: ${n}`);
  }

  render() {
    this.renderCount();
    const alarms = [...this.alarms.values()].sort((a, b) => epoch(b.at) - epoch(a.at) || b.id - a.id);
    const items = alarms.map((a) => this.item(a));
    if (!items.length) {
      this.note.textContent = this.available === false ? t("alarms.unavailable") : t("alarms.empty");
      items.push(this.note);
    }
    this.list.replaceChildren(...items);
    this.options.onAlarms(alarms);
  }

  item(alarm) {
    const acked = Boolean(alarm.acknowledged_by);
    const li = el("li", "alarm", {
      "data-alarm-id": String(alarm.id),
      "data-kind": alarm.kind,
      "data-acknowledged": String(acked),
      "data-informational": String(Boolean(alarm.informational)),
      "data-camera": alarm.camera_id,
      tabindex: "0",
    });
    const where = this.options.lookup(alarm.camera_id);
    const head = el("div", "alarm-head");
    const kind = el("span", "alarm-kind");
    kind.textContent = t(`kind.${alarm.kind}`);
    const message = localized(alarm.texts, alarm.message);
    const detail = message !== kind.textContent ? message : ""; // a picture alarm's text is its kind
    const time = el("time", "alarm-time", { datetime: alarm.at });
    time.textContent = clock(epoch(alarm.at));
    head.append(kind, time);
    const what = el("div", "alarm-what");
    const cam = el("span", "alarm-camera");
    cam.textContent = where.camera;
    const hall = el("span", "alarm-hall");
    hall.textContent = where.hall;
    what.append(cam, hall);
    li.append(head, what);
    if (detail) {
      const msg = el("div", "alarm-message");
      msg.textContent = detail;
      li.append(msg);
    }
    if (alarm.picture && this.options.canSeePictures) li.append(this.thumbnail(alarm, where, time.textContent));
    if (acked) {
      const by = el("div", "alarm-ack");
      by.textContent = t("alarms.ackBy", { user: alarm.acknowledged_by, time: clock(epoch(alarm.acknowledged_at)) });
      li.append(by);
    } else if (!alarm.informational && this.options.canAck) {
      const b = el("button", "ack", { type: "button", "data-action": "ack" });
      b.textContent = t("alarms.ack");
      head.append(b);
    }
    if (this.options.canPlayback) {
      const b = el("button", "alarm-play", { type: "button", "data-action": "playback", title: t("alarms.playbackLabel") });
      b.textContent = t("alarms.playback");
      b.setAttribute("aria-label", `${t("alarms.playbackLabel")}: ${where.camera} ${time.textContent}`);
      head.append(b);
    }
    li.setAttribute("aria-label", `${detail || kind.textContent} ${time.textContent} ${where.camera} ${where.hall}`);
    return li;
  }

  /** A button showing the alarm's picture small (loaded once scrolled into view); opens it full size. */
  thumbnail(alarm, where, time) {
    const label = t("alarms.pictureLabel", { camera: where.camera, time });
    const b = el("button", "alarm-thumb", { type: "button", "data-action": "picture", "aria-label": label, title: label });
    b.append(el("img", "", { src: alarm.picture, alt: "", loading: "lazy", decoding: "async", width: "160", height: "90" }));
    return b;
  }
}
