// The playback timeline: one row per camera over one day, with what was recorded (spans),
// what was not (gaps) and the day's alarms as markers; a cursor at the moment playing and a
// marked range. It zooms from the whole day down to two minutes (buttons, the wheel, + and -)
// and follows the cursor when zoomed in.
//
// Pointer: a click or a drag plays from a moment; shift+click marks one end of a range,
// shift+drag marks a range. Keyboard (one tab stop, a slider): Left/Right move 10 s (with
// Shift one minute), PageUp/PageDown ten minutes, Home/End the day's ends, Enter or Space
// plays from there (a pause in the keys does it too), + and - zoom. Main thread only.

import { clock, t } from "./i18n.js";

const DAY_MS = 86400000;
const WINDOWS_MS = [DAY_MS, 6 * 3600000, 3600000, 900000, 120000];
const KEY_SEEK_MS = 400;
const DRAG_PX = 4;

function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

const pct = (x) => `${(x * 100).toFixed(4)}%`;
const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));

export class Timeline {
  /**
   * @param {HTMLElement} root an empty element to build in
   * @param {{seek: (ms: number) => void, mark: (from: number, to: number | null) => void}} actions
   *   seek: play from ms; mark: a marked range (to null: one end so far)
   */
  constructor(root, actions) {
    this.root = root;
    this.actions = actions;
    this.day = 0;
    this.rows = [];
    this.cursor = null;
    this.marks = null;
    this.level = 0;
    this.from = 0;
    this.keyMs = null;
    this.keyTimer = null;
    this.drag = null;
    const bar = el("div", "tl-bar");
    this.zoomOut = el("button", "tool-button", { type: "button", "data-zoom": "out" });
    this.zoomIn = el("button", "tool-button", { type: "button", "data-zoom": "in" });
    this.zoomOut.textContent = "−";
    this.zoomIn.textContent = "+";
    this.windowLabel = el("span", "tl-window");
    bar.append(this.zoomOut, this.zoomIn, this.windowLabel);
    this.axis = el("div", "tl-axis", { "aria-hidden": "true" });
    this.track = el("div", "tl-tracks", { role: "slider", tabindex: "0", "aria-orientation": "horizontal" });
    this.lanes = el("div", "tl-lanes");
    this.markBox = el("div", "tl-mark", { hidden: "" });
    this.cursorLine = el("div", "tl-cursor", { hidden: "" });
    this.track.append(this.lanes, this.markBox, this.cursorLine);
    this.names = el("div", "tl-names");
    const body = el("div", "tl-body");
    body.append(this.names, this.track);
    root.replaceChildren(bar, this.axis, body);
    this.wire();
  }

