// One WebRTC attempt over WHEP for a tile's player: offer, POST to the camera's WHEP link,
// wait for ICE and the first decoded frame, then watch the connection. It gives up fast when
// WebRTC cannot work here (no ICE candidate at all, ICE not connected soon after the answer,
// or a stream the relay serves over MSE only, answered with 409) so the player can go on to
// MSE. The Player owns it: start() once, stop() to free the session (idempotent).

import { csrfHeaders } from "./api.js";

const ICE_GATHER_MS = 600;
const WHEP_TIMEOUT_MS = 5000;
const ICE_CONNECT_MS = 1500;
const FIRST_FRAME_MS = 2500;
const DISCONNECTED_GRACE_MS = 3000;
const POLL_MS = 100;

/** Whether this browser can do WebRTC at all. */
export function webrtcSupported() {
  return typeof RTCPeerConnection === "function";
}

/** Why an attempt ended: "fallback" (try the next mode), "retry", "denied" or "expired". */
export class Outcome extends Error {
  constructor(action, reason) {
    super(reason);
    this.action = action;
  }
}

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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function inboundVideo(pc) {
  const report = await pc.getStats();
  for (const s of report.values()) {
    if (s.type === "inbound-rtp" && (s.kind === "video" || s.mediaType === "video")) return s;
  }
  return null;
}

/** The URL with ?stream=… added (the relay's default is the main stream). */
export function withStream(link, stream) {
  const url = new URL(link, location.href);
  url.searchParams.set("stream", stream);
  return url.href;
}

export class WebRtcStream {
  /**
   * @param {{camera: object, stream: string, video: HTMLVideoElement,
   *          playing: () => void, ended: (action: string, reason: string) => void}} ctx
   */
  constructor(ctx) {
    this.ctx = ctx;
    this.video = ctx.video;
    this.view = "video";
    this.pc = null;
    this.location = null;
    this.done = false;
    this.graceTimer = null;
    this.hasAudio = false;
  }

  start() {
    this.run().catch((err) => {
      const action = err instanceof Outcome ? err.action : "fallback";
      this.end(action, err.message);
    });
  }

  /** Free the relay's session and the peer; no callback. Idempotent. */
  stop() {
    if (this.done && !this.pc) return;
    this.done = true;
    clearTimeout(this.graceTimer);
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
    if (this.video.srcObject) this.video.srcObject = null;
  }

  /** Frames decoded and picture size so far. */
  async sample() {
    const s = this.pc ? await inboundVideo(this.pc).catch(() => null) : null;
    return {
      frames: s ? s.framesDecoded || 0 : 0,
      width: (s && s.frameWidth) || this.video.videoWidth || 0,
      height: (s && s.frameHeight) || this.video.videoHeight || 0,
    };
  }

  end(action, reason) {
    if (this.done) return;
    this.stop();
    this.ctx.ended(action, reason);
  }

  async run() {
    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    // Sound only for cameras that relay it (off unless configured); the tile starts muted.
    if (this.ctx.camera.live && this.ctx.camera.live.audio) pc.addTransceiver("audio", { direction: "recvonly" });
    const media = new MediaStream();
    pc.addEventListener("track", (ev) => {
      if (this.done) return;
      media.addTrack(ev.track); // video and sound in one stream, whatever stream ids the relay gave them
      if (ev.track.kind === "audio") this.hasAudio = true;
      if (this.video.srcObject !== media) this.video.srcObject = media;
      this.video.play().catch(() => {});
    });
    pc.addEventListener("connectionstatechange", () => this.watch(pc));
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIce(pc);
    if (this.done) return;
    // No candidate at all: this browser may not send UDP (policy or network); no point asking.
    if (!/^a=candidate:/m.test(pc.localDescription.sdp)) throw new Outcome("fallback", "no ICE candidate");

    const ctrl = new AbortController();
    const abort = setTimeout(() => ctrl.abort(), WHEP_TIMEOUT_MS);
    let res;
    let body;
    try {
      res = await fetch(withStream(this.ctx.camera.links.whep, this.ctx.stream), {
        method: "POST",
        headers: csrfHeaders({ "Content-Type": "application/sdp" }),
        body: pc.localDescription.sdp,
        cache: "no-store",
        signal: ctrl.signal,
      });
      body = await res.text();
    } catch (err) {
      throw new Outcome("fallback", `WHEP request failed: ${err.message}`);
    } finally {
      clearTimeout(abort);
    }
    if (res.status === 401) throw new Outcome("expired", "session expired");
    if (res.status === 403 || res.status === 404) throw new Outcome("denied", `WHEP ${res.status}`);
    if (res.status !== 201 && res.status !== 200) {
      // 409: the stream has B-frames (WebRTC cannot carry them); 503: no capacity; others alike.
      throw new Outcome("fallback", `WHEP ${res.status}: ${body.slice(0, 200)}`);
    }
    const loc = res.headers.get("Location");
    if (loc) this.location = new URL(loc, location.href).href;
    if (this.done) {
      this.stop();
      return;
    }
    await pc.setRemoteDescription({ type: "answer", sdp: body });
    const answered = performance.now();
    await this.until(answered + ICE_CONNECT_MS, () => ["connected", "completed"].includes(pc.iceConnectionState),
      `ICE not connected within ${ICE_CONNECT_MS / 1000} s`);
    await this.until(answered + FIRST_FRAME_MS, async () => {
      const s = await inboundVideo(pc).catch(() => null);
      return Boolean(s && s.framesDecoded > 0);
    }, `no video frame within ${FIRST_FRAME_MS / 1000} s`);
    if (this.done) return;
    // The relay ending the session closes DTLS at once, long before ICE would notice.
    const dtls = pc.getReceivers()[0]?.transport;
    if (dtls) {
      dtls.addEventListener("statechange", () => {
        if (this.done || (dtls.state !== "closed" && dtls.state !== "failed")) return;
        if (dtls.state === "closed") this.location = null; // the relay ended it: nothing to DELETE
        this.end("retry", `DTLS ${dtls.state}`);
      });
    }
    this.ctx.playing();
  }

  /** Poll check() until true; past the deadline, fall back with reason. */
  async until(deadline, check, reason) {
    while (!this.done) {
      if (await check()) return;
      if (performance.now() >= deadline) throw new Outcome("fallback", reason);
      await sleep(POLL_MS);
    }
  }

  watch(pc) {
    if (this.done || pc !== this.pc) return;
    const state = pc.connectionState;
    if (state === "failed" || state === "closed") {
      this.end("retry", `connection ${state}`);
    } else if (state === "disconnected") {
      if (!this.graceTimer) this.graceTimer = setTimeout(() => this.end("retry", "disconnected"), DISCONNECTED_GRACE_MS);
    } else if (this.graceTimer) {
      clearTimeout(this.graceTimer);
      this.graceTimer = null;
    }
  }
}
