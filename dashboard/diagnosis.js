// Picture diagnosis in the dashboard: the alarm kinds it raises, which cameras have a picture
// fault now (read from the alarms), an alarm's picture full size, and one camera's health in
// a dialog: the conditions raised, a few scores, and the reference picture, which operators
// and admins set from the camera's current picture.

import { getJSON, postJSON } from "./api.js";
import { openDialog } from "./dialog.js";
import { dateTime, localized, t } from "./i18n.js";

export const PICTURE_KINDS = new Set([
  "dark",
  "overexposed",
  "covered",
  "blurred",
  "frozen",
  "moved",
  "colour_cast",
  "noisy",
]);
const REFRESH_MS = 2000;
const percent = (v) => `${Math.round(v * 100)} %`;
const SCORES = [
  ["brightness", (v) => v.toFixed(0)],
  ["sharpness_ratio", percent],
  ["in_place", percent],
  ["covered", percent],
  ["colour_cast", (v) => v.toFixed(2)],
  ["noise", (v) => v.toFixed(1)],
];

function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** Camera id → kinds of its picture alarms not cleared yet (a picture_ok event resolves one). */
export function pictureFaults(alarms) {
  const cleared = new Set(alarms.filter((a) => a.kind === "picture_ok").flatMap((a) => a.resolves || []));
  const faults = new Map();
  for (const alarm of alarms) {
    if (!PICTURE_KINDS.has(alarm.kind) || cleared.has(alarm.id)) continue;
    const kinds = faults.get(alarm.camera_id) || [];
    if (!kinds.includes(alarm.kind)) faults.set(alarm.camera_id, [...kinds, alarm.kind].sort());
  }
  return faults;
}

/** The kinds in words, as one list: 画面过暗、画面模糊. */
export function kindList(kinds) {
  return kinds.map((kind) => t(`kind.${kind}`)).join(t("list.separator"));
}

/**
 * The picture that raised an alarm, full size.
 * @param {object} alarm with `picture`, its URL
 * @param {string} caption what, where and when, in words
 * @param {() => HTMLElement | null} returnFocus where the focus goes if the opener was replaced
 */
export function showAlarmPicture(alarm, caption, returnFocus) {
  const title = t(`kind.${alarm.kind}`);
  const words = localized(alarm.texts, alarm.message);
  const figure = el("figure", "alarm-picture");
  const img = el("img", "", { src: alarm.picture, alt: `${title} ${caption}` });
  const text = el("figcaption");
  text.textContent = words && words !== title ? `${caption} · ${words}` : caption;
  figure.append(img, text);
  openDialog({ title, body: [figure], className: "picture-dialog", returnFocus });
}

/** One camera's picture diagnosis, refreshed every few seconds while the dialog is open. */
export class HealthDialog {
  /**
   * @param {{id: string, name: string}} camera
   * @param {{canSetReference: boolean, canSeePictures: boolean}} options
   *   canSetReference: the "acknowledge" permission; canSeePictures: the "snapshot" one
   */
  constructor(camera, options) {
    this.camera = camera;
    this.options = options;
    this.health = null;
    this.error = "";
    this.timer = null;
    this.shownReference = "";
  }

  open() {
    const root = el("div", "health", { "data-camera": this.camera.id });
    this.state = el("p", "health-state");
    this.analysed = el("p", "health-analysed");
    const scoresTitle = el("h3", "health-subtitle");
    scoresTitle.textContent = t("health.scores");
    this.scores = el("dl", "health-scores");
    const reference = el("section", "health-reference");
    const referenceTitle = el("h3", "health-subtitle");
    referenceTitle.textContent = t("health.reference");
    this.picture = el("img", "health-picture", { alt: t("health.referenceAlt", { camera: this.camera.name }) });
    this.picture.hidden = true;
    this.referenceBy = el("p", "health-reference-by");
    reference.append(referenceTitle, this.picture, this.referenceBy);
    root.append(this.state, this.analysed, scoresTitle, this.scores, reference);
    if (this.options.canSetReference) root.append(this.actions());
    openDialog({
      title: t("health.title", { camera: this.camera.name }),
      body: [root],
      className: "health-dialog",
      onClose: () => clearInterval(this.timer),
    });
    this.render();
    this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  actions() {
    const actions = el("div", "health-actions");
    this.button = el("button", "primary", { type: "button", "data-action": "set-reference" });
    this.button.textContent = t("health.setReference");
    this.button.title = t("health.setReferenceHint");
    this.button.addEventListener("click", () => this.setReference());
    this.result = el("output", "health-result", { role: "status" });
    actions.append(this.button, this.result);
    return actions;
  }

  path(tail) {
    return `/cameras/${encodeURIComponent(this.camera.id)}/${tail}`;
  }

  async refresh() {
    try {
      this.health = await getJSON(this.path("health"));
      this.error = "";
    } catch (err) {
      if (err.status === 401) return;
      this.error = t("health.unavailable");
    }
    this.render();
  }

  async setReference() {
    this.button.disabled = true;
    this.result.dataset.outcome = "busy";
    this.result.textContent = t("health.setting");
    try {
      this.health = await postJSON(this.path("reference"));
      this.result.dataset.outcome = "done";
      this.result.textContent = t("health.referenceSet");
      this.render();
    } catch (err) {
      if (err.status === 401) return;
      this.result.dataset.outcome = "failed";
      this.result.textContent = err.status === 409 ? t("health.notReady") : `${t("health.failed")}: ${err.detail || err.message}`;
    } finally {
      this.button.disabled = !this.ready();
    }
  }

  ready() {
    return Boolean(this.health && this.health.enabled && this.health.analysed);
  }

  /** Update the texts in place: the button keeps the focus across refreshes. */
  render() {
    const h = this.health;
    const raised = h && h.enabled ? h.raised || [] : [];
    this.state.dataset.bad = String(raised.length > 0);
    this.state.dataset.raised = raised.join(" ");
    if (this.error) this.state.textContent = this.error;
    else if (!h) this.state.textContent = "";
    else if (!h.enabled) this.state.textContent = t("health.disabled");
    else if (raised.length) this.state.textContent = raised.map((c) => localized(h.texts && h.texts[c], t(`kind.${c}`))).join(t("list.separator"));
    else this.state.textContent = h.analysed ? t("health.ok") : t("health.waiting");
    this.analysed.textContent =
      h && h.enabled && h.analysed ? t("health.analysed", { n: h.analysed, time: dateTime(h.last_analysed) }) : "";
    this.renderScores(h && h.enabled ? h.scores : null);
    this.renderReference(h && h.enabled ? h.reference : null);
    if (this.button && this.result.dataset.outcome !== "busy") this.button.disabled = !this.ready();
  }

  renderScores(scores) {
    const rows = scores
      ? SCORES.filter(([name]) => typeof scores[name] === "number").map(([name, format]) => {
          const row = el("div", "health-score", { "data-score": name });
          const dt = el("dt");
          dt.textContent = t(`health.score.${name}`);
          const dd = el("dd");
          dd.textContent = format(scores[name]);
          row.append(dt, dd);
          return row;
        })
      : [];
    this.scores.replaceChildren(...rows);
  }

  renderReference(reference) {
    this.referenceBy.textContent = reference
      ? t("health.referenceBy", { user: reference.set_by, time: dateTime(reference.set_at) })
      : t("health.noReference");
    const show = Boolean(reference) && this.options.canSeePictures;
    this.picture.hidden = !show;
    const src = show ? `${reference.picture}?at=${encodeURIComponent(reference.set_at)}` : "";
    if (show && src !== this.shownReference) this.picture.src = src;
    this.shownReference = src;
  }
}
