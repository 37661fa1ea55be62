// A tile's sound switch. The wall is silent: every <video> starts muted, and a tile offers
// this toggle only while its stream carries audio (for MSE, the init message's "audio"). The
// sound comes from the tile's front surface only, never from the one warming up behind it,
// and the choice survives a change of stream or a reconnection (until another camera is
// placed in the tile). Main thread only; the tile owns the button and the choice.

const ICON_OFF =
  '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 9h4l5-4v14l-5-4H4z" fill="none" stroke="currentColor" stroke-width="1.8" stroke-linejoin="round"/><path d="M16 9l5 6M21 9l-5 6" fill="none" stroke="currentColor" stroke-width="1.8"/></svg>';
const ICON_ON =
  '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 9h4l5-4v14l-5-4H4z" fill="none" stroke="currentColor" stroke-width="1.8" stroke-linejoin="round"/><path d="M16 8.5a5 5 0 010 7M18.5 6a8.5 8.5 0 010 12" fill="none" stroke="currentColor" stroke-width="1.8"/></svg>';

/** The toggle button: hidden until the stream has audio, a pressed state rather than two labels. */
export function soundButton() {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "tile-btn tile-sound";
  b.dataset.action = "sound";
  b.dataset.i18nLabel = "tile.sound";
  b.hidden = true;
  b.setAttribute("aria-pressed", "false");
  b.innerHTML = ICON_OFF;
  return b;
}

/**
 * Show the button while the playing stream has audio; unmute the front surface's <video> only
 * when the operator asked for sound, mute every other one.
 * @param {HTMLButtonElement} button
 * @param {{video: HTMLVideoElement}[]} surfaces
 * @param {number} front
 * @param {boolean} hasAudio
 * @param {boolean} wanted
 */
export function applySound(button, surfaces, front, hasAudio, wanted) {
  const audible = hasAudio && wanted;
  button.hidden = !hasAudio;
  if (button.getAttribute("aria-pressed") !== String(audible)) {
    button.setAttribute("aria-pressed", String(audible));
    button.innerHTML = audible ? ICON_ON : ICON_OFF;
  }
  surfaces.forEach((s, i) => {
    s.video.muted = !(audible && i === front);
  });
}
