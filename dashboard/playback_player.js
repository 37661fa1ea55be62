// One camera's recordings played on a <video> over the playback WebSocket
// (/api/v1/cameras/{id}/playback.ws), and the mapping of its media time to wall clock.
//
// The wire: a text {"type":"init", generation, mime, ...} and one binary init segment open a
// generation (after every seek, and when the codec parameters change between segments):
// the old MediaSource goes and a new one takes the init segment; media time 0 is the
// generation's first keyframe. {"type":"map", generation, media, wall} says which wall clock
// the picture shows from media time `media` on (again after every squeezed gap); binary
// messages are moof+mdat fragments; {"type":"end", wall} says nothing more is recorded after
// `wall` yet (the server goes on in the same generation as more is recorded, so a player at the
// recording's edge keeps playing); {"type":"error"} comes before the server closes. The client reports its currentTime
// every 250 ms ({"type":"position"}): the server sends only a few seconds ahead of it, so a
// paused player stops the flow by itself. It asks for a moment with {"type":"seek"} and for
// a playback rate with {"type":"speed"}.
//
// Main thread only. The owner (playback_group.js) calls start() once and stop() at the end
// (idempotent); a dropped connection comes back by itself at the moment it was showing.

import { sessionExpired } from "./api.js";
import { BufferQueue } from "./sourcebuffer.js";

const TICK_MS = 250;
const KEEP_BEHIND_S = 20;
const TRIM_EVERY_MS = 5000;
const RETRY_S = [1, 2, 4, 8];
const AT_END_S = 0.3;

const iso = (ms) => new Date(ms).toISOString();

/** The wall clock (ms) shown at media time `media` under maps [{media, wall}] sorted by media. */
export function wallAt(maps, media) {
  let map = maps[0];
  for (const m of maps) if (m.media <= media) map = m;
  return map ? map.wall + (media - map.media) * 1000 : null;
}

/** The media time showing wall clock `wall` (ms); a moment in a squeezed gap maps to what follows it. */
export function mediaAt(maps, wall) {
  if (!maps.length) return null;
  if (wall <= maps[0].wall) return maps[0].media;
  for (let i = 0; i < maps.length; i += 1) {
    const m = maps[i];
    const next = maps[i + 1];
    if (!next) return m.media + (wall - m.wall) / 1000;
    const until = m.wall + (next.media - m.media) * 1000;
    if (wall < until) return m.media + (wall - m.wall) / 1000;
    if (wall < next.wall) return next.media;
  }
  return null;
}

export class PlaybackStream {
  /**
   * @param {{camera: string, stream?: string, video: HTMLVideoElement, onChange: () => void}} options
   */
  constructor({ camera, stream = "", video, onChange }) {
    this.camera = camera;
    this.stream = stream;
    this.video = video;
    this.onChange = onChange;
    this.status = "idle"; // idle | loading | playing | ended | denied | error | waiting
    this.detail = "";
    this.ws = null;
    this.buffer = null;
    this.generation = -1;
    this.pendingInit = null;
    this.awaitingInit = false;
    this.maps = [];
    this.endWall = null;
    this.target = null;
    this.speed = 1;
    this.paused = false;
    this.retries = 0;
    this.timer = null;
    this.retryTimer = null;
    this.lastTrim = 0;
    this.stopped = false;
    this.failure = "";
    this.onVideoError = () => this.fail(`video error ${this.video.error ? this.video.error.code : ""}`);
  }

  /** Connect and play from wall clock `ms`. */
  start(ms) {
    this.target = ms;
    this.video.addEventListener("error", this.onVideoError);
    this.connect();
    this.timer = setInterval(() => this.tick(), TICK_MS);
  }

