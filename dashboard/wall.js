// The video wall: layout (1, 4, 9 or 16 tiles), which camera sits in which tile, selection,
// keyboard moves between tiles, and the visibility rules (off screen or hidden tab = no
// stream). Placement changes are reported through onChange so the app can save them.

import { t } from "./i18n.js";
import { Tile } from "./tile.js";

export const LAYOUTS = [1, 4, 9, 16];
const MAX_TILES = 16;
const MODE_ROLES = new Set(["operator", "admin"]);

export class Wall {
  /**
   * @param {HTMLElement} section the #wall element
   * @param {{canSnapshot: boolean, onChange: (state: {layout: number, tiles: (string|null)[]}) => void,
   *          toast: (text: string) => void, onStats: () => void, onHealth: (camera: object) => void,
   *          canChooseMode?: boolean}} options
   *   onHealth: show a camera's picture diagnosis (its tile's diagnosis button)
   *   canChooseMode: whether the user may force a tile's playback mode (operators and admins);
   *   by default taken from the logged-in user's role
   */
  constructor(section, options) {
    this.section = section;
    this.canSnapshot = options.canSnapshot;
    this.canChooseMode = options.canChooseMode ?? MODE_ROLES.has(window.hallwatch?.user()?.role);
    this.onChange = options.onChange;
    this.toast = options.toast;
    this.onStats = options.onStats;
    this.onHealth = options.onHealth;
    this.pictureFaults = new Map();
    this.cameras = new Map();
    this.halls = new Map();
    this.layout = 4;
    this.slots = new Array(MAX_TILES).fill(null);
    this.tiles = [];
    this.selected = -1;
    this.cursor = 0;
    this.running = true;
    this.statsPending = false;
    this.observer = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        const tile = this.tiles.find((x) => x.el === entry.target);
        if (!tile) continue;
        tile.onScreen = entry.isIntersecting;
        tile.reconcile();
      }
    });
    this.onVisibility = () => {
      for (const tile of this.tiles) tile.reconcile();
    };
    document.addEventListener("visibilitychange", this.onVisibility);
    this.render();
  }

  /** New camera list (from the 2-second poll) and halls. */
  setCatalog(cameras, halls) {
    this.cameras = new Map(cameras.map((c) => [c.id, c]));
    if (halls) this.halls = new Map(halls.map((h) => [h.id, h]));
    for (const tile of this.tiles) {
      if (tile.cameraId && !this.cameras.has(tile.cameraId)) tile.setCamera(null);
      else tile.reconcile();
    }
  }

  /** Cameras whose picture has faults now (camera id → kinds): their tiles show a badge. */
  setPictureFaults(faults) {
    const before = this.pictureFaults;
    this.pictureFaults = faults;
    for (const tile of this.tiles) {
      const id = tile.cameraId;
      if (id && String(before.get(id) || "") !== String(faults.get(id) || "")) tile.render();
    }
  }

  /** Restore a saved wall: {layout, tiles}; unknown cameras are dropped. */
  restore(saved) {
    const layout = LAYOUTS.includes(saved.layout) ? saved.layout : 4;
    const slots = new Array(MAX_TILES).fill(null);
    (saved.tiles || []).slice(0, MAX_TILES).forEach((id, i) => {
      slots[i] = id && this.cameras.has(id) ? id : null;
    });
    this.slots = slots;
    this.layout = layout;
    this.render();
  }

  state() {
    return { layout: this.layout, tiles: this.slots.slice(0, this.layout) };
  }

  changed() {
    this.onChange(this.state());
  }

  setLayout(n) {
    if (!LAYOUTS.includes(n) || n === this.layout) return;
    this.layout = n;
    if (this.selected >= n) this.selected = -1;
    this.render();
    this.changed();
  }

  /** Fill the wall with a hall's cameras, growing the layout when they do not fit. */
  fillHall(hallId) {
    const hall = this.halls.get(hallId);
    if (!hall) return;
    const ids = hall.cameras.filter((id) => this.cameras.has(id)).slice(0, MAX_TILES);
    if (ids.length > this.layout) this.layout = LAYOUTS.find((n) => n >= ids.length) || MAX_TILES;
    this.slots = new Array(MAX_TILES).fill(null);
    ids.forEach((id, i) => {
      this.slots[i] = id;
    });
    this.selected = -1;
    this.cursor = 0;
    this.render();
    this.changed();
  }

  /** Place a camera in the selected tile, else the first free one, else the next in turn. */
  place(cameraId) {
    let index = this.selected >= 0 && this.selected < this.layout ? this.selected : -1;
    if (index < 0) index = this.slots.slice(0, this.layout).indexOf(null);
    if (index < 0) {
      index = this.cursor % this.layout;
      this.cursor = index + 1;
    }
    this.assign(index, cameraId);
    return index;
  }

  assign(index, cameraId) {
    if (index < 0 || index >= this.layout) return;
    this.slots[index] = cameraId || null;
    this.tiles[index].setCamera(this.slots[index]);
    this.changed();
  }

  swap(from, to) {
    if (from === to || from >= this.layout || to >= this.layout) return;
    [this.slots[from], this.slots[to]] = [this.slots[to], this.slots[from]];
    this.tiles[from].setCamera(this.slots[from]);
    this.tiles[to].setCamera(this.slots[to]);
    this.changed();
  }

  clear() {
    this.slots.fill(null);
    this.render();
    this.changed();
  }

  select(index) {
    this.selected = this.selected === index ? -1 : index;
    this.tiles.forEach((tile, i) => {
      tile.el.dataset.selected = String(i === this.selected);
    });
  }

  moveFocus(index, key) {
    const side = Math.sqrt(this.layout);
    const row = Math.floor(index / side);
    const col = index % side;
    const moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
    const [dr, dc] = moves[key];
    const r = Math.min(side - 1, Math.max(0, row + dr));
    const c = Math.min(side - 1, Math.max(0, col + dc));
    this.tiles[r * side + c].el.focus();
  }

  /** Build the tiles of the current layout; tiles that stay keep their players. */
  render() {
    this.section.dataset.layout = String(this.layout);
    while (this.tiles.length > this.layout) {
      const tile = this.tiles.pop();
      this.observer.unobserve(tile.el);
      tile.destroy();
    }
    while (this.tiles.length < this.layout) {
      const tile = new Tile(this, this.tiles.length);
      this.tiles.push(tile);
      this.section.append(tile.el);
      this.observer.observe(tile.el);
    }
    this.tiles.forEach((tile, i) => {
      tile.el.dataset.selected = String(i === this.selected);
      tile.setCamera(this.slots[i]);
      tile.reconcile(); // a single tile plays the main stream, a wall of them the sub-streams
    });
    for (const b of document.querySelectorAll("[data-layout-choice]")) {
      b.setAttribute("aria-pressed", String(Number(b.dataset.layoutChoice) === this.layout));
    }
  }

  /** Re-render texts after a language switch. */
  relabel() {
    for (const tile of this.tiles) tile.render();
  }

  /** Stop every stream (logout, expired session); resume() undoes it. */
  stopAll() {
    this.running = false;
    for (const tile of this.tiles) tile.reconcile();
  }

  resume() {
    this.running = true;
    for (const tile of this.tiles) tile.reconcile();
  }

  destroy() {
    this.stopAll();
    document.removeEventListener("visibilitychange", this.onVisibility);
    this.observer.disconnect();
    for (const tile of this.tiles) tile.destroy();
    this.tiles = [];
  }

  /** Coalesce the tiles' frequent changes into one onStats call per frame. */
  tileChanged() {
    if (this.statsPending) return;
    this.statsPending = true;
    requestAnimationFrame(() => {
      this.statsPending = false;
      this.onStats();
    });
  }

  counts() {
    const out = { webrtc: 0, mse: 0, mjpeg: 0 };
    for (const tile of this.tiles) {
      const mode = tile.el.dataset.mode;
      if (mode in out) out[mode] += 1;
    }
    return out;
  }

  tilesInfo() {
    return this.tiles.map((tile) => tile.info());
  }

  label() {
    return t("wall.playing", this.counts());
  }
}
