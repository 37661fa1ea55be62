// The playback view: pick a camera (or the cameras of a hall, up to four) and a day; a
// timeline of what each recorded that day with the day's alarms; play from any moment, in
// step across cameras, at 1, 2, 4 or 8 times; step 10 s back or forward; mark a range and
// export it; the centre's exports with their downloads. Shown instead of the live wall, to
// users with the "playback" permission only; Esc closes it. Main thread only.

import { getJSON } from "./api.js";
import { ExportsPanel } from "./exports.js";
import { clock, t } from "./i18n.js";
import { MAX_CAMERAS, PlaybackGroup, SPEEDS } from "./playback_group.js";
import { Timeline } from "./timeline.js";

const SPANS_EVERY_MS = 10000;
const MAX_EXPORT_MS = 2 * 3600000;
const ALARM_LEAD_MS = 10000;

function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

const pad = (n) => String(n).padStart(2, "0");
const dayInput = (ms) => {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
};
const midnight = (ms) => {
  const d = new Date(ms);
  return new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
};
const stamp = (ms) => `${dayInput(ms)} ${clock(ms / 1000)}`;
const pairs = (list) => (list || []).map((s) => [Date.parse(s.start), Date.parse(s.end)]);

export class PlaybackView {
  /**
   * @param {HTMLElement} root section#playback
   * @param {{alarms: () => object[], toast: (text: string) => void, close: () => void}} options
   */
  constructor(root, options) {
    this.root = root;
    this.options = options;
    const $ = (sel) => root.querySelector(sel);
    this.dom = {
      source: $("#pb-source"),
      day: $("#pb-day"),
      goto: $("#pb-goto"),
      time: $("#pb-time"),
      tiles: $("#pb-tiles"),
      play: $("#pb-play"),
      speeds: $("#pb-speeds"),
      moment: $("#pb-moment"),
      range: $("#pb-range"),
      exportForm: $("#pb-export"),
      reason: $("#pb-reason"),
      exportButton: $("#pb-export-button"),
    };
    this.cameras = new Map();
    this.halls = [];
    this.chosen = [];
    this.spans = new Map();
    this.group = null;
    this.tiles = [];
    this.day = midnight(Date.now());
    this.marks = null;
    this.paused = false;
    this.speed = 1;
    this.spansTimer = null;
    this.framePending = false;
    this.listening = new AbortController();
    this.timeline = new Timeline($("#pb-timeline"), {
      seek: (ms) => this.playFrom(ms),
      mark: (from, to) => this.markFromTimeline(from, to),
    });
    this.exports = new ExportsPanel($("#pb-export-list"), { cameraName: (id) => this.cameraName(id) });
    this.timeline.setDay(this.day);
    const speeds = SPEEDS.map((value) => {
      const b = el("button", "tool-button pb-speed", { type: "button", "data-speed": String(value) });
      b.textContent = `${value}×`;
      return b;
    });
    this.dom.speeds.replaceChildren(...speeds);
    this.wire();
  }

  /** Listen on the view's static markup until destroy() (a later login builds a new view on it). */
  wire() {
    const d = this.dom;
    const signal = this.listening.signal;
    const on = (node, type, fn) => node.addEventListener(type, fn, { signal });
    const button = (id, fn) => on(this.root.querySelector(id), "click", fn);
    on(d.source, "change", () => this.choose(d.source.value));
    on(d.day, "change", () => {
      if (!d.day.value) return;
      const [y, m, dd] = d.day.value.split("-").map(Number);
      this.setDay(new Date(y, m - 1, dd).getTime());
    });
    on(d.goto, "submit", (ev) => {
      ev.preventDefault();
      const [h, m, s] = (d.time.value || "").split(":").map(Number);
      if (Number.isFinite(h)) this.playFrom(this.day + ((h * 60 + (m || 0)) * 60 + (s || 0)) * 1000);
    });
    on(d.play, "click", () => this.setPaused(!this.paused));
    button("#pb-back", () => this.group && this.group.step(-10));
    button("#pb-forward", () => this.group && this.group.step(10));
    on(d.speeds, "click", (ev) => {
      const b = ev.target.closest("[data-speed]");
      if (b) this.setSpeed(Number(b.dataset.speed));
    });
    button("#pb-mark-in", () => this.markAt("from"));
    button("#pb-mark-out", () => this.markAt("to"));
    button("#pb-mark-clear", () => this.setMarks(null));
    on(d.exportForm, "submit", (ev) => {
      ev.preventDefault();
      this.exportRange();
    });
    button("#pb-close", () => this.options.close());
    // Esc closes the view from within it, or when nothing has the focus (after a click on a picture).
    on(document, "keydown", (ev) => {
      const here = this.root.contains(ev.target) || ev.target === document.body;
      if (ev.key === "Escape" && !ev.defaultPrevented && here && !this.root.hidden) {
        ev.preventDefault();
        this.options.close();
      }
    });
  }

