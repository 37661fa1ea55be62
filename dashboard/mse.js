// One MSE attempt for a tile's player: the relay's fragmented MP4 over the camera's mse.ws
// WebSocket, appended to a SourceBuffer on the tile's <video> and kept at the live edge.
//
// The wire: a text {"type":"init", mime, codec, width, height, transcoded, audio} followed by
// one binary message, the init segment; then one binary moof+mdat per access unit or audio
// frame. With audio ("mp4a.40.2", else null) the init segment has an AAC track besides the
// video, the mime names both codecs, and both tracks go into the one SourceBuffer (its
// buffered range is where both have data); the <video> stays muted unless the tile's sound
// toggle says otherwise. A new init may come mid-stream (the camera changed its parameters). The stream starts at the relay's
// cached keyframe, up to a GOP behind live: once the first burst is appended the playhead
// jumps to just before the newest frame, and a 250 ms timer keeps it there (faster playback
// for a small lag, a jump for a large one) and trims what lies behind it.
//
// The Player owns it: start() once, stop() frees socket, MediaSource and buffer (idempotent).

import { BufferQueue, mseSupports } from "./sourcebuffer.js";

const CHASE_MS = 250;
const TARGET_LAG_S = 0.15;
const NUDGE_LAG_S = 0.3;
const NUDGE_RATE = 1.15;
const JUMP_LAG_S = 0.8;
const KEEP_BEHIND_S = 3;
const TRIM_EVERY_MS = 2000;
export const HEVC_PROBE = 'video/mp4; codecs="hvc1.1.6.L93.B0"';
export const AAC_PROBE = 'audio/mp4; codecs="mp4a.40.2"';

/** Whether MSE here decodes H.265 (else the relay transcodes H.265 cameras to H.264). */
export const hevcSupported = () => mseSupports(HEVC_PROBE);

/** Whether MSE here plays AAC (else the relay sends the picture alone). */
export const aacSupported = () => mseSupports(AAC_PROBE);

export class MseStream {
  /**
   * @param {{camera: object, stream: string, video: HTMLVideoElement,
   *          playing: () => void, ended: (action: string, reason: string) => void}} ctx
   */
  constructor(ctx) {
    this.ctx = ctx;
    this.video = ctx.video;
    this.view = "video";
    this.done = false;
    this.ws = null;
    this.buffer = null;
    this.nextInit = null;
    this.info = null;
    this.hasAudio = false;
    this.jumped = false;
    this.seen = false;
    this.lastTrim = 0;
    this.timer = null;
    this.lag = 0;
    this.jumps = 0;
    this.onVideoError = () => this.end("fallback", `video error ${this.video.error ? this.video.error.code : ""}`);
  }

  start() {
    this.buffer = new BufferQueue(this.video, {
      fail: (kind, reason) => this.end(kind === "full" ? "retry" : "fallback", reason),
      idle: () => this.caughtUp(),
    });
    this.video.addEventListener("error", this.onVideoError);

    const url = new URL(this.ctx.camera.links.mse, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("stream", this.ctx.stream);
    url.searchParams.set("hevc", hevcSupported() ? "1" : "0");
    if (!aacSupported()) url.searchParams.set("audio", "0");
    const ws = new WebSocket(url.href);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.addEventListener("message", (ev) => this.message(ev.data));
    ws.addEventListener("close", (ev) => this.closed(ev));
    this.timer = setInterval(() => this.chase(), CHASE_MS);
  }

  stop() {
    if (this.done && !this.buffer) return;
    this.done = true;
    clearInterval(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close();
    }
    this.video.removeEventListener("error", this.onVideoError);
    if (this.buffer) {
      const buffer = this.buffer;
      this.buffer = null;
      buffer.close();
    }
  }

  async sample() {
    const v = this.video;
    const q = typeof v.getVideoPlaybackQuality === "function" ? v.getVideoPlaybackQuality() : null;
    return { frames: q ? q.totalVideoFrames : 0, width: v.videoWidth, height: v.videoHeight, lag: this.lag };
  }

  end(action, reason) {
    if (this.done) return;
    this.stop();
    this.ctx.ended(action, reason);
  }

  // ---- the socket --------------------------------------------------------------------------

  message(data) {
    if (this.done) return;
    if (typeof data === "string") {
      let msg;
      try {
        msg = JSON.parse(data);
      } catch {
        return;
      }
      if (msg && msg.type === "init") this.nextInit = msg;
      return;
    }
    if (this.nextInit) {
      const info = this.nextInit;
      this.nextInit = null;
      if (this.info) {
        // New parameters mid-stream: its timeline may restart, so the old buffer must go.
        this.buffer.remove(0, Infinity);
        this.jumped = false;
      }
      this.info = info;
      this.hasAudio = Boolean(info.audio);
      this.buffer.init(info.mime, data);
      return;
    }
    if (this.info) this.buffer.media(data);
  }

  closed(ev) {
    if (this.done) return;
    this.ws = null;
    if (ev.code === 4401) return this.end("expired", "session expired");
    if (ev.code === 4403 || ev.code === 4404) return this.end("denied", `WebSocket ${ev.code}`);
    const why = `WebSocket closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ""})`;
    this.end(this.seen ? "retry" : "fallback", why);
  }

  // ---- the live edge -----------------------------------------------------------------------

  /** Everything received is appended: the first time, jump to the newest frame and play. */
  caughtUp() {
    if (this.jumped) return;
    const b = this.buffer.buffered();
    if (!b) return;
    this.jumped = true;
    this.seek(b.start(b.length - 1), b.end(b.length - 1));
    this.video.play().catch(() => {});
    if (typeof this.video.requestVideoFrameCallback === "function") {
      this.video.requestVideoFrameCallback(() => this.firstPicture());
    }
  }

  seek(start, end) {
    this.video.currentTime = Math.max(start, end - TARGET_LAG_S);
    this.video.playbackRate = 1;
  }

  firstPicture() {
    if (this.done || this.seen) return;
    this.seen = true;
    this.ctx.playing();
  }

  /** Every 250 ms: stay near the live edge, trim the buffer behind the playhead. */
  chase() {
    if (this.done || !this.jumped) return;
    const v = this.video;
    const b = this.buffer.buffered();
    if (!b) return;
    if (!this.seen && v.readyState >= 2 && !v.seeking && v.videoWidth) this.firstPicture();
    const start = b.start(b.length - 1);
    const end = b.end(b.length - 1);
    const now = v.currentTime;
    this.lag = Math.max(0, end - now);
    if (now < start || this.lag > JUMP_LAG_S) {
      this.jumps += 1;
      this.seek(start, end);
    } else if (this.lag > NUDGE_LAG_S) {
      v.playbackRate = NUDGE_RATE;
    } else if (this.lag < TARGET_LAG_S + 0.05) {
      v.playbackRate = 1;
    }
    if (v.paused) v.play().catch(() => {});
    const clock = performance.now();
    if (clock - this.lastTrim > TRIM_EVERY_MS) {
      this.lastTrim = clock;
      if (now - b.start(0) > 2 * KEEP_BEHIND_S) this.buffer.remove(b.start(0), now - KEEP_BEHIND_S);
    }
  }
}
