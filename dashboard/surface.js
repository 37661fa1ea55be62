// A tile's drawing surfaces: a <video> (WebRTC, MSE) and a <canvas> (MJPEG, and the last
// picture kept when a stream stops) in one box. A tile has two, stacked: the front one shows,
// the one behind warms up the next stream. Main thread only, no state of its own.

function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  node.className = className;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** A new surface; index 0 starts in front. */
export function makeSurface(index) {
  const root = el("div", "tile-surface", { "data-surface": String(index), "data-view": "video" });
  root.dataset.active = String(index === 0);
  const video = el("video", "tile-video", { muted: "", playsinline: "", autoplay: "" });
  video.muted = true;
  const canvas = el("canvas", "tile-canvas", { "aria-hidden": "true" });
  root.append(video, canvas);
  return { root, video, canvas };
}

/** Forget the surface's last picture. */
export function clearSurface(surface) {
  const canvas = surface.canvas;
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  canvas.width = 0;
  surface.root.dataset.view = "video";
}

/** Bring surfaces[front] to the front. */
export function showSurface(surfaces, front) {
  surfaces.forEach((s, i) => {
    s.root.dataset.active = String(i === front);
  });
}
