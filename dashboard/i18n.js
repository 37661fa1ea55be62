// UI strings in Simplified Chinese (default) and English, and the language switch.
// Static markup names its strings with data-i18n (text), data-i18n-label (aria-label),
// data-i18n-title and data-i18n-placeholder; code calls t(key, values).

const STRINGS = {
  zh: {
    "app.title": "政务服务大厅视频监控",
    "login.title": "登录监控平台",
    "login.subtitle": "政务服务分厅实时视频监控",
    "login.username": "用户名",
    "login.password": "密码",
    "login.submit": "登录",
    "login.busy": "正在登录…",
    "login.failed": "用户名或密码错误",
    "login.locked": "尝试次数过多，请 {s} 秒后再试",
    "login.expired": "会话已过期，请重新登录",
    "login.loggedOut": "您已安全退出",
    "login.error": "登录失败（{status}）",
    "login.network": "无法连接服务器",
    "header.alarms": "未确认告警",
    "header.logout": "退出",
    "header.lang": "English",
    "header.langLabel": "切换到英文",
    "role.viewer": "观看员",
    "role.operator": "值班员",
    "role.admin": "管理员",
    "tree.title": "分厅与摄像机",
    "tree.search": "搜索摄像机、分厅…",
    "tree.searchLabel": "搜索摄像机",
    "tree.empty": "没有匹配的摄像机",
    "tree.hallLabel": "{name}，{department}，在线 {online}/{total}",
    "tree.hallLabelPlate": "{name}（{plate}），{department}，在线 {online}/{total}",
    "tree.cameraLabel": "{name}，{hall}，{state}",
    "tree.toggle": "展开或折叠",
    "wall.title": "视频墙",
    "wall.layout": "布局",
    "wall.layoutN": "{n} 画面",
    "wall.clear": "清空",
    "wall.clearLabel": "清空视频墙",
    "wall.empty": "从左侧选择摄像机，或拖动到此处",
    "wall.playing": "WebRTC {webrtc} · MSE {mse} · MJPEG {mjpeg}",
    "tile.label": "画面 {n}：{camera}，{hall}，{state}",
    "tile.labelPlate": "画面 {n}：{camera}，{hall}（{plate}），{state}",
    "tile.labelEmpty": "画面 {n}：空闲",
    "tile.snapshot": "抓拍",
    "tile.fullscreen": "全屏",
    "tile.clear": "移除",
    "tile.sound": "声音",
    "tile.connecting": "连接中…",
    "tile.paused": "已暂停（不可见）",
    "tile.reconnect": "{s} 秒后重连…",
    "tile.denied": "无权观看此摄像机",
    "tile.offlineSince": "离线 自 {time}",
    "tile.snapshotFailed": "抓拍失败",
    "tile.mode": "播放方式",
    "tile.modeAuto": "自动",
    "tile.unsupported": "此浏览器不支持所选播放方式",
    "state.starting": "启动中",
    "state.online": "在线",
    "state.stalled": "卡顿",
    "state.offline": "离线",
    "state.disabled": "已停用",
    "state.unknown": "未知",
    "alarms.title": "告警",
    "alarms.empty": "暂无告警",
    "alarms.ack": "确认",
    "alarms.ackBy": "{user} 于 {time} 确认",
    "alarms.unavailable": "告警服务暂不可用",
    "alarms.ackFailed": "确认失败",
    "kind.offline": "离线",
    "kind.stalled": "卡顿",
    "kind.online": "恢复在线",
    "kind.recording_failed": "录像中断",
    "kind.recording_resumed": "录像恢复",
    "kind.recording_space": "录像空间不足",
    "status.cameras": "摄像机在线",
    "status.viewers": "当前观看",
    "status.health": "服务状态",
    "status.updated": "更新于 {time}",
    "status.apiDown": "无法连接服务器，正在重试…",
  },
  en: {
    "app.title": "Service Hall Video Monitoring",
    "login.title": "Sign in to monitoring",
    "login.subtitle": "Live video of the government service branch halls",
    "login.username": "Username",
    "login.password": "Password",
    "login.submit": "Sign in",
    "login.busy": "Signing in…",
    "login.failed": "Wrong username or password",
    "login.locked": "Too many attempts; try again in {s} s",
    "login.expired": "Your session has expired; please sign in again",
    "login.loggedOut": "You have signed out",
    "login.error": "Sign-in failed ({status})",
    "login.network": "Cannot reach the server",
    "header.alarms": "Unacknowledged alarms",
    "header.logout": "Sign out",
    "header.lang": "中文",
    "header.langLabel": "Switch to Chinese",
    "role.viewer": "Viewer",
    "role.operator": "Operator",
    "role.admin": "Administrator",
    "tree.title": "Halls and cameras",
    "tree.search": "Search cameras, halls…",
    "tree.searchLabel": "Search cameras",
    "tree.empty": "No matching camera",
    "tree.hallLabel": "{name}, {department}, {online} of {total} online",
    "tree.hallLabelPlate": "{name} ({plate}), {department}, {online} of {total} online",
    "tree.cameraLabel": "{name}, {hall}, {state}",
    "tree.toggle": "Expand or collapse",
    "wall.title": "Video wall",
    "wall.layout": "Layout",
    "wall.layoutN": "{n} tiles",
    "wall.clear": "Clear",
    "wall.clearLabel": "Clear the wall",
    "wall.empty": "Pick a camera on the left, or drag it here",
    "wall.playing": "WebRTC {webrtc} · MSE {mse} · MJPEG {mjpeg}",
    "tile.label": "Tile {n}: {camera}, {hall}, {state}",
    "tile.labelPlate": "Tile {n}: {camera}, {hall} ({plate}), {state}",
    "tile.labelEmpty": "Tile {n}: empty",
    "tile.snapshot": "Snapshot",
    "tile.fullscreen": "Full screen",
    "tile.clear": "Remove",
    "tile.sound": "Sound",
    "tile.connecting": "Connecting…",
    "tile.paused": "Paused (not visible)",
    "tile.reconnect": "Reconnecting in {s} s…",
    "tile.denied": "Not allowed to watch this camera",
    "tile.offlineSince": "offline since {time}",
    "tile.snapshotFailed": "Snapshot failed",
    "tile.mode": "Playback mode",
    "tile.modeAuto": "Auto",
    "tile.unsupported": "This browser cannot play the chosen mode",
    "state.starting": "starting",
    "state.online": "online",
    "state.stalled": "stalled",
    "state.offline": "offline",
    "state.disabled": "disabled",
    "state.unknown": "unknown",
    "alarms.title": "Alarms",
    "alarms.empty": "No alarms",
    "alarms.ack": "Acknowledge",
    "alarms.ackBy": "acknowledged by {user} at {time}",
    "alarms.unavailable": "Alarm service unavailable",
    "alarms.ackFailed": "Acknowledge failed",
    "kind.offline": "offline",
    "kind.stalled": "stalled",
    "kind.online": "back online",
    "kind.recording_failed": "recording stopped",
    "kind.recording_resumed": "recording again",
    "kind.recording_space": "recordings deleted for space",
    "status.cameras": "Cameras online",
    "status.viewers": "Viewers now",
    "status.health": "Service",
    "status.updated": "updated {time}",
    "status.apiDown": "Cannot reach the server; retrying…",
  },
};

const STORAGE_KEY = "hallwatch-lang";
const listeners = new Set();
let lang = localStorage.getItem(STORAGE_KEY) === "en" ? "en" : "zh";

/** The current language: "zh" or "en". */
export function currentLang() {
  return lang;
}

/** The string for key in the current language, with {name} placeholders filled from values. */
export function t(key, values = {}) {
  const text = STRINGS[lang][key] ?? STRINGS.zh[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in values ? String(values[name]) : `{${name}}`));
}

/** Local wall-clock time HH:MM:SS of an epoch in seconds. */
export function clock(epochSeconds) {
  const d = new Date(epochSeconds * 1000);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
}

/** Fill the static markup's strings under root. */
export function translate(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.title = `${t("app.title")} · Hallwatch`;
}

/** Switch language, remember it, re-translate the page and tell the listeners. */
export function setLang(next) {
  lang = next === "en" ? "en" : "zh";
  localStorage.setItem(STORAGE_KEY, lang);
  translate();
  for (const fn of listeners) fn(lang);
}

/** Call fn(lang) after every language switch (dynamic parts re-render themselves). */
export function onLangChange(fn) {
  listeners.add(fn);
}
