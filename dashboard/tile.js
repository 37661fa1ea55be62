// One tile of the video wall: its element, its overlay (camera, hall and its plate, state, mode, fps,
// buttons, the forced-mode choice) and its player. The tile decides whether its player runs
// (a camera is placed, the camera is online, stalled, idle (pulled on demand: playing it
// connects it) or unowned (another instance is taking it over: the picture comes back without
// restarting the player), the tile is on screen and the tab is visible) and what it plays: the camera's
// sub-stream on the wall when it has one, the main stream in full screen or alone on the wall;
// Auto or the mode an operator forced.
//
// Two surfaces (a <video> and a <canvas> each) sit on top of each other. A change of stream
// or mode starts the new player on the surface behind, and the surfaces swap only once it
// shows a picture; then the old player stops: no black gap. The wall is silent; a tile whose
// stream has audio offers a sound toggle (sound.js). A camera whose picture has a fault the
// diagnosis raised carries a badge; its diagnosis button opens the camera's health.

import { request } from "./api.js";
import { kindList } from "./diagnosis.js";
import { clock, t } from "./i18n.js";
import { MODE_BADGES, forcedMode, labelModeSelect, modeSelect, rememberMode } from "./modes.js";
import { Player } from "./player.js";
import { applySound, soundButton } from "./sound.js";
import { clearSurface, makeSurface, showSurface } from "./surface.js";