  /** The camera list and halls (the app's 2-second poll). */
  setCatalog(cameras, halls) {
    this.cameras = new Map(cameras.map((c) => [c.id, c]));
    if (halls) this.halls = halls;
    this.fillSources();
  }

  fillSources() {
    const select = this.dom.source;
    const value = select.value;
    const placeholder = el("option", "", { value: "" });
    placeholder.textContent = t("playback.pick");
    const groups = this.halls.map((hall) => {
      const group = el("optgroup", "", { label: hall.name });
      const ids = hall.cameras.filter((id) => this.cameras.has(id));
      if (ids.length > 1) {
        const all = el("option", "", { value: `hall:${hall.id}` });
        all.textContent = t("playback.wholeHall", { hall: hall.name, n: Math.min(ids.length, MAX_CAMERAS) });
        group.append(all);
      }
      for (const id of ids) {
        const option = el("option", "", { value: `camera:${id}` });
        option.textContent = this.cameraName(id);
        group.append(option);
      }
      return group;
    });
    const shape = JSON.stringify(groups.map((g) => g.label + g.textContent));
    if (shape === this.sourceShape) return;
    this.sourceShape = shape;
    select.replaceChildren(placeholder, ...groups);
    select.value = value;
  }

  cameraName(id) {
    const cam = this.cameras.get(id);
    return cam ? cam.name : id;
  }

  // ---- open and close ----------------------------------------------------------------------

  /** Show the view; with camera and at (ms): play that camera from that moment. */
  open({ camera = null, at = null } = {}) {
    this.root.hidden = false;
    this.exports.start();
    if (camera && this.cameras.has(camera)) {
      this.setDay(midnight(at ?? Date.now()), false);
      this.pick(`camera:${camera}`);
      if (at !== null) this.playFrom(at);
    } else {
      this.setDay(this.day, false);
    }
    this.startSpans();
    this.dom.source.focus();
  }

  /** Show "camera:<id>" or "hall:<id>" (as the source list names them). */
  pick(value) {
    if (![...this.dom.source.options].some((o) => o.value === value)) return;
    this.dom.source.value = value;
    this.choose(value);
  }

  /** Play a camera from 10 s before an alarm. */
  playAlarm(alarm) {
    this.open({ camera: alarm.camera_id, at: Date.parse(alarm.at) - ALARM_LEAD_MS });
  }

  close() {
    this.root.hidden = true;
    this.exports.stop();
    clearInterval(this.spansTimer);
    this.spansTimer = null;
    this.stopGroup();
  }

  destroy() {
    this.close();
    this.listening.abort();
    this.dom.tiles.replaceChildren();
  }

  // ---- what to play ------------------------------------------------------------------------

  setDay(dayStart, reload = true) {
    this.day = dayStart;
    this.dom.day.value = dayInput(dayStart);
    this.timeline.setDay(dayStart);
    if (reload && this.chosen.length) this.choose(this.dom.source.value);
  }

