// The dashboard's entry point: login and logout, session expiry, the 2-second camera poll,
// the saved wall, the main navigation (live wall or playback), and the wiring between
// header, hall tree, wall, playback, alarms and status bar.

import { AlarmsPanel } from "./alarms.js";
import { ApiError, getJSON, onSessionExpired, postJSON, putJSON, request, setCsrfToken } from "./api.js";
import { HealthDialog, pictureFaults } from "./diagnosis.js";
import { closeDialogs } from "./dialog.js";
import { currentLang, dateTime, onLangChange, setLang, t, translate } from "./i18n.js";
import { PlaybackView } from "./playback.js";
import { StatusBar } from "./status.js";
import { HallTree } from "./tree.js";
import { LAYOUTS, Wall } from "./wall.js";

const POLL_MS = 2000;
const SAVE_DEBOUNCE_MS = 500;
const SESSION_HINT = "hallwatch-logged-in";

const $ = (selector) => document.querySelector(selector);
const dom = {
  loginView: $("#login-view"),
  login: $("#login"),
  loginError: $("#login-error"),
  app: $("#app"),
  centre: $("#centre-name"),
  user: $("#user-name"),
  role: $("#user-role"),
  clock: $("#clock"),
  alarmCount: $("#alarm-count"),
  wall: $("#wall"),
  tree: $("#hall-tree"),
  search: $("#camera-search"),
  alarmList: $("#alarm-list"),
  wallView: $("section.center"),
  playback: $("#playback"),
  navWall: $("#nav-wall"),
  navPlayback: $("#nav-playback"),
  status: $("#status"),
  toast: $("#toast"),
};

/** Everything that lives only while a user is logged in. */
let session = null;

function toast(text) {
  dom.toast.textContent = text;
  dom.toast.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => {
    dom.toast.hidden = true;
  }, 4000);
}

function showLogin(message = "") {
  dom.app.hidden = true;
  dom.loginView.hidden = false;
  dom.login.hidden = false;
  dom.loginError.textContent = message;
  dom.login.querySelector("button[type=submit]").disabled = false;
  (dom.login.username.value ? dom.login.password : dom.login.username).focus();
}

function showApp() {
  dom.loginView.hidden = true;
  dom.login.hidden = true;
  dom.app.hidden = false;
}

async function submitLogin(ev) {
  ev.preventDefault();
  const form = dom.login;
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  button.textContent = t("login.busy");
  dom.loginError.textContent = "";
  try {
    const me = await postJSON(
      "/auth/login",
      { username: form.username.value.trim(), password: form.password.value },
      { quiet401: true },
    );
    form.password.value = "";
    await enter(me);
  } catch (err) {
    let text = t("login.error", { status: err.status });
    if (err.status === 401) text = t("login.failed");
    else if (err.status === 429) text = t("login.locked", { s: err.retryAfter || 60 });
    else if (err.status === 0) text = t("login.network");
    dom.loginError.textContent = text;
  } finally {
    button.disabled = false;
    button.textContent = t("login.submit");
  }
}

function fillHeader(me) {
  dom.centre.textContent = me.centre_name || me.centre;
  dom.user.textContent = me.username;
  dom.role.textContent = t(`role.${me.role}`);
}

