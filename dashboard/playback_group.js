// Up to four cameras' recordings played in step: one shared wall clock, one speed, one
// pause. Each stream maps its own media time to wall clock (the server's `map` messages);
// the first stream that shows a picture leads and every 250 ms the others follow it: one that
// drifts more than 0.25 s is moved to the leader's moment (within its buffer at once, else
// by a seek message to the server).
//
// Main thread only. The playback view owns it: play() to start or move, stop() at the end.

import { PlaybackStream } from "./playback_player.js";

export const MAX_CAMERAS = 4;
export const SPEEDS = [1, 2, 4, 8];
const SYNC_MS = 250;
const DRIFT_MS = 250;

export class PlaybackGroup {
  /**
   * @param {{camera: string, video: HTMLVideoElement}[]} members at most MAX_CAMERAS
   * @param {() => void} onChange called when a stream's state or position changes
   */
  constructor(members, onChange) {
    this.streams = members
      .slice(0, MAX_CAMERAS)
      .map(({ camera, video }) => new PlaybackStream({ camera, video, onChange }));
    this.started = false;
    this.speed = 1;
    this.paused = false;
    this.corrections = 0;
    this.timer = setInterval(() => this.sync(), SYNC_MS);
  }

  /** Play (or show, when paused) every stream from wall clock ms. */
  play(ms) {
    for (const s of this.streams) {
      if (this.started) s.seekWall(ms);
      else s.start(ms);
    }
    this.started = true;
  }

  /** Move by seconds from the moment shown. */
  step(seconds) {
    const now = this.moment();
    if (now !== null) this.play(now + seconds * 1000);
  }

  setSpeed(value) {
    if (!SPEEDS.includes(value)) return;
    this.speed = value;
    for (const s of this.streams) s.setSpeed(value);
  }

  setPaused(paused) {
    this.paused = paused;
    for (const s of this.streams) s.setPaused(paused);
  }

  /** The stream the others follow: the first that shows the moment it was asked for. */
  leader() {
    return this.streams.find((s) => s.settled()) || null;
  }

  /** The wall clock (ms) being shown: the leader's, else the first stream's. */
  moment() {
    const lead = this.leader() || this.streams[0];
    return lead ? lead.wallNow() : null;
  }

  sync() {
    const lead = this.leader();
    if (!lead) return;
    const wall = lead.wallNow();
    for (const s of this.streams) {
      if (s === lead || !s.settled()) continue;
      const drift = s.wallNow() - wall;
      if (Math.abs(drift) > DRIFT_MS) {
        this.corrections += 1;
        s.seekWall(wall);
      }
    }
  }

  info() {
    return this.streams.map((s) => s.info());
  }

  stop() {
    clearInterval(this.timer);
    for (const s of this.streams) s.stop();
  }
}
