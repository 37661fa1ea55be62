// Playback modes as the operator sees them: their badges, the mode forced per camera (kept
// in this browser's localStorage) and the tile's Auto/WebRTC/MSE/MJPEG control, a native
// <select> so that keyboards and screen readers know how to use it. Main thread only.

import { t } from "./i18n.js";
import { MODES } from "./player.js";

export const MODE_BADGES = { webrtc: "WebRTC", mse: "MSE", mjpeg: "MJPEG" };
const FORCED_KEY = "hallwatch-mode:";

/** The mode forced for a camera in this browser: "auto" or one of MODES. */
export function forcedMode(cameraId) {
  const saved = localStorage.getItem(FORCED_KEY + cameraId);
  return MODES.includes(saved) ? saved : "auto";
}

export function rememberMode(cameraId, mode) {
  if (mode === "auto") localStorage.removeItem(FORCED_KEY + cameraId);
  else localStorage.setItem(FORCED_KEY + cameraId, mode);
}

/** The tile's mode control (labelled by the tile's render through data-i18n-label). */
export function modeSelect() {
  const select = document.createElement("select");
  select.className = "tile-mode-select";
  select.dataset.i18nLabel = "tile.mode";
  for (const mode of ["auto", ...MODES]) {
    const option = document.createElement("option");
    option.value = mode;
    select.append(option);
  }
  labelModeSelect(select);
  return select;
}

/** Show value in the control and (re)translate its words. */
export function labelModeSelect(select, value) {
  if (value !== undefined) select.value = value;
  for (const option of select.options) {
    option.textContent = option.value === "auto" ? t("tile.modeAuto") : MODE_BADGES[option.value];
  }
}
