// One tile of the video wall: its element, its overlay (camera, hall, state, mode, fps,
// buttons) and its player. The tile decides whether its player runs: a camera is placed,
// the camera is online (or stalled), the tile is on screen and the tab is visible.

import { request } from "./api.js";
import { clock, t } from "./i18n.js";
import { Player } from "./player.js";

const PLAYABLE = new Set(["online", "stalled"]);

function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

const ICONS = {
  snapshot:
    '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 8h3l2-3h6l2 3h3v11H4z" fill="none" stroke="currentColor" stroke-width="1.8" stroke-linejoin="round"/><circle cx="12" cy="13" r="3.5" fill="none" stroke="currentColor" stroke-width="1.8"/></svg>',
  fullscreen:
    '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 9V4h5M15 4h5v5M20 15v5h-5M9 20H4v-5" fill="none" stroke="currentColor" stroke-width="1.8"/></svg>',
  clear:
    '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M6 6l12 12M18 6L6 18" fill="none" stroke="currentColor" stroke-width="1.8"/></svg>',
  camera:
    '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M3 7h12v10H3zM15 10l6-3v10l-6-3" fill="none" stroke="currentColor" stroke-width="1.5" stroke-linejoin="round"/></svg>',
};

function iconButton(action, labelKey) {
  const b = el("button", "tile-btn", { type: "button", "data-action": action, "data-i18n-label": labelKey });
  b.innerHTML = ICONS[action];
  b.setAttribute("aria-label", t(labelKey));
  b.title = t(labelKey);
  return b;
}

export class Tile {
  /**
   * @param {import("./wall.js").Wall} wall
   * @param {number} index
   */
  constructor(wall, index) {
    this.wall = wall;
    this.index = index;
    this.cameraId = null;
    this.player = null;
    this.onScreen = false;
    const root = el("div", "tile", { tabindex: "0", role: "group", "data-tile": String(index), draggable: "false" });
    root.dataset.camera = "";
    root.dataset.state = "";
    root.dataset.mode = "";
    root.dataset.fps = "0";
    root.dataset.view = "video";
    this.el = root;
    this.video = el("video", "tile-video", { muted: "", playsinline: "", autoplay: "" });
    this.video.muted = true;
    this.canvas = el("canvas", "tile-canvas", { "aria-hidden": "true" });
    const empty = el("div", "tile-empty");
    empty.innerHTML = ICONS.camera;
    this.emptyText = el("span", "tile-empty-text");
    empty.append(this.emptyText);
    const top = el("div", "tile-bar tile-top");
    this.title = el("div", "tile-title");
    this.titleCam = el("span", "tile-camera");
    this.titleHall = el("span", "tile-hall");
    this.title.append(this.titleCam, this.titleHall);
    const badges = el("div", "tile-badges");
    this.modeBadge = el("span", "tile-mode");
    this.fpsBadge = el("span", "tile-fps");
    badges.append(this.modeBadge, this.fpsBadge);
    top.append(this.title, badges);
    const bottom = el("div", "tile-bar tile-bottom");
    this.stateText = el("div", "tile-state");
    const actions = el("div", "tile-actions");
    if (wall.canSnapshot) actions.append(iconButton("snapshot", "tile.snapshot"));
    actions.append(iconButton("fullscreen", "tile.fullscreen"), iconButton("clear", "tile.clear"));
    bottom.append(this.stateText, actions);
    const number = el("span", "tile-number", { "aria-hidden": "true" });
    number.textContent = String(index + 1);
    root.append(this.video, this.canvas, empty, top, bottom, number);
    this.wire();
    this.render();
  }

  wire() {
    const root = this.el;
    root.addEventListener("click", (ev) => {
      const button = ev.target.closest("button[data-action]");
      if (button) {
        ev.stopPropagation();
        this.action(button.dataset.action);
        return;
      }
      this.wall.select(this.index);
    });
    root.addEventListener("dblclick", (ev) => {
      if (!ev.target.closest("button")) this.toggleFullscreen();
    });
    root.addEventListener("keydown", (ev) => {
      if (ev.target !== root) return;
      if (ev.key === "Enter") {
        ev.preventDefault();
        this.toggleFullscreen();
      } else if (ev.key === "Delete" || ev.key === "Backspace") {
        ev.preventDefault();
        this.wall.assign(this.index, null);
      } else if (ev.key === " ") {
        ev.preventDefault();
        this.wall.select(this.index);
      } else if (ev.key.startsWith("Arrow")) {
        ev.preventDefault();
        this.wall.moveFocus(this.index, ev.key);
      }
    });
    root.addEventListener("dragstart", (ev) => {
      if (!this.cameraId) return ev.preventDefault();
      ev.dataTransfer.setData("application/x-hallwatch-tile", String(this.index));
      ev.dataTransfer.effectAllowed = "move";
    });
    root.addEventListener("dragover", (ev) => {
      const types = ev.dataTransfer.types;
      if (types.includes("application/x-hallwatch-camera") || types.includes("application/x-hallwatch-tile")) {
        ev.preventDefault();
        root.classList.add("drop-target");
      }
    });
    root.addEventListener("dragleave", () => root.classList.remove("drop-target"));
    root.addEventListener("drop", (ev) => {
      root.classList.remove("drop-target");
      const cam = ev.dataTransfer.getData("application/x-hallwatch-camera");
      const from = ev.dataTransfer.getData("application/x-hallwatch-tile");
      ev.preventDefault();
      if (cam) this.wall.assign(this.index, cam);
      else if (from !== "") this.wall.swap(Number(from), this.index);
    });
  }

