// Hallwatch overview: every camera of every hall, live over WebRTC (WHEP), MJPEG as a fallback.
const API = "/api/v1";
const WHEP_TIMEOUT_MS = 6000;
let csrfToken = sessionStorage.getItem("hallwatch-csrf") || "";

class LoggedOut extends Error {}

async function getJSON(path) {
  const res = await fetch(API + path, { cache: "no-store" });
  if (res.status === 401) throw new LoggedOut();
  if (!res.ok) throw new Error(`${path}: ${res.status}`);
  return res.json();
}

function showLogin(message) {
  document.getElementById("halls").replaceChildren();
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
}

async function login(event) {
  event.preventDefault();
  const form = event.target;
  const res = await fetch(API + "/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: form.username.value, password: form.password.value }),
  });
  if (!res.ok) {
    showLogin((await res.json()).detail || `login failed (${res.status})`);
    return;
  }
  csrfToken = (await res.json()).csrf_token;
  sessionStorage.setItem("hallwatch-csrf", csrfToken);
  form.hidden = true;
  form.password.value = "";
  start();
}

function waitForIce(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 2000);
  });
}

class Player {
  constructor(tile, camera) {
    this.tile = tile;
    this.camera = camera;
    this.video = tile.querySelector("video");
    this.pc = null;
    this.location = null;
    this.mode = "";
  }

  async playWebRTC() {
    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (ev) => { this.video.srcObject = ev.streams[0] || new MediaStream([ev.track]); };
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIce(pc);
    const res = await fetch(this.camera.links.whep, {
      method: "POST",
      headers: { "Content-Type": "application/sdp", "X-CSRF-Token": csrfToken },
      body: pc.localDescription.sdp,
    });
    if (res.status !== 201) throw new Error(`WHEP ${res.status}: ${await res.text()}`);
    this.location = res.headers.get("Location");
    await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no video in time")), WHEP_TIMEOUT_MS);
      this.video.addEventListener("loadeddata", () => { clearTimeout(timer); resolve(); }, { once: true });
    });
    pc.onconnectionstatechange = () => {
      if (["failed", "closed", "disconnected"].includes(pc.connectionState)) this.restart();
    };
    this.mode = "WebRTC";
  }

  playMJPEG() {
    const img = document.createElement("img");
    img.alt = this.camera.name;
    img.src = this.camera.links.mjpeg;
    this.video.replaceWith(img);
    this.mode = "MJPEG";
  }

  async start() {
    try {
      await this.playWebRTC();
    } catch (err) {
      console.warn(this.camera.id, err);
      await this.close();
      this.playMJPEG();
    }
    this.tile.querySelector(".mode").textContent = this.mode;
  }

  async close() {
    if (this.location) {
      fetch(this.location, { method: "DELETE", headers: { "X-CSRF-Token": csrfToken } }).catch(() => {});
    }
    this.location = null;
    if (this.pc) this.pc.close();
    this.pc = null;
  }

  async restart() {
    await this.close();
    setTimeout(() => this.start(), 2000);
  }
}

function tileFor(camera) {
  const tile = document.createElement("figure");
  tile.className = "tile";
  tile.dataset.camera = camera.id;
  tile.innerHTML = `<video muted autoplay playsinline></video>
    <figcaption class="label"><span class="name"></span><span><span class="mode"></span> <span class="badge"></span></span></figcaption>`;
  tile.querySelector(".name").textContent = camera.name;
  tile.querySelector("video").setAttribute("aria-label", camera.name);
  return tile;
}

function showState(cameras) {
  let online = 0;
  for (const cam of cameras) {
    const tile = document.querySelector(`[data-camera="${cam.id}"]`);
    if (!tile) continue;
    const badge = tile.querySelector(".badge");
    badge.textContent = `${cam.live.state} · ${cam.live.fps.toFixed(0)} fps`;
    badge.className = `badge ${cam.live.state}`;
    tile.classList.toggle("offline", cam.live.state === "offline");
    if (cam.live.state === "online") online += 1;
  }
  document.getElementById("summary").textContent = `在线 ${online} / ${cameras.length}`;
}

let refresh = null;

async function main() {
  const me = await getJSON("/auth/me");
  document.getElementById("centre").textContent = `${me.centre_name || me.centre} · ${me.username}`;
  const [halls, cameras] = await Promise.all([getJSON("/halls"), getJSON("/cameras")]);
  const byId = new Map(cameras.map((c) => [c.id, c]));
  const root = document.getElementById("halls");
  for (const hall of halls) {
    const section = document.createElement("section");
    section.className = "hall";
    section.innerHTML = `<h2></h2><div class="tiles"></div>`;
    section.querySelector("h2").textContent = hall.name;
    const small = document.createElement("small");
    small.textContent = hall.department;
    section.querySelector("h2").append(small);
    for (const id of hall.cameras) {
      const tile = tileFor(byId.get(id));
      section.querySelector(".tiles").append(tile);
      new Player(tile, byId.get(id)).start();
    }
    root.append(section);
  }
  showState(cameras);
  refresh = setInterval(() => getJSON("/cameras").then(showState).catch(failed), 2000);
}

function failed(err) {
  if (err instanceof LoggedOut) {
    clearInterval(refresh);
    showLogin("请登录 · Please log in");
  } else {
    document.getElementById("summary").textContent = String(err);
  }
}

function start() {
  main().catch(failed);
}

document.getElementById("login").addEventListener("submit", login);
start();
