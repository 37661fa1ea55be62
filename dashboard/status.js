// The status bar: cameras online/total, viewers now, service health (as /readyz says it),
// for administrators the GB/T 28181 superior platforms and whether we are registered with
// them, and what the wall plays. Figures come from GET /api/v1/status; while that route is
// missing they are computed from the camera list and GET /readyz.

import { getJSON, request } from "./api.js";
import { clock, t } from "./i18n.js";
import { AVAILABLE } from "./tree.js";

const POLL_MS = 3000;

function setText(node, text) {
  if (node && node.textContent !== text) node.textContent = text;
}

export class StatusBar {
  constructor(root) {
    this.root = root;
    this.online = root.querySelector("#status-online");
    this.viewers = root.querySelector("#status-viewers");
    this.health = root.querySelector("#status-health");
    this.platforms = root.querySelector("#status-platforms");
    this.wall = root.querySelector("#status-wall");
    this.updated = root.querySelector("#status-updated");
    this.timer = null;
    this.cameras = [];
    this.statusRoute = true;
  }

  start() {
    this.stop();
    this.poll();
    this.timer = setInterval(() => this.poll(), POLL_MS);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  /** The latest camera list (fallback figures). */
  setCameras(cameras) {
    this.cameras = cameras;
    if (!this.statusRoute) this.showFallback();
  }

  async poll() {
    if (this.statusRoute) {
      try {
        const s = await getJSON("/status");
        this.show(s.online, s.total, s.viewers, s.ready);
        this.showPlatforms(s.platforms || []);
        return;
      } catch (err) {
        if (err.status === 401) return;
        if (err.status !== 404) return this.down();
        this.statusRoute = false;
      }
    }
    this.showFallback();
  }

  async showFallback() {
    const cams = this.cameras;
    const online = cams.filter((c) => AVAILABLE.has(c.live.state)).length;
    const viewers = cams.reduce((n, c) => n + (c.live.webrtc_viewers || 0) + (c.live.mjpeg_viewers || 0), 0);
    let ready = false;
    try {
      const res = await request("/readyz", { raw: true });
      ready = res.ok;
    } catch {
      ready = false;
    }
    this.show(online, cams.length, viewers, ready);
  }

  show(online, total, viewers, ready) {
    this.root.dataset.api = "up";
    setText(this.online, `${online}/${total}`);
    setText(this.viewers, String(viewers));
    setText(this.health, t(ready ? "status.ready" : "status.notReady"));
    this.health.dataset.ready = String(Boolean(ready));
    this.online.dataset.level = online === total ? "all" : online === 0 ? "none" : "some";
    setText(this.updated, t("status.updated", { time: clock(Date.now() / 1000) }));
  }

  /** Each superior platform: 上级平台 name：已注册 / 未注册, since when or the last error on hover. */
  showPlatforms(platforms) {
    if (!this.platforms) return;
    this.platforms.hidden = platforms.length === 0;
    const items = platforms.map((p) => {
      const item = document.createElement("b");
      item.className = "status-platform";
      item.dataset.registered = String(p.registered);
      const state = t(p.registered ? "status.registered" : "status.unregistered");
      item.textContent = t("status.platform", { name: p.name, state });
      const since = p.since ? t("status.platformSince", { time: clock(Date.parse(p.since) / 1000) }) : "";
      item.title = [since, p.last_error || ""].filter(Boolean).join(" · ");
      return item;
    });
    this.platforms.replaceChildren(...items);
  }

  down() {
    this.root.dataset.api = "down";
    setText(this.health, t("status.notReady"));
    this.health.dataset.ready = "false";
    setText(this.updated, t("status.apiDown"));
  }

  /** What the wall plays: "WebRTC n · MJPEG m". */
  setWall(text) {
    setText(this.wall, text);
  }
}