  wire() {
    this.zoomOut.addEventListener("click", () => this.zoom(-1));
    this.zoomIn.addEventListener("click", () => this.zoom(1));
    this.track.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      this.zoom(ev.deltaY < 0 ? 1 : -1, this.msAt(ev.clientX));
    });
    this.track.addEventListener("pointerdown", (ev) => this.pointerDown(ev));
    this.track.addEventListener("pointermove", (ev) => this.pointerMove(ev));
    this.track.addEventListener("pointerup", (ev) => this.pointerUp(ev));
    this.track.addEventListener("pointercancel", () => {
      this.drag = null;
    });
    this.track.addEventListener("keydown", (ev) => this.onKey(ev));
  }

  /** Show the day that starts at local midnight `dayStart` (ms), the whole day at first. */
  setDay(dayStart) {
    this.day = dayStart;
    this.level = 0;
    this.from = dayStart;
    this.render();
  }

  /** rows: [{id, name, spans: [[from, to]], gaps: [[from, to]], alarms: [{at, kind, label}]}] (ms). */
  setRows(rows) {
    this.rows = rows;
    this.render();
  }

  /** The moment playing (ms), or null; a zoomed-in window pages to keep it in view. */
  setCursor(ms) {
    this.cursor = ms;
    if (ms !== null && this.level > 0 && !this.drag && this.keyMs === null) {
      const span = this.span();
      if (ms < this.from || ms > this.from + span) {
        this.from = this.clampFrom(ms - span * 0.1);
        this.render();
        return;
      }
    }
    this.placeCursor();
  }

  setMarks(from, to) {
    this.marks = from === null ? null : { from, to };
    this.placeMarks();
  }

  span() {
    return WINDOWS_MS[this.level];
  }

  clampFrom(from) {
    return clamp(from, this.day, this.day + DAY_MS - this.span());
  }

  zoom(direction, around = this.cursor ?? this.from + this.span() / 2) {
    const level = clamp(this.level + direction, 0, WINDOWS_MS.length - 1);
    if (level === this.level) return;
    const ratio = (around - this.from) / this.span();
    this.level = level;
    this.from = this.clampFrom(around - ratio * this.span());
    this.render();
  }

  x(ms) {
    return (ms - this.from) / this.span();
  }

  msAt(clientX) {
    const box = this.track.getBoundingClientRect();
    const ratio = clamp((clientX - box.left) / Math.max(1, box.width), 0, 1);
    return Math.round(this.from + ratio * this.span());
  }

  // ---- drawing -----------------------------------------------------------------------------

  render() {
    this.root.dataset.from = String(this.from);
    this.root.dataset.to = String(this.from + this.span());
    this.windowLabel.textContent = t(`timeline.window${this.level}`);
    this.zoomOut.disabled = this.level === 0;
    this.zoomIn.disabled = this.level === WINDOWS_MS.length - 1;
    this.zoomOut.setAttribute("aria-label", t("timeline.zoomOut"));
    this.zoomIn.setAttribute("aria-label", t("timeline.zoomIn"));
    this.track.setAttribute("aria-label", t("timeline.label"));
    this.renderAxis();
    this.renderRows();
    this.placeCursor();
    this.placeMarks();
  }

  renderAxis() {
    const span = this.span();
    const step = [3600000 * 2, 1800000, 600000, 120000, 15000][this.level];
    const ticks = [];
    for (let ms = Math.ceil(this.from / step) * step; ms <= this.from + span; ms += step) {
      const tick = el("span", "tl-tick");
      tick.style.left = pct(this.x(ms));
      const text = clock(ms / 1000);
      tick.textContent = this.level >= 3 ? text : text.slice(0, 5);
      ticks.push(tick);
    }
    this.axis.replaceChildren(...ticks);
  }

  renderRows() {
    const lanes = [];
    const names = [];
    for (const row of this.rows) {
      const lane = el("div", "tl-lane", { "data-camera": row.id });
      for (const [kind, list] of [
        ["tl-gap", row.gaps],
        ["tl-span", row.spans],
      ]) {
        for (const [a, b] of list) this.addBlock(lane, kind, a, b);
      }
      for (const alarm of row.alarms) {
        const x = this.x(alarm.at);
        if (x < 0 || x > 1) continue;
        const mark = el("span", "tl-alarm", { "data-kind": alarm.kind, title: alarm.label });
        mark.style.left = pct(x);
        lane.append(mark);
      }
      lanes.push(lane);
      const name = el("div", "tl-name", { title: row.name });
      name.textContent = row.name;
      names.push(name);
    }
    this.lanes.replaceChildren(...lanes);
    this.names.replaceChildren(...names);
  }

  addBlock(lane, kind, a, b) {
    const left = Math.max(0, this.x(a));
    const right = Math.min(1, this.x(b));
    if (right <= left) return;
    const block = el("span", kind);
    block.style.left = pct(left);
    block.style.width = pct(Math.max(right - left, 0.001));
    lane.append(block);
  }

  placeCursor() {
    const ms = this.keyMs ?? this.cursor;
    const x = ms === null ? -1 : this.x(ms);
    this.cursorLine.hidden = x < 0 || x > 1;
    if (!this.cursorLine.hidden) this.cursorLine.style.left = pct(x);
    this.track.setAttribute("aria-valuemin", "0");
    this.track.setAttribute("aria-valuemax", "86400");
    this.track.setAttribute("aria-valuenow", String(ms === null ? 0 : Math.round((ms - this.day) / 1000)));
    this.track.setAttribute("aria-valuetext", ms === null ? t("timeline.none") : clock(ms / 1000));
  }

  placeMarks() {
    const m = this.marks;
    if (!m) {
      this.markBox.hidden = true;
      return;
    }
    const a = this.x(Math.min(m.from, m.to ?? m.from));
    const b = this.x(Math.max(m.from, m.to ?? m.from));
    this.markBox.hidden = b < 0 || a > 1;
    this.markBox.dataset.open = String(m.to === null);
    this.markBox.style.left = pct(clamp(a, 0, 1));
    this.markBox.style.width = pct(Math.max(clamp(b, 0, 1) - clamp(a, 0, 1), 0.002));
  }

  // ---- pointer and keys --------------------------------------------------------------------

  pointerDown(ev) {
    if (ev.button !== 0) return;
    this.track.setPointerCapture(ev.pointerId);
    this.drag = { x: ev.clientX, ms: this.msAt(ev.clientX), mark: ev.shiftKey, moved: false };
  }

  pointerMove(ev) {
    const d = this.drag;
    if (!d) return;
    if (Math.abs(ev.clientX - d.x) > DRAG_PX) d.moved = true;
    if (!d.moved) return;
    const ms = this.msAt(ev.clientX);
    if (d.mark) this.actions.mark(d.ms, ms);
    else {
      this.keyMs = ms;
      this.placeCursor();
    }
  }

  pointerUp(ev) {
    const d = this.drag;
    this.drag = null;
    if (!d) return;
    const ms = d.moved ? this.msAt(ev.clientX) : d.ms;
    this.keyMs = null;
    if (d.mark) this.actions.mark(d.moved ? d.ms : ms, d.moved ? ms : null);
    else this.actions.seek(ms);
    this.placeCursor();
  }

  onKey(ev) {
    const base = this.keyMs ?? this.cursor ?? this.from;
    const moves = {
      ArrowLeft: ev.shiftKey ? -60000 : -10000,
      ArrowRight: ev.shiftKey ? 60000 : 10000,
      PageDown: -600000,
      PageUp: 600000,
    };
    let next = null;
    if (ev.key in moves) next = base + moves[ev.key];
    else if (ev.key === "Home") next = this.day;
    else if (ev.key === "End") next = this.day + DAY_MS - 1000;
    else if (ev.key === "+" || ev.key === "=") this.zoom(1, base);
    else if (ev.key === "-") this.zoom(-1, base);
    else if (ev.key === "Enter" || ev.key === " ") this.commitKey(base);
    else return;
    ev.preventDefault();
    if (next === null) return;
    this.keyMs = clamp(next, this.day, this.day + DAY_MS - 1000);
    if (this.keyMs < this.from || this.keyMs > this.from + this.span()) {
      this.from = this.clampFrom(this.keyMs - this.span() / 2);
      this.render();
    } else this.placeCursor();
    clearTimeout(this.keyTimer);
    this.keyTimer = setTimeout(() => this.commitKey(this.keyMs), KEY_SEEK_MS);
  }

  commitKey(ms) {
    clearTimeout(this.keyTimer);
    this.keyMs = null;
    this.actions.seek(ms);
  }
}