  choose(value) {
    const [kind, id] = value.split(":");
    let ids = [];
    if (kind === "camera" && this.cameras.has(id)) ids = [id];
    else if (kind === "hall") {
      const hall = this.halls.find((h) => h.id === id);
      ids = hall ? hall.cameras.filter((c) => this.cameras.has(c)).slice(0, MAX_CAMERAS) : [];
    }
    this.chosen = ids;
    this.spans = new Map();
    this.buildTiles();
    this.setMarks(null);
    this.loadSpans();
  }

  buildTiles() {
    this.stopGroup();
    this.tiles = this.chosen.map((id) => {
      const root = el("div", "pb-tile", { "data-camera": id });
      const video = el("video", "pb-video", { muted: "", playsinline: "" });
      video.muted = true;
      const name = el("span", "pb-tile-name");
      name.textContent = this.cameraName(id);
      const time = el("span", "pb-tile-time");
      const state = el("span", "pb-tile-state");
      const bar = el("div", "pb-tile-bar");
      bar.append(name, time, state);
      root.append(video, bar);
      return { id, root, video, time, state };
    });
    this.dom.tiles.dataset.count = String(this.tiles.length);
    this.dom.tiles.replaceChildren(...this.tiles.map((x) => x.root));
    this.renderState();
  }

  stopGroup() {
    if (this.group) this.group.stop();
    this.group = null;
  }

  playFrom(ms) {
    if (!this.tiles.length) {
      this.options.toast(t("playback.pickFirst"));
      return;
    }
    if (!this.group) {
      this.group = new PlaybackGroup(
        this.tiles.map((x) => ({ camera: x.id, video: x.video })),
        () => this.changed(),
      );
      this.group.setSpeed(this.speed);
      this.group.setPaused(this.paused);
    }
    this.group.play(ms);
    this.timeline.setCursor(ms);
    this.changed();
  }

  setPaused(paused) {
    this.paused = paused;
    if (this.group) this.group.setPaused(paused);
    this.renderState();
  }

  setSpeed(value) {
    this.speed = value;
    if (this.group) this.group.setSpeed(value);
    this.renderState();
  }

  // ---- spans and alarms --------------------------------------------------------------------

  startSpans() {
    clearInterval(this.spansTimer);
    this.spansTimer = setInterval(() => {
      if (this.day === midnight(Date.now())) this.loadSpans();
    }, SPANS_EVERY_MS);
  }

  async loadSpans() {
    const ids = this.chosen;
    const start = new Date(this.day).toISOString();
    const end = new Date(Math.min(this.day + 86400000, Date.now())).toISOString();
    if (this.day > Date.now()) return this.renderRows();
    const q = `start=${encodeURIComponent(start)}&end=${encodeURIComponent(end)}`;
    await Promise.all(
      ids.map(async (id) => {
        try {
          const found = await getJSON(`/cameras/${encodeURIComponent(id)}/recordings?${q}`);
          if (ids === this.chosen) this.spans.set(id, { spans: pairs(found.spans), gaps: pairs(found.gaps) });
        } catch (err) {
          if (err.status !== 401) this.options.toast(`${this.cameraName(id)}: ${err.detail || err.message}`);
        }
      }),
    );
    if (ids === this.chosen) this.renderRows();
  }

  renderRows() {
    const until = this.day + 86400000;
    const alarms = this.options.alarms();
    this.timeline.setRows(
      this.chosen.map((id) => {
        const found = this.spans.get(id) || { spans: [], gaps: [] };
        const own = alarms
          .map((a) => ({ ...a, ms: Date.parse(a.at) }))
          .filter((a) => a.camera_id === id && a.ms >= this.day && a.ms < until)
          .map((a) => ({ at: a.ms, kind: a.kind, label: `${t(`kind.${a.kind}`)} ${clock(a.ms / 1000)}` }));
        return { id, name: this.cameraName(id), spans: found.spans, gaps: found.gaps, alarms: own };
      }),
    );
  }

  // ---- marks and exports -------------------------------------------------------------------

  markAt(end) {
    const now = this.group ? this.group.moment() : null;
    if (now === null) return;
    const m = this.marks || { from: now, to: null };
    this.setMarks(end === "from" ? { from: now, to: m.to } : { from: m.from ?? now, to: now });
  }

