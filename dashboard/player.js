// One live player of a tile: it plays one camera's stream ("main" or "sub") on one surface
// of the tile (a <video> and a <canvas>), trying WebRTC, then MSE, then MJPEG, each with a
// short deadline of its own, unless the operator forced one mode. It reconnects by itself
// with backoff, and every (re)connect starts again from the best mode, so a tile that fell
// back does not stay degraded. The tile owns it: start() when it should play, stop() when it
// should not; stop() keeps the last picture on the canvas so an offline tile can show it.
//
// States: idle → connecting(mode) → playing(mode) → (dropped) waiting → connecting(best) …
// A mode that fails before its first picture hands over to the next one at once; after the
// last, or after a drop, the player waits 1, 2, 4, 8, 15 s. "denied" (4403/4404, WHEP 403/404)
// waits 15 s, an expired session (401, 4401) tells the app; "unsupported" means the forced
// mode cannot play in this browser.

import { sessionExpired } from "./api.js";
import { MjpegStream } from "./mjpeg.js";
import { MseStream } from "./mse.js";
import { mseSupported } from "./sourcebuffer.js";
import { WebRtcStream, webrtcSupported } from "./webrtc.js";

export const MODES = ["webrtc", "mse", "mjpeg"];
const STREAMS = { webrtc: WebRtcStream, mse: MseStream, mjpeg: MjpegStream };
const ATTEMPT_MS = { webrtc: 9000, mse: 4000, mjpeg: 8000 };
const FROZEN_MS = 10000;
const BACKOFF_S = [1, 2, 4, 8, 15];

/** The modes this browser can play for camera, best first. */
export function playableModes(camera) {
  const links = camera.links || {};
  const modes = [];
  if (webrtcSupported() && links.whep) modes.push("webrtc");
  if (mseSupported() && links.mse) modes.push("mse");
  modes.push("mjpeg");
  return modes;
}

export class Player {
  /**
   * @param {object} camera the camera from GET /api/v1/cameras (id, links)
   * @param {{root: HTMLElement, video: HTMLVideoElement, canvas: HTMLCanvasElement}} surface
   * @param {{stream?: string, forced?: string, onChange: (player: Player) => void}} options
   *   stream "main" | "sub"; forced "auto" | "webrtc" | "mse" | "mjpeg"
   */
  constructor(camera, surface, { stream = "main", forced = "auto", onChange }) {
    this.camera = camera;
    this.surface = surface;
    this.video = surface.video;
    this.canvas = surface.canvas;
    this.stream = stream;
    this.forced = forced;
    this.onChange = onChange;
    this.gen = 0;
    this.active = false;
    this.mode = "";
    this.status = "idle"; // idle | connecting | playing | waiting | denied | unsupported
    this.order = [];
    this.current = null;
    this.retryIn = 0;
    this.attempt = 0;
    this.framesDecoded = 0;
    this.width = 0;
    this.height = 0;
    this.fps = 0;
    this.lag = null;
    this.timers = new Set();
    this.statsTimer = null;
    this.lastFrames = 0;
    this.lastTick = 0;
    this.lastProgress = 0;
  }

  /** Start playing (idempotent). */
  start() {
    if (this.active) return;
    this.active = true;
    this.attempt = 0;
    this.connect();
  }

  /** Stop playing and free the server's session (idempotent); the last picture stays. */
  stop() {
    if (!this.active) return;
    this.active = false;
    this.gen += 1;
    this.freeze();
    this.release();
    for (const id of this.timers) clearTimeout(id);
    this.timers.clear();
    this.setStatus("idle", "");
  }

  /** Diagnostics for the tile and window.hallwatch.tiles(). */
  info() {
    return {
      mode: this.mode,
      status: this.status,
      stream: this.stream,
      forced: this.forced,
      retryIn: this.retryIn,
      framesDecoded: this.framesDecoded,
      width: this.width,
      height: this.height,
      fps: this.fps,
      lag: this.lag,
      audio: Boolean(this.current && this.current.hasAudio), // the stream carries sound (muted or not)
    };
  }

  // ---- the state machine -------------------------------------------------------------------

  later(fn, ms) {
    const id = setTimeout(() => {
      this.timers.delete(id);
      fn();
    }, ms);
    this.timers.add(id);
    return id;
  }

  setStatus(status, mode = this.mode) {
    this.status = status;
    this.mode = mode;
    this.onChange(this);
  }