  action(name) {
    if (name === "fullscreen") this.toggleFullscreen();
    else if (name === "clear") this.wall.assign(this.index, null);
    else if (name === "snapshot") this.snapshot();
  }

  toggleFullscreen() {
    if (!this.cameraId) return;
    if (document.fullscreenElement === this.el) {
      document.exitFullscreen().catch(() => {});
    } else if (this.el.requestFullscreen) {
      this.el.requestFullscreen().catch(() => {});
    }
  }

  async snapshot() {
    const cam = this.camera();
    if (!cam) return;
    const button = this.el.querySelector('[data-action="snapshot"]');
    button.disabled = true;
    try {
      const res = await request(cam.links.snapshot, { raw: true });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const url = URL.createObjectURL(await res.blob());
      const stamp = new Date().toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
      const a = document.createElement("a");
      a.href = url;
      a.download = `${cam.id}-${stamp}.jpg`;
      a.hidden = true;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 30000);
    } catch (err) {
      this.wall.toast(`${t("tile.snapshotFailed")}: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  }

  camera() {
    return this.cameraId ? this.wall.cameras.get(this.cameraId) : null;
  }

  /** Place a camera (or null) in this tile. */
  setCamera(id) {
    if (id === this.cameraId) return;
    if (this.player) {
      this.player.stop();
      this.player = null;
    }
    if (document.fullscreenElement === this.el && !id) document.exitFullscreen().catch(() => {});
    this.cameraId = id;
    this.el.dataset.camera = id || "";
    this.el.draggable = Boolean(id);
    const ctx = this.canvas.getContext("2d");
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.canvas.width = 0;
    this.el.dataset.view = "video";
    this.reconcile();
  }

  /** Start or stop the player to match the camera's state and the tile's visibility. */
  reconcile() {
    const cam = this.camera();
    const want =
      Boolean(cam) && this.wall.running && this.onScreen && !document.hidden && PLAYABLE.has(cam.live.state);
    if (want) {
      if (!this.player) this.player = new Player(cam, { video: this.video, canvas: this.canvas, host: this.el }, () => this.render());
      this.player.camera = cam;
      this.player.start();
    } else if (this.player) {
      this.player.stop();
    }
    this.render();
  }

  /** Refresh the element's data attributes and overlay texts. */
  render() {
    const root = this.el;
    const cam = this.camera();
    const info = this.player ? this.player.info() : { mode: "", status: "idle", fps: 0 };
    const state = cam ? cam.live.state : "";
    const hall = cam ? this.wall.halls.get(cam.hall) : null;
    root.dataset.state = state;
    root.dataset.mode = info.status === "playing" ? info.mode : "";
    root.dataset.fps = String(info.status === "playing" ? info.fps : 0);
    root.dataset.status = cam ? info.status : "";
    root.classList.toggle("free", !cam);
    this.emptyText.textContent = t("wall.empty");
    this.titleCam.textContent = cam ? cam.name : "";
    this.titleHall.textContent = hall ? hall.name : "";
    this.modeBadge.textContent = root.dataset.mode === "mjpeg" ? "MJPEG" : root.dataset.mode === "webrtc" ? "WebRTC" : "";
    this.fpsBadge.textContent = root.dataset.mode ? `${root.dataset.fps} fps` : "";
    const stateLabel = state ? t(`state.${state}`) : "";
    let text = stateLabel;
    if (cam && (state === "offline" || state === "disabled")) {
      text = state === "offline" ? t("tile.offlineSince", { time: clock(cam.live.since) }) : stateLabel;
    } else if (cam && PLAYABLE.has(state)) {
      if (!this.onScreen || document.hidden) text = t("tile.paused");
      else if (info.status === "connecting") text = t("tile.connecting");
      else if (info.status === "waiting") text = t("tile.reconnect", { s: info.retryIn });
      else if (info.status === "denied") text = t("tile.denied");
    }
    this.stateText.textContent = text;
    root.setAttribute(
      "aria-label",
      cam
        ? t("tile.label", { n: this.index + 1, camera: cam.name, hall: hall ? hall.name : cam.hall, state: text })
        : t("tile.labelEmpty", { n: this.index + 1 }),
    );
    for (const b of root.querySelectorAll("button[data-i18n-label]")) {
      b.setAttribute("aria-label", t(b.dataset.i18nLabel));
      b.title = t(b.dataset.i18nLabel);
    }
    this.wall.tileChanged();
  }

  /** Diagnostics for window.hallwatch.tiles(). */
  info() {
    const p = this.player ? this.player.info() : null;
    const cam = this.camera();
    return {
      index: this.index,
      camera: this.cameraId,
      mode: this.el.dataset.mode,
      state: cam ? cam.live.state : "",
      status: p ? p.status : "idle",
      framesDecoded: p ? p.framesDecoded : 0,
      width: p ? p.width : 0,
      height: p ? p.height : 0,
      fps: p ? p.fps : 0,
    };
  }

  /** Stop for good (the tile leaves the wall). */
  destroy() {
    if (this.player) this.player.stop();
    this.player = null;
    this.el.remove();
  }
}