  markFromTimeline(from, to) {
    if (to !== null) this.setMarks({ from, to });
    else if (this.marks && this.marks.to === null) this.setMarks({ from: this.marks.from, to: from });
    else this.setMarks({ from, to: null });
  }

  setMarks(marks) {
    this.marks = marks;
    this.timeline.setMarks(marks ? marks.from : null, marks ? marks.to : null);
    this.renderRange();
  }

  /** The marked range as [from, to] (ms, ordered), or null when incomplete. */
  range() {
    const m = this.marks;
    if (!m || m.to === null || m.from === null) return null;
    return [Math.min(m.from, m.to), Math.max(m.from, m.to)];
  }

  renderRange() {
    const r = this.range();
    const ok = Boolean(r) && r[1] - r[0] >= 1000 && r[1] - r[0] <= MAX_EXPORT_MS;
    this.dom.exportButton.disabled = !ok || !this.chosen.length;
    if (r) this.dom.range.textContent = t("playback.range", { from: clock(r[0] / 1000), to: clock(r[1] / 1000), s: Math.round((r[1] - r[0]) / 1000) });
    else if (this.marks) this.dom.range.textContent = t("playback.rangeFrom", { from: clock(this.marks.from / 1000) });
    else this.dom.range.textContent = t("playback.noRange");
    if (r && r[1] - r[0] > MAX_EXPORT_MS) this.dom.range.textContent += ` · ${t("playback.rangeTooLong")}`;
  }

  async exportRange() {
    const r = this.range();
    if (!r) return;
    const reason = this.dom.reason.value.trim();
    this.dom.exportButton.disabled = true;
    try {
      for (const id of this.chosen) await this.exports.create(id, r[0], r[1], reason);
      this.dom.reason.value = "";
      this.options.toast(t("exports.requested", { n: this.chosen.length }));
    } catch (err) {
      if (err.status !== 401) this.options.toast(`${t("exports.failed")}: ${err.detail || err.message}`);
    } finally {
      this.renderRange();
    }
  }

  // ---- drawing -----------------------------------------------------------------------------

  /** Coalesce the streams' frequent changes into one redraw per frame. */
  changed() {
    if (this.framePending) return;
    this.framePending = true;
    requestAnimationFrame(() => {
      this.framePending = false;
      this.renderState();
    });
  }

  renderState() {
    const moment = this.group ? this.group.moment() : null;
    this.root.dataset.moment = moment === null ? "" : String(Math.round(moment));
    this.dom.moment.textContent = moment === null ? t("playback.noMoment") : stamp(moment);
    this.timeline.setCursor(moment);
    this.dom.play.textContent = t(this.paused ? "playback.play" : "playback.pause");
    this.dom.play.setAttribute("aria-pressed", String(this.paused));
    for (const b of this.dom.speeds.querySelectorAll("[data-speed]")) {
      b.setAttribute("aria-pressed", String(Number(b.dataset.speed) === this.speed));
    }
    const infos = this.group ? this.group.info() : [];
    this.tiles.forEach((tile, i) => {
      const info = infos[i];
      const status = info ? info.status : "idle";
      tile.root.dataset.status = status;
      tile.time.textContent = info && info.wall !== null ? clock(info.wall / 1000) : "";
      tile.state.textContent = status === "playing" ? "" : t(`playback.status.${status}`);
    });
  }

  /** Re-render texts after a language switch. */
  relabel() {
    this.sourceShape = null;
    this.fillSources();
    this.timeline.render();
    this.renderRows();
    this.renderRange();
    this.renderState();
    this.exports.render();
  }

  /** Diagnostics for window.hallwatch.playback(). */
  info() {
    return {
      open: !this.root.hidden,
      cameras: this.chosen,
      day: this.day,
      moment: this.group ? this.group.moment() : null,
      speed: this.speed,
      paused: this.paused,
      marks: this.marks,
      corrections: this.group ? this.group.corrections : 0,
      streams: this.group ? this.group.info() : [],
    };
  }
}