  /** A fresh start from the best mode this browser has (or only the forced one). */
  connect() {
    const modes = playableModes(this.camera);
    this.order = this.forced === "auto" ? modes : modes.filter((m) => m === this.forced);
    if (!this.order.length) {
      this.gen += 1;
      this.setStatus("unsupported", "");
      return;
    }
    this.tryMode(0);
  }

  tryMode(index) {
    const gen = ++this.gen;
    const mode = this.order[index];
    this.framesDecoded = 0;
    this.fps = 0;
    this.lag = null;
    this.lastFrames = 0;
    this.setStatus("connecting", mode);
    const ctx = {
      camera: this.camera,
      stream: this.stream,
      video: this.video,
      canvas: this.canvas,
      playing: () => {
        if (gen === this.gen) this.playing(mode);
      },
      ended: (action, reason) => {
        if (gen === this.gen) this.ended(index, action, reason);
      },
    };
    this.current = new STREAMS[mode](ctx);
    // A safety net: each mode has deadlines of its own, this catches an attempt that hangs.
    this.later(() => {
      if (gen === this.gen && this.status === "connecting") {
        this.ended(index, "fallback", `no picture within ${ATTEMPT_MS[mode] / 1000} s`);
      }
    }, ATTEMPT_MS[mode]);
    this.current.start();
  }

  /** The current attempt ended: fall back to the next mode, or wait and start over. */
  ended(index, action, reason) {
    if (!this.active) return;
    const mode = this.order[index];
    const wasPlaying = this.status === "playing";
    console.info(`camera ${this.camera.id} (${this.stream}): ${mode} ${wasPlaying ? "dropped" : action}: ${reason}`);
    this.freeze();
    this.release();
    if (action === "expired") {
      sessionExpired();
      this.retry(BACKOFF_S[BACKOFF_S.length - 1]);
    } else if (action === "denied") {
      this.retry(BACKOFF_S[BACKOFF_S.length - 1], "denied");
    } else if (!wasPlaying && index + 1 < this.order.length) {
      this.tryMode(index + 1); // whatever went wrong before the first picture, the next mode may work
    } else {
      this.retry();
    }
  }

  /** Come back after the backoff (1, 2, 4, 8, 15 s), from the best mode again. */
  retry(seconds, status = "waiting") {
    if (!this.active) return;
    const delay = seconds ?? BACKOFF_S[Math.min(this.attempt, BACKOFF_S.length - 1)];
    this.attempt += 1;
    this.gen += 1;
    this.retryIn = delay;
    this.setStatus(status, "");
    this.later(() => {
      this.retryIn = 0;
      if (this.active) this.connect();
    }, delay * 1000);
  }

  playing(mode) {
    this.attempt = 0;
    this.lastProgress = performance.now();
    this.lastTick = performance.now();
    this.surface.root.dataset.view = this.current.view;
    this.setStatus("playing", mode);
    if (!this.statsTimer) this.statsTimer = setInterval(() => this.tick(), 1000);
    this.tick();
  }

  /** Once a second: frames per second, picture size, live lag and the frozen-stream watchdog. */
  async tick() {
    const gen = this.gen;
    const stream = this.current;
    if (!stream) return;
    const s = await stream.sample();
    if (gen !== this.gen) return;
    const now = performance.now();
    if (s.frames > this.framesDecoded) this.lastProgress = now;
    const dt = (now - this.lastTick) / 1000;
    if (dt > 0.5) {
      this.fps = Math.max(0, Math.round((s.frames - this.lastFrames) / dt));
      this.lastFrames = s.frames;
      this.lastTick = now;
    }
    this.framesDecoded = s.frames;
    this.width = s.width;
    this.height = s.height;
    this.lag = s.lag ?? null;
    this.onChange(this);
    if (this.status === "playing" && now - this.lastProgress > FROZEN_MS) stream.end("retry", "no new frames");
  }

  /** Keep the current video picture on the canvas; MJPEG already draws there. */
  freeze() {
    const v = this.video;
    if (!this.current || this.current.view !== "video" || !v.videoWidth || v.readyState < 2) return;
    this.canvas.width = v.videoWidth;
    this.canvas.height = v.videoHeight;
    try {
      this.canvas.getContext("2d").drawImage(v, 0, 0);
      this.surface.root.dataset.view = "canvas";
    } catch {
      // A picture that cannot be drawn leaves the canvas as it was.
    }
  }

  /** Free the current attempt (its server session included) and the stats timer. */
  release() {
    clearInterval(this.statsTimer);
    this.statsTimer = null;
    this.fps = 0;
    const stream = this.current;
    this.current = null;
    if (stream) stream.stop();
  }
}
