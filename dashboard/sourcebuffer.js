// Media Source Extensions plumbing shared by the live MSE player (mse.js) and recorded
// playback (playback_player.js): which MediaSource class this browser has, and one
// MediaSource on a <video> whose single SourceBuffer is fed from a queue of operations
// (init segment, media fragments, removals), one at a time as a SourceBuffer requires.
//
// Main thread only. The owner calls close() when done (idempotent); after a failure the
// queue calls its fail callback once and does nothing more.

const MAX_QUEUE = 250;
const MAX_QUOTA_ERRORS = 3;

export function mediaSourceClass() {
  return window.ManagedMediaSource || window.MediaSource || null;
}

/** Whether this browser has Media Source Extensions. */
export function mseSupported() {
  return typeof mediaSourceClass() === "function";
}

/** Whether MSE here plays the given type. */
export function mseSupports(type) {
  try {
    return mseSupported() && mediaSourceClass().isTypeSupported(type);
  } catch {
    return false;
  }
}

export class BufferQueue {
  /**
   * @param {HTMLVideoElement} video the element the MediaSource plays on
   * @param {{fail: (kind: "full" | "error", reason: string) => void, idle: () => void}} hooks
   *   fail: the buffer fell too far behind or stays full ("full"), or the browser refused an
   *   operation ("error"); idle: every queued operation has been applied
   */
  constructor(video, hooks) {
    this.video = video;
    this.hooks = hooks;
    this.closed = false;
    this.open = false;
    this.queue = [];
    this.sb = null;
    this.mime = "";
    this.quotaErrors = 0;
    const MS = mediaSourceClass();
    this.ms = new MS();
    this.ms.addEventListener("sourceopen", () => {
      this.open = true;
      this.pump();
    });
    this.objectUrl = URL.createObjectURL(this.ms);
    if (MS !== window.MediaSource) video.disableRemotePlayback = true;
    video.srcObject = null;
    video.src = this.objectUrl;
  }

  /** Append an init segment of type mime (a change of mime switches the SourceBuffer's type). */
  init(mime, data) {
    this.enqueue({ kind: "init", mime, data });
  }

  /** Append media fragments. */
  media(data) {
    this.enqueue({ kind: "media", data });
  }

  /** Remove the media between from and to (seconds). */
  remove(from, to) {
    this.enqueue({ kind: "remove", from, to });
  }

  /** What the SourceBuffer holds, or null before the first init (or once closing). */
  buffered() {
    try {
      return this.sb && this.sb.buffered.length ? this.sb.buffered : null;
    } catch {
      return null; // the MediaSource is closing
    }
  }

  /** Whether nothing is queued or being applied. */
  settled() {
    return !this.queue.length && Boolean(this.sb) && !this.sb.updating;
  }

  /** Free the MediaSource and empty the <video> (idempotent). */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.queue = [];
    this.sb = null;
    this.video.removeAttribute("src");
    this.video.load();
    URL.revokeObjectURL(this.objectUrl);
  }

  fail(kind, reason) {
    if (this.closed) return;
    this.close();
    this.hooks.fail(kind, reason);
  }

  enqueue(op) {
    if (this.closed) return;
    if (this.queue.length >= MAX_QUEUE) {
      this.fail("full", "the MSE buffer fell too far behind");
      return;
    }
    this.queue.push(op);
    this.pump();
  }

  /** Run queued operations one at a time: a SourceBuffer takes one while not updating. */
  pump() {
    while (!this.closed && this.open && this.queue.length && !(this.sb && this.sb.updating)) {
      const op = this.queue[0];
      try {
        if (op.kind === "init") {
          this.applyInit(op.mime);
          this.sb.appendBuffer(op.data);
        } else if (op.kind === "media") {
          this.sb.appendBuffer(op.data);
          this.quotaErrors = 0; // it throws at once when the buffer is full
        } else if (this.sb && this.sb.buffered.length && op.to > op.from) {
          this.sb.remove(op.from, op.to);
        }
        this.queue.shift();
      } catch (err) {
        if (err.name === "QuotaExceededError") this.quotaExceeded();
        else this.fail("error", `MSE ${op.kind}: ${err.name}: ${err.message}`);
        return;
      }
    }
    if (!this.closed && this.settled()) this.hooks.idle();
  }

  applyInit(mime) {
    if (!this.sb) {
      this.sb = this.ms.addSourceBuffer(mime); // NotSupportedError: the owner falls back
      this.mime = mime;
      this.sb.addEventListener("updateend", () => this.pump());
      this.sb.addEventListener("error", () => this.fail("error", "SourceBuffer error"));
    } else if (mime !== this.mime) {
      if (typeof this.sb.changeType !== "function") throw new Error(`cannot switch to ${mime}`);
      this.sb.changeType(mime);
      this.mime = mime;
    }
  }

  /** The buffer is full: drop what lies behind the playhead, then try the append again. */
  quotaExceeded() {
    this.quotaErrors += 1;
    if (this.quotaErrors > MAX_QUOTA_ERRORS) {
      this.fail("full", "the MSE buffer is full");
      return;
    }
    this.queue.unshift({ kind: "remove", from: 0, to: Math.max(0, this.video.currentTime - 0.5) });
    this.pump();
  }
}