const PLAYABLE = new Set(["online", "stalled", "idle", "unowned"]);
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
  health:
    '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M3 12h4l2-5 4 10 2-5h6" fill="none" stroke="currentColor" stroke-width="1.8" stroke-linejoin="round"/></svg>',
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
    this.pending = null;
    this.swaps = 0;
    this.onScreen = false;
    this.sound = false;
    const root = el("div", "tile", { tabindex: "0", role: "group", "data-tile": String(index), draggable: "false" });
    root.dataset.camera = "";
    root.dataset.state = "";
    root.dataset.mode = "";
    root.dataset.fps = "0";
    root.dataset.stream = "";
    root.dataset.forced = "auto";
    this.el = root;
    this.surfaces = [makeSurface(0), makeSurface(1)];
    this.front = 0;
    const empty = el("div", "tile-empty");
    empty.innerHTML = ICONS.camera;
    this.emptyText = el("span", "tile-empty-text");
    empty.append(this.emptyText);
    const top = el("div", "tile-bar tile-top");
    this.title = el("div", "tile-title");
    this.titleCam = el("span", "tile-camera");
    this.titleHall = el("span", "tile-hall");
    this.titlePlate = el("span", "tile-plate");
    this.title.append(this.titleCam, this.titleHall, this.titlePlate);
    const badges = el("div", "tile-badges");
    this.modeBadge = el("span", "tile-mode");
    this.fpsBadge = el("span", "tile-fps");
    this.pictureBadge = el("span", "tile-picture");
    badges.append(this.pictureBadge, this.modeBadge, this.fpsBadge);
    top.append(this.title, badges);
    const bottom = el("div", "tile-bar tile-bottom");
    this.stateText = el("div", "tile-state");
    const actions = el("div", "tile-actions");
    if (wall.canChooseMode) {
      this.modeChoice = modeSelect();
      actions.append(this.modeChoice);
    }
    if (wall.canSnapshot) actions.append(iconButton("snapshot", "tile.snapshot"));
    actions.append(iconButton("health", "tile.health"));
    this.soundButton = soundButton();
    actions.append(this.soundButton);
    actions.append(iconButton("fullscreen", "tile.fullscreen"), iconButton("clear", "tile.clear"));
    bottom.append(this.stateText, actions);
    const number = el("span", "tile-number", { "aria-hidden": "true" });
    number.textContent = String(index + 1);
    root.append(this.surfaces[0].root, this.surfaces[1].root, empty, top, bottom, number);
    this.wire();
    this.render();
  }

  wire() {
    const root = this.el;
    root.addEventListener("click", (ev) => {
      if (ev.target.closest("select")) return;
      const button = ev.target.closest("button[data-action]");
      if (button) {
        ev.stopPropagation();
        this.action(button.dataset.action);
        return;
      }
      this.wall.select(this.index);
    });
    root.addEventListener("dblclick", (ev) => {
      if (!ev.target.closest("button, select")) this.toggleFullscreen();
    });
    // Full screen plays the main stream, the wall the sub-stream.
    root.addEventListener("fullscreenchange", () => this.reconcile());
    if (this.modeChoice) {
      this.modeChoice.addEventListener("change", () => {
        if (!this.cameraId) return;
        rememberMode(this.cameraId, this.modeChoice.value);
        this.reconcile();
      });
    }
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
    else if (name === "health" && this.camera()) this.wall.onHealth(this.camera());
    else if (name === "sound") {
      this.sound = !this.sound;
      this.render();
    }
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
    this.dropPending();
    if (this.player) {
      this.player.stop();
      this.player = null;
    }
    if (document.fullscreenElement === this.el && !id) document.exitFullscreen().catch(() => {});
    this.cameraId = id;
    this.sound = false; // another camera starts silent
    this.el.dataset.camera = id || "";
    this.el.draggable = Boolean(id);
    for (const surface of this.surfaces) clearSurface(surface);
    this.reconcile();
  }

  /** The stream this tile should play: the sub-stream on the wall when the camera has one. */
  wantedStream(cam) {
    const big = document.fullscreenElement === this.el || this.wall.layout === 1;
    return !big && Array.isArray(cam.streams) && cam.streams.includes("sub") ? "sub" : "main";
  }

  /** The mode this tile should use: Auto, unless an operator forced one for the camera. */
  wantedMode() {
    return this.wall.canChooseMode && this.cameraId ? forcedMode(this.cameraId) : "auto";
  }

  /** Start, stop or replace the player to match the camera, the tile's visibility and choices. */
  reconcile() {
    const cam = this.camera();
    const want =
      Boolean(cam) && this.wall.running && this.onScreen && !document.hidden && PLAYABLE.has(cam.live.state);
    if (!want) {
      this.dropPending();
      if (this.player) this.player.stop();
      this.render();
      return;
    }
    const stream = this.wantedStream(cam);
    const forced = this.wantedMode();
    const fits = (p) => p && p.stream === stream && p.forced === forced;
    if (fits(this.player)) {
      this.dropPending();
    } else if (this.player && this.player.status === "playing") {
      // Keep the picture on screen; the new player starts behind it and takes over.
      if (!fits(this.pending)) {
        this.dropPending();
        this.pending = this.newPlayer(cam, 1 - this.front, stream, forced);
      }
    } else {
      if (this.player) this.player.stop();
      this.player = this.newPlayer(cam, this.front, stream, forced);
    }
    for (const p of [this.player, this.pending]) {
      if (p) {
        p.camera = cam;
        p.start();
      }
    }
    this.render();
  }

  newPlayer(cam, surfaceIndex, stream, forced) {
    const player = new Player(cam, this.surfaces[surfaceIndex], {
      stream,
      forced,
      onChange: (p) => this.playerChanged(p),
    });
    player.surfaceIndex = surfaceIndex;
    return player;
  }

  playerChanged(player) {
    if (player === this.pending && player.status === "playing") this.swap();
    else if (player === this.player || player === this.pending) this.render();
  }

  /** The pending player shows a picture: bring its surface to the front, stop the old one. */
  swap() {
    const old = this.player;
    this.player = this.pending;
    this.pending = null;
    this.front = this.player.surfaceIndex;
    showSurface(this.surfaces, this.front);
    this.swaps += 1;
    if (old) {
      old.stop();
      clearSurface(old.surface);
    }
    this.render();
  }

  dropPending() {
    if (!this.pending) return;
    const p = this.pending;
    this.pending = null;
    p.stop();
    clearSurface(p.surface);
  }

  /** Refresh the element's data attributes and overlay texts. */
  render() {
    const root = this.el;
    const cam = this.camera();
    const info = this.player ? this.player.info() : { mode: "", status: "idle", fps: 0, stream: "" };
    const state = cam ? cam.live.state : "";
    const hall = cam ? this.wall.halls.get(cam.hall) : null;
    root.dataset.state = state;
    root.dataset.mode = info.status === "playing" ? info.mode : "";
    root.dataset.fps = String(info.status === "playing" ? info.fps : 0);
    root.dataset.status = cam ? info.status : "";
    root.dataset.stream = info.status === "playing" ? info.stream : "";
    root.dataset.audio = String(info.status === "playing" && Boolean(info.audio));
    applySound(this.soundButton, this.surfaces, this.front, root.dataset.audio === "true", this.sound);
    root.dataset.forced = this.wantedMode();
    if (this.modeChoice) labelModeSelect(this.modeChoice, root.dataset.forced);
    root.classList.toggle("free", !cam);
    this.emptyText.textContent = t("wall.empty");
    this.titleCam.textContent = cam ? cam.name : "";
    this.titleHall.textContent = hall ? hall.name : "";
    this.titlePlate.textContent = hall && hall.plate ? hall.plate : "";
    this.title.title = hall ? [cam.name, hall.name, hall.plate].filter(Boolean).join("\n") : "";
    this.modeBadge.textContent = MODE_BADGES[root.dataset.mode] || "";
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
      else if (info.status === "unsupported") text = t("tile.unsupported");
    }
    this.stateText.textContent = text;
    const faults = (cam && this.wall.pictureFaults.get(cam.id)) || [];
    root.dataset.picture = faults.join(" ");
    this.pictureBadge.textContent = faults.length ? t("tile.pictureFault") : "";
    this.pictureBadge.title = faults.length ? kindList(faults) : "";
    if (faults.length) text = `${text} · ${t("tile.pictureFaults", { kinds: kindList(faults) })}`;
    root.setAttribute(
      "aria-label",
      cam
        ? t(hall && hall.plate ? "tile.labelPlate" : "tile.label", {
            n: this.index + 1,
            camera: cam.name,
            hall: hall ? hall.name : cam.hall,
            plate: hall ? hall.plate : "",
            state: text,
          })
        : t("tile.labelEmpty", { n: this.index + 1 }),
    );
    for (const b of root.querySelectorAll("button[data-i18n-label], select[data-i18n-label]")) {
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
      stream: p ? p.stream : "",
      forced: this.wantedMode(),
      lag: p ? p.lag : null,
      pending: this.pending ? { stream: this.pending.stream, forced: this.pending.forced, status: this.pending.status } : null,
      swaps: this.swaps,
      audio: this.el.dataset.audio === "true",
      sound: this.el.dataset.audio === "true" && this.sound,
    };
  }

  /** Stop for good (the tile leaves the wall). */
  destroy() {
    this.dropPending();
    if (this.player) this.player.stop();
    this.player = null;
    this.el.remove();
  }
}