/** Build the logged-in view for `me` (the answer of login or /auth/me). */
async function enter(me) {
  leave();
  localStorage.setItem(SESSION_HINT, "1");
  setCsrfToken(me.csrf_token);
  const can = new Set(me.permissions || []);
  const s = { me, halls: [], cameras: [], pollTimer: null, saveTimer: null, polling: false };
  session = s;
  fillHeader(me);
  showApp();

  s.status = new StatusBar(dom.status);
  s.wall = new Wall(dom.wall, {
    canSnapshot: can.has("snapshot"),
    onChange: (state) => scheduleSave(s, state),
    toast,
    onStats: () => s.status.setWall(s.wall.label()),
    onHealth: (camera) =>
      new HealthDialog(camera, { canSetReference: can.has("acknowledge"), canSeePictures: can.has("snapshot") }).open(),
  });
  // With playback shown, the tree picks what it plays; else what the wall shows.
  const playing = () => Boolean(s.playback) && !dom.playback.hidden;
  s.tree = new HallTree(dom.tree, dom.search, {
    onHall: (id) => (playing() ? s.playback.pick(`hall:${id}`) : s.wall.fillHall(id)),
    onCamera: (id) => (playing() ? s.playback.pick(`camera:${id}`) : s.wall.place(id)),
  });
  s.alarms = new AlarmsPanel(dom.alarmList, dom.alarmCount, {
    canAck: can.has("acknowledge"),
    lookup: (id) => {
      const cam = s.cameras.find((c) => c.id === id);
      const hall = cam && s.halls.find((h) => h.id === cam.hall);
      return { camera: cam ? cam.name : id, hall: hall ? hall.name : "" };
    },
    onCamera: (id) => {
      if (s.cameras.some((c) => c.id === id)) s.wall.place(id);
    },
    canPlayback: can.has("playback"),
    onPlayback: (alarm) => showPlayback(s, (view) => view.playAlarm(alarm)),
    canSeePictures: can.has("snapshot"),
    onAlarms: (alarms) => s.wall.setPictureFaults(pictureFaults(alarms)),
    toast,
  });
  dom.navPlayback.hidden = !can.has("playback");
  if (can.has("playback")) {
    s.playback = new PlaybackView(dom.playback, {
      alarms: () => [...s.alarms.alarms.values()],
      toast,
      close: () => showWall(s),
    });
  }

  // Until the saved wall is restored, a layout click would be overwritten by it.
  const layoutButtons = [...document.querySelectorAll("[data-layout-choice]")];
  for (const b of layoutButtons) b.disabled = true;
  dom.wall.setAttribute("aria-busy", "true");
  try {
    const [halls, cameras] = await Promise.all([getJSON("/halls"), getJSON("/cameras")]);
    if (session !== s) return;
    s.halls = halls;
    s.cameras = cameras;
    s.wall.setCatalog(cameras, halls);
    if (s.playback) s.playback.setCatalog(cameras, halls);
    s.tree.update(halls, cameras);
    s.status.setCameras(cameras);
    s.wall.restore(await savedWall(s));
  } catch (err) {
    if (session === s && err.status !== 401) toast(String(err.message));
  } finally {
    for (const b of layoutButtons) b.disabled = false;
    dom.wall.removeAttribute("aria-busy");
  }
  if (session !== s) return;
  s.pollTimer = setInterval(() => poll(s), POLL_MS);
  s.status.start();
  s.alarms.start();
}

async function savedWall(s) {
  try {
    const saved = await getJSON("/layouts/current");
    if (saved && LAYOUTS.includes(saved.layout)) return saved;
  } catch (err) {
    if (err.status === 401) throw err;
  }
  // No saved wall (or no such route yet): this browser's copy, else the first hall in four tiles.
  const local = localStorage.getItem(localKey(s));
  if (local) {
    try {
      return JSON.parse(local);
    } catch {
      localStorage.removeItem(localKey(s));
    }
  }
  const first = s.halls[0];
  return { layout: 4, tiles: first ? first.cameras.slice(0, 4) : [] };
}

const localKey = (s) => `hallwatch-wall:${s.me.centre}:${s.me.username}`;

function scheduleSave(s, state) {
  clearTimeout(s.saveTimer);
  s.saveTimer = setTimeout(async () => {
    if (session !== s) return;
    try {
      await putJSON("/layouts/current", state);
    } catch (err) {
      if (err.status === 404 || err.status === 405) localStorage.setItem(localKey(s), JSON.stringify(state));
      else if (err.status !== 401) toast(`${t("wall.title")}: ${err.detail || err.message}`);
    }
  }, SAVE_DEBOUNCE_MS);
}

async function poll(s) {
  if (s.polling || session !== s) return;
  s.polling = true;
  try {
    const cameras = await getJSON("/cameras");
    if (session !== s) return;
    s.cameras = cameras;
    s.wall.setCatalog(cameras);
    if (s.playback) s.playback.setCatalog(cameras);
    s.tree.update(s.halls, cameras);
    s.status.setCameras(cameras);
  } catch (err) {
    if (err.status !== 401 && session === s) s.status.down();
  } finally {
    s.polling = false;
  }
}

/** Tear down the logged-in view: stop every stream, poll and event stream. */
function leave() {
  const s = session;
  session = null;
  if (!s) return;
  closeDialogs();
  clearInterval(s.pollTimer);
  clearTimeout(s.saveTimer);
  if (s.wall) s.wall.destroy();
  if (s.playback) s.playback.destroy();
  showView("wall");
  dom.navPlayback.hidden = true;
  if (s.alarms) s.alarms.stop();
  if (s.status) s.status.stop();
  if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
  dom.wall.replaceChildren();
  dom.tree.replaceChildren();
  dom.alarmList.replaceChildren();
  dom.alarmCount.textContent = "0";
  dom.search.value = "";
  setCsrfToken("");
}