  stop() {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.retryTimer);
    this.video.removeEventListener("error", this.onVideoError);
    this.disconnect();
    this.dropBuffer();
    this.setStatus("idle");
  }

  /** The wall clock (ms) of the picture shown, or of the moment asked for while it loads. */
  wallNow() {
    if (this.target !== null) return this.target;
    return wallAt(this.maps, this.video.currentTime);
  }

  /** Whether the picture shown is the one asked for (not loading, not seeking). */
  settled() {
    return this.target === null && !this.video.seeking && this.status === "playing";
  }

  /** Show wall clock `ms`: within what is buffered at once, else ask the server for it. */
  seekWall(ms) {
    if (this.stopped) return;
    const media = this.target === null ? mediaAt(this.maps, ms) : null;
    const mapped = media !== null && Math.abs(wallAt(this.maps, media) - ms) < 1000;
    if (mapped && this.holds(media)) {
      this.video.currentTime = media;
      if (this.status === "ended") this.setStatus("playing");
      return;
    }
    this.target = ms;
    this.setStatus("loading");
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.awaitingInit = true;
      this.send({ type: "seek", to: iso(ms) });
    } else {
      this.disconnect();
      this.connect();
    }
  }

  setSpeed(value) {
    this.speed = value;
    this.video.defaultPlaybackRate = value;
    this.video.playbackRate = value;
    this.send({ type: "speed", value });
  }

  setPaused(paused) {
    this.paused = paused;
    if (paused) this.video.pause();
    else if (this.target === null) this.video.play().catch(() => {});
  }

  info() {
    const v = this.video;
    const q = typeof v.getVideoPlaybackQuality === "function" ? v.getVideoPlaybackQuality() : null;
    const b = this.buffer && this.buffer.buffered();
    return {
      camera: this.camera,
      status: this.status,
      detail: this.detail,
      generation: this.generation,
      wall: this.wallNow(),
      currentTime: v.currentTime,
      buffered: b ? [b.start(0), b.end(b.length - 1)] : null,
      framesDecoded: q ? q.totalVideoFrames : 0,
      width: v.videoWidth,
      height: v.videoHeight,
      speed: this.speed,
      paused: this.paused,
      end: this.endWall,
    };
  }

  // ---- the socket --------------------------------------------------------------------------

  connect() {
    clearTimeout(this.retryTimer);
    this.failure = "";
    const url = new URL(`/api/v1/cameras/${encodeURIComponent(this.camera)}/playback.ws`, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("start", iso(this.target ?? Date.now()));
    if (this.stream) url.searchParams.set("stream", this.stream);
    const ws = new WebSocket(url.href);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.awaitingInit = true;
    this.setStatus("loading");
    ws.addEventListener("open", () => {
      if (this.speed !== 1) this.send({ type: "speed", value: this.speed });
    });
    ws.addEventListener("message", (ev) => {
      if (ws === this.ws) this.message(ev.data);
    });
    ws.addEventListener("close", (ev) => {
      if (ws === this.ws) this.closed(ev);
    });
  }

  disconnect() {
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close();
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  message(data) {
    if (typeof data !== "string") {
      if (this.pendingInit) this.newGeneration(this.pendingInit, data);
      else if (this.buffer && !this.awaitingInit) {
        this.endWall = null; // the server follows the recording: more came after an `end`
        this.buffer.media(data);
      }
      return;
    }
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (msg.type === "init") {
      this.pendingInit = msg;
    } else if (msg.type === "map" && msg.generation === this.generation) {
      this.maps.push({ media: Number(msg.media), wall: Date.parse(msg.wall) });
      this.maps.sort((a, b) => a.media - b.media);
      this.place();
    } else if (msg.type === "end") {
      if (this.awaitingInit && !this.pendingInit) this.nothingAfter();
      else if (msg.generation === this.generation) this.endWall = Date.parse(msg.wall);
    } else if (msg.type === "error") {
      this.failure = msg.detail || "error"; // the close that follows says what it means
    }
  }

  /** A generation begins: a fresh MediaSource takes its init segment. */
  newGeneration(init, data) {
    this.pendingInit = null;
    this.awaitingInit = false;
    this.generation = init.generation;
    this.maps = [];
    this.endWall = null;
    if (this.target === null) this.target = this.wallNow();
    this.dropBuffer();
    this.buffer = new BufferQueue(this.video, {
      fail: (_kind, reason) => this.fail(reason),
      idle: () => this.place(),
    });
    this.video.defaultPlaybackRate = this.speed;
    this.buffer.init(init.mime, data);
  }

  /** `end` with no generation after a seek: nothing is recorded after the moment asked for. */
  nothingAfter() {
    this.awaitingInit = false;
    this.target = null;
    this.endWall = null;
    this.dropBuffer();
    this.setStatus("ended");
  }

  closed(ev) {
    this.ws = null;
    if (this.stopped) return;
    this.detail = this.failure || `WebSocket closed (${ev.code})`;
    if (ev.code === 4401) {
      sessionExpired();
      this.fail("session expired");
    } else if (ev.code === 4404 && this.failure) {
      this.nothingAfter(); // nothing recorded from the moment asked for on
    } else if (ev.code === 4403 || ev.code === 4404) {
      this.setStatus("denied");
    } else if (ev.code >= 4000) {
      this.fail(this.detail);
    } else if (this.status !== "error") {
      // Come back at the moment shown, after a pause that grows while it keeps failing.
      if (this.target === null) this.target = this.wallNow();
      const delay = RETRY_S[Math.min(this.retries, RETRY_S.length - 1)];
      this.retries += 1;
      this.setStatus("waiting");
      this.retryTimer = setTimeout(() => {
        if (!this.stopped && !this.ws) this.connect();
      }, delay * 1000);
    }
  }

  fail(reason) {
    if (this.stopped) return;
    this.detail = reason;
    this.setStatus("error");
    console.info(`playback ${this.camera}: ${reason}`);
    this.disconnect();
  }

  // ---- the buffer --------------------------------------------------------------------------

  dropBuffer() {
    const buffer = this.buffer;
    this.buffer = null;
    if (buffer) buffer.close();
  }

  holds(media) {
    const b = this.buffer && this.buffer.buffered();
    if (!b) return false;
    for (let i = 0; i < b.length; i += 1) if (b.start(i) <= media && media < b.end(i) - 0.05) return true;
    return false;
  }

  /** Once the moment asked for is buffered (or nothing lies before it), show it. */
  place() {
    if (this.target === null || this.awaitingInit || !this.buffer || !this.maps.length) return;
    const b = this.buffer.buffered();
    if (!b) return;
    const media = Math.max(b.start(0), mediaAt(this.maps, this.target));
    if (!this.holds(media) && !(this.endWall !== null && media >= b.end(b.length - 1) - AT_END_S)) return;
    this.target = null;
    this.retries = 0;
    this.video.currentTime = Math.min(media, b.end(b.length - 1));
    this.video.playbackRate = this.speed;
    if (!this.paused) this.video.play().catch(() => {});
    this.setStatus("playing");
  }

  /** Every 250 ms: report the position, notice the end, trim what lies far behind. */
  tick() {
    if (this.stopped || this.generation < 0 || this.awaitingInit) return;
    const position = this.target === null ? this.video.currentTime : mediaAt(this.maps, this.target);
    if (position !== null) this.send({ type: "position", generation: this.generation, media: position });
    const b = this.buffer && this.buffer.buffered();
    if (!b || this.target !== null) return;
    const atEnd = this.video.currentTime >= b.end(b.length - 1) - AT_END_S;
    if (this.status === "playing" && atEnd && this.endWall !== null) this.setStatus("ended");
    else if (this.status === "ended" && !atEnd) this.setStatus("playing");
    const now = performance.now();
    if (now - this.lastTrim > TRIM_EVERY_MS && this.buffer.settled()) {
      this.lastTrim = now;
      const behind = this.video.currentTime - KEEP_BEHIND_S;
      if (behind > b.start(0)) this.buffer.remove(b.start(0), behind);
    }
    this.onChange();
  }

  setStatus(status) {
    this.status = status;
    this.onChange();
  }
}
