// One MJPEG attempt for a tile's player: JPEG frames over the camera's mjpeg.ws WebSocket,
// drawn on the tile's canvas; while one frame decodes only the newest waiting one is kept.
// The last resort of the player: it works wherever WebSockets do. The Player owns it:
// start() once, stop() closes the socket (idempotent) and leaves the last picture drawn.

import { request } from "./api.js";

export class MjpegStream {
  /**
   * @param {{camera: object, stream: string, canvas: HTMLCanvasElement,
   *          playing: () => void, ended: (action: string, reason: string) => void}} ctx
   */
  constructor(ctx) {
    this.ctx = ctx;
    this.canvas = ctx.canvas;
    this.view = "canvas";
    this.ws = null;
    this.done = false;
    this.seen = false;
    this.frames = 0;
    this.width = 0;
    this.height = 0;
    this.decoding = false;
    this.pendingBlob = null;
  }

  start() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const path = `/api/v1/cameras/${encodeURIComponent(this.ctx.camera.id)}/mjpeg.ws`;
    const query = this.ctx.stream === "main" ? "" : `?stream=${encodeURIComponent(this.ctx.stream)}`;
    const url = `${scheme}${location.host}${path}${query}`; // the main stream is the default
    const ws = new WebSocket(url);
    ws.binaryType = "blob";
    this.ws = ws;
    let opened = false;
    ws.addEventListener("open", () => {
      opened = true;
    });
    ws.addEventListener("message", (ev) => {
      if (this.done || typeof ev.data === "string") return;
      this.show(ev.data);
    });
    ws.addEventListener("close", (ev) => {
      if (this.done) return;
      this.ws = null;
      if (ev.code === 4401) return this.end("expired", "session expired");
      if (ev.code === 4403 || ev.code === 4404) return this.end("denied", `WebSocket ${ev.code}`);
      // A refused handshake carries no code: ask whether the session is gone (the API call
      // reports a 401 itself).
      if (!opened) request("/auth/me", { quiet401: false }).catch(() => {});
      this.end(this.seen ? "retry" : "fallback", opened ? `WebSocket closed (${ev.code})` : "WebSocket refused");
    });
  }

  stop() {
    this.done = true;
    this.pendingBlob = null;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close();
    }
  }

  async sample() {
    return { frames: this.frames, width: this.width, height: this.height };
  }

  end(action, reason) {
    if (this.done) return;
    this.stop();
    this.ctx.ended(action, reason);
  }

  /** Draw one JPEG; while one decodes, only the newest waiting frame is kept. */
  show(blob) {
    if (this.decoding) {
      this.pendingBlob = blob;
      return;
    }
    this.decoding = true;
    createImageBitmap(blob)
      .then((bitmap) => {
        if (!this.done) this.draw(bitmap, bitmap.width, bitmap.height);
        bitmap.close();
      })
      .catch(() => {})
      .finally(() => {
        this.decoding = false;
        const next = this.pendingBlob;
        this.pendingBlob = null;
        if (next && !this.done) this.show(next);
      });
  }

  draw(image, width, height) {
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    this.canvas.getContext("2d").drawImage(image, 0, 0);
    this.frames += 1;
    this.width = width;
    this.height = height;
    if (!this.seen) {
      this.seen = true;
      this.ctx.playing();
    }
  }
}