/** Show the live wall or the playback view (the wall's tiles stop while it is hidden). */
function showView(name) {
  dom.wallView.hidden = name !== "wall";
  dom.playback.hidden = name !== "playback";
  for (const b of [dom.navWall, dom.navPlayback]) {
    if (b.dataset.view === name) b.setAttribute("aria-current", "page");
    else b.removeAttribute("aria-current");
  }
}

function showPlayback(s, then = (view) => view.open()) {
  if (session !== s || !s.playback) return;
  showView("playback");
  then(s.playback);
}

function showWall(s) {
  if (session !== s) return;
  if (s.playback) s.playback.close();
  showView("wall");
  dom.navPlayback.focus();
}

async function logout() {
  const had = session;
  if (had && had.wall) had.wall.stopAll(); // free the WHEP sessions while the login still holds
  try {
    await request("/auth/logout", { method: "POST", quiet401: true });
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
  }
  leave();
  localStorage.removeItem(SESSION_HINT);
  showLogin(t("login.loggedOut"));
}

onSessionExpired(() => {
  if (!session) return;
  leave();
  localStorage.removeItem(SESSION_HINT);
  showLogin(t("login.expired"));
});

function wireStatic() {
  dom.login.addEventListener("submit", submitLogin);
  const toggleLang = () => setLang(currentLang() === "zh" ? "en" : "zh");
  $("#lang").addEventListener("click", toggleLang);
  $("#login-lang").addEventListener("click", toggleLang);
  $("#logout").addEventListener("click", () => logout());
  $("#wall-clear").addEventListener("click", () => session && session.wall.clear());
  dom.navWall.addEventListener("click", () => session && showWall(session));
  dom.navPlayback.addEventListener("click", () => session && showPlayback(session));
  for (const b of document.querySelectorAll("[data-layout-choice]")) {
    const n = Number(b.dataset.layoutChoice);
    const side = Math.sqrt(n);
    const cells = [];
    for (let r = 0; r < side; r += 1) {
      for (let c = 0; c < side; c += 1) {
        const size = 16 / side;
        cells.push(`<rect x="${4 + c * size + 0.6}" y="${4 + r * size + 0.6}" width="${size - 1.2}" height="${size - 1.2}" rx="0.8"/>`);
      }
    }
    b.innerHTML = `<svg viewBox="0 0 24 24" aria-hidden="true" fill="currentColor">${cells.join("")}</svg><span>${n}</span>`;
    b.addEventListener("click", () => session && session.wall.setLayout(n));
  }
  onLangChange(() => {
    labelLayouts();
    if (!session) return;
    fillHeader(session.me);
    session.tree.refresh();
    session.wall.relabel();
    session.alarms.render();
    if (session.playback) session.playback.relabel();
    session.status.setWall(session.wall.label());
  });
  window.addEventListener("pagehide", () => {
    if (session && session.wall) session.wall.stopAll();
  });
  const tick = () => {
    dom.clock.textContent = dateTime(new Date());
  };
  tick();
  setInterval(tick, 1000);
}

function labelLayouts() {
  for (const b of document.querySelectorAll("[data-layout-choice]")) {
    const label = t("wall.layoutN", { n: b.dataset.layoutChoice });
    b.setAttribute("aria-label", label);
    b.title = label;
  }
}

window.hallwatch = Object.freeze({
  /** Diagnostics of the wall's tiles: index, camera, mode, state, framesDecoded, width, height (and more). */
  tiles: () => (session && session.wall ? session.wall.tilesInfo() : []),
  /** The playback view: open, cameras, moment (ms), speed, paused, marks and each stream's state. */
  playback: () => (session && session.playback ? session.playback.info() : null),
  /** The logged-in user, or null. */
  user: () => (session ? { username: session.me.username, centre: session.me.centre, role: session.me.role } : null),
});

async function main() {
  translate();
  labelLayouts();
  wireStatic();
  // Ask who is logged in only when this browser logged in before: a first visit goes
  // straight to the form instead of provoking a 401.
  if (!localStorage.getItem(SESSION_HINT)) {
    showLogin("");
    return;
  }
  try {
    const me = await request("/auth/me", { quiet401: true });
    await enter(me);
  } catch {
    localStorage.removeItem(SESSION_HINT);
    showLogin("");
  }
}

main();
