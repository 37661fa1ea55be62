// One live player per wall tile: WebRTC over WHEP first, MJPEG over a WebSocket as the
// fallback, reconnecting by itself with backoff. The tile owns it: start() when the tile
// should play, stop() when it should not (hidden, offline, cleared); stop() keeps the last
// picture on the canvas so an offline tile can show it greyed.

import { csrfHeaders, request, sessionExpired } from "./api.js";

const ICE_GATHER_MS = 2000;
const FIRST_FRAME_MS = 4000;
const DISCONNECTED_GRACE_MS = 3000;
const FROZEN_MS = 10000;
const WHEP_TIMEOUT_MS = 8000;
const BACKOFF_S = [1, 2, 4, 8, 15];

function waitForIce(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ICE_GATHER_MS);
    function done() {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    }
    function check() {
      if (pc.iceGatheringState === "complete") done();
    }
    pc.addEventListener("icegatheringstatechange", check);
  });
}

async function inboundVideo(pc) {
  const report = await pc.getStats();
  for (const s of report.values()) {
    if (s.type === "inbound-rtp" && (s.kind === "video" || s.mediaType === "video")) return s;
  }
  return null;
}

/** Why a WebRTC attempt ended: fall back to MJPEG, retry later, or give up quietly. */
class Outcome extends Error {
  constructor(action, reason) {
    super(reason);
    this.action = action; // "fallback" | "retry" | "denied" | "expired"
  }
}

export class Player {
  /**
   * @param {object} camera the camera from GET /api/v1/cameras (id, links.whep)
   * @param {{video: HTMLVideoElement, canvas: HTMLCanvasElement, host: HTMLElement}} view
   * @param {(player: Player) => void} onChange called when mode, status or stats change
   */
  constructor(camera, view, onChange) {
    this.camera = camera;
    this.video = view.video;
    this.canvas = view.canvas;
    this.host = view.host;
    this.onChange = onChange;
    this.gen = 0;
    this.active = false;
    this.mode = "";
    this.status = "idle"; // idle | connecting | playing | waiting | denied
    this.retryIn = 0;
    this.attempt = 0;
    this.forceMjpeg = typeof RTCPeerConnection !== "function";
    this.wsFailures = 0;
    this.framesDecoded = 0;
    this.width = 0;
    this.height = 0;
    this.fps = 0;
    this.pc = null;
    this.location = null;
    this.ws = null;
    this.timers = new Set();
    this.statsTimer = null;
    this.lastFrames = 0;
    this.lastTick = 0;
    this.lastProgress = 0;
    this.decoding = false;
    this.pendingBlob = null;
    this.imgUrl = null;
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
    this.teardown();
    this.setStatus("idle", "");
  }

  /** Diagnostics for the tile and window.hallwatch.tiles(). */
  info() {
    return {
      mode: this.mode,
      status: this.status,
      retryIn: this.retryIn,
      framesDecoded: this.framesDecoded,
      width: this.width,
      height: this.height,
      fps: this.fps,
    };
  }

  // ---- internals ---------------------------------------------------------------------------

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

  connect() {
    const gen = ++this.gen;
    this.framesDecoded = 0;
    this.fps = 0;
    this.lastFrames = 0;
    this.lastTick = performance.now();
    this.lastProgress = performance.now();
    this.setStatus("connecting", "");
    if (this.forceMjpeg) {
      this.playMjpeg(gen);
      return;
    }
    this.playWebRTC(gen).catch((err) => {
      if (gen !== this.gen) return;
      this.teardown();
      const action = err instanceof Outcome ? err.action : "retry";
      console.info(`camera ${this.camera.id}: WebRTC ${action}: ${err.message}`);
      if (action === "expired") {
        sessionExpired();
      } else if (action === "fallback") {
        this.forceMjpeg = true;
        this.connect();
      } else if (action === "denied") {
        this.retry(BACKOFF_S[BACKOFF_S.length - 1], "denied");
      } else {
        this.retry();
      }
    });
  }

  /** Schedule the next attempt with exponential backoff (1, 2, 4, 8, 15 s). */
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

  /** A live stream broke: free it and come back after the backoff. */
  dropped(reason) {
    if (!this.active) return;
    console.info(`camera ${this.camera.id}: ${this.mode || "stream"} dropped (${reason}); reconnecting`);
    this.freeze();
    this.teardown();
    this.retry();
  }

  playing(mode) {
    this.attempt = 0;
    this.lastProgress = performance.now();
    this.host.dataset.view = mode === "webrtc" ? "video" : "canvas";
    this.setStatus("playing", mode);
    if (!this.statsTimer) this.statsTimer = setInterval(() => this.tick(), 1000);
  }

  async playWebRTC(gen) {
    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addEventListener("track", (ev) => {
      this.video.srcObject = ev.streams[0] || new MediaStream([ev.track]);
      this.video.play().catch(() => {});
    });
    let graceTimer = null;
    pc.addEventListener("connectionstatechange", () => {
      if (gen !== this.gen) return;
      const state = pc.connectionState;
      if (state === "failed" || state === "closed") {
        this.dropped(`connection ${state}`);
      } else if (state === "disconnected") {
        if (!graceTimer) graceTimer = this.later(() => this.dropped("disconnected"), DISCONNECTED_GRACE_MS);
      } else if (graceTimer) {
        clearTimeout(graceTimer);
        this.timers.delete(graceTimer);
        graceTimer = null;
      }
    });
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIce(pc);
    if (gen !== this.gen) return;

    const ctrl = new AbortController();
    const abort = this.later(() => ctrl.abort(), WHEP_TIMEOUT_MS);
    let res;
    try {
      res = await fetch(this.camera.links.whep, {
        method: "POST",
        headers: csrfHeaders({ "Content-Type": "application/sdp" }),
        body: pc.localDescription.sdp,
        cache: "no-store",
        signal: ctrl.signal,
      });
    } catch (err) {
      throw new Outcome("retry", `WHEP request failed: ${err.message}`);
    } finally {
      clearTimeout(abort);
      this.timers.delete(abort);
    }
    const body = await res.text();
    if (res.status === 401) throw new Outcome("expired", "session expired");
    if (res.status === 403 || res.status === 404) throw new Outcome("denied", `WHEP ${res.status}`);
    if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
      throw new Outcome("fallback", `WHEP ${res.status}: ${body.slice(0, 200)}`);
    }
    if (res.status !== 201 && res.status !== 200) throw new Outcome("retry", `WHEP ${res.status}`);
    const loc = res.headers.get("Location");
    if (loc) this.location = new URL(loc, location.href).href;
    if (gen !== this.gen) {
      this.teardown();
      return;
    }
    await pc.setRemoteDescription({ type: "answer", sdp: body });
    if (!(await this.firstVideoFrame(pc, gen))) {
      if (gen !== this.gen) return;
      throw new Outcome("fallback", `no video frame within ${FIRST_FRAME_MS / 1000} s`);
    }
    if (gen !== this.gen) return;
    // The relay ending the session closes DTLS at once, long before ICE would notice.
    const dtls = pc.getReceivers()[0]?.transport;
    if (dtls) {
      dtls.addEventListener("statechange", () => {
        if (gen !== this.gen || (dtls.state !== "closed" && dtls.state !== "failed")) return;
        if (dtls.state === "closed") this.location = null; // the relay ended it: nothing to DELETE
        this.dropped(`DTLS ${dtls.state}`);
      });
    }
    this.playing("webrtc");
  }

  async firstVideoFrame(pc, gen) {
    const deadline = performance.now() + FIRST_FRAME_MS;
    while (performance.now() < deadline) {
      if (gen !== this.gen) return false;
      const s = await inboundVideo(pc).catch(() => null);
      if (s && s.framesDecoded > 0) {
        this.framesDecoded = s.framesDecoded;
        this.lastFrames = s.framesDecoded;
        this.lastTick = performance.now();
        return true;
      }
      await new Promise((r) => setTimeout(r, 150));
    }
    return false;
  }

  playMjpeg(gen) {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const url = `${scheme}${location.host}/api/v1/cameras/${encodeURIComponent(this.camera.id)}/mjpeg.ws`;
    const ws = new WebSocket(url);
    ws.binaryType = "blob";
    this.ws = ws;
    let opened = false;
    let gotFrame = false;
    this.later(() => {
      if (gen === this.gen && !gotFrame) {
        ws.close();
      }
    }, FIRST_FRAME_MS * 2);
    ws.addEventListener("open", () => {
      opened = true;
    });
    ws.addEventListener("message", (ev) => {
      if (gen !== this.gen || typeof ev.data === "string") return;
      if (!gotFrame) {
        gotFrame = true;
        this.wsFailures = 0;
        this.playing("mjpeg");
      }
      this.showJpeg(ev.data, gen);
    });
    ws.addEventListener("close", () => {
      if (gen !== this.gen) return;
      this.ws = null;
      if (!opened) {
        // The handshake was refused: find out whether the session is gone (the API call
        // reports a 401 itself); after repeated refusals give WebRTC another chance.
        request("/auth/me", { quiet401: false }).catch(() => {});
        this.wsFailures += 1;
        if (this.wsFailures >= 3 && typeof RTCPeerConnection === "function") {
          this.wsFailures = 0;
          this.forceMjpeg = false;
        }
      }
      this.dropped(opened ? "WebSocket closed" : "WebSocket refused");
    });
  }

  /** Draw one JPEG; while one decodes, only the newest waiting frame is kept. */
  showJpeg(blob, gen) {
    if (this.decoding) {
      this.pendingBlob = blob;
      return;
    }
    this.decoding = true;
    const done = () => {
      this.decoding = false;
      const next = this.pendingBlob;
      this.pendingBlob = null;
      if (next && gen === this.gen) this.showJpeg(next, gen);
    };
    if (typeof createImageBitmap === "function") {
      createImageBitmap(blob)
        .then((bitmap) => {
          if (gen === this.gen) {
            if (this.canvas.width !== bitmap.width || this.canvas.height !== bitmap.height) {
              this.canvas.width = bitmap.width;
              this.canvas.height = bitmap.height;
            }
            this.canvas.getContext("2d").drawImage(bitmap, 0, 0);
            this.countFrame(bitmap.width, bitmap.height);
          }
          bitmap.close();
        })
        .catch(() => {})
        .finally(done);
      return;
    }
    const img = new Image();
    const url = URL.createObjectURL(blob);
    img.onload = img.onerror = () => {
      if (gen === this.gen && img.naturalWidth) {
        this.canvas.width = img.naturalWidth;
        this.canvas.height = img.naturalHeight;
        this.canvas.getContext("2d").drawImage(img, 0, 0);
        this.countFrame(img.naturalWidth, img.naturalHeight);
      }
      URL.revokeObjectURL(url);
      done();
    };
    img.src = url;
  }

  countFrame(width, height) {
    this.framesDecoded += 1;
    this.width = width;
    this.height = height;
    this.lastProgress = performance.now();
  }

  /** Once a second: frames per second, picture size, and the frozen-stream watchdog. */
  async tick() {
    const gen = this.gen;
    const now = performance.now();
    if (this.mode === "webrtc" && this.pc) {
      const s = await inboundVideo(this.pc).catch(() => null);
      if (gen !== this.gen || !s) return;
      if ((s.framesDecoded || 0) > this.framesDecoded) this.lastProgress = now;
      this.framesDecoded = s.framesDecoded || 0;
      this.width = s.frameWidth || this.video.videoWidth || 0;
      this.height = s.frameHeight || this.video.videoHeight || 0;
    }
    const dt = (now - this.lastTick) / 1000;
    if (dt > 0) this.fps = Math.max(0, Math.round((this.framesDecoded - this.lastFrames) / dt));
    this.lastFrames = this.framesDecoded;
    this.lastTick = now;
    this.onChange(this);
    if (this.status === "playing" && now - this.lastProgress > FROZEN_MS) this.dropped("no new frames");
  }

  /** Keep the current video picture on the canvas (WebRTC); MJPEG already draws there. */
  freeze() {
    const v = this.video;
    if (this.mode === "webrtc" && v.videoWidth && v.readyState >= 2) {
      this.canvas.width = v.videoWidth;
      this.canvas.height = v.videoHeight;
      try {
        this.canvas.getContext("2d").drawImage(v, 0, 0);
        this.host.dataset.view = "canvas";
      } catch {
        // A picture that cannot be drawn leaves the canvas as it was.
      }
    }
  }

  teardown() {
    for (const id of this.timers) clearTimeout(id);
    this.timers.clear();
    clearInterval(this.statsTimer);
    this.statsTimer = null;
    this.fps = 0;
    const pc = this.pc;
    this.pc = null;
    if (this.location) {
      // End the session first, then close the peer: closed first, the relay may drop the
      // session on its own and the DELETE would find nothing (404).
      const loc = this.location;
      this.location = null;
      fetch(loc, { method: "DELETE", headers: csrfHeaders(), keepalive: true })
        .catch(() => {})
        .finally(() => pc && pc.close());
    } else if (pc) {
      pc.close();
    }
    if (this.video.srcObject) {
      this.video.srcObject = null;
    }
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close();
    }
    this.pendingBlob = null;
  }
}
