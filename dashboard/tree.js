// The hall tree: halls (name, second plate, department, online/total) with their cameras (state badge),
// a search filter, and keyboard navigation after the WAI-ARIA tree pattern (one tab stop,
// arrows move, Right/Left expand and collapse, Enter activates).

import { t } from "./i18n.js";

/** Camera states counted as up: online, or idle (pulled on demand, nobody watches it now). */
export const AVAILABLE = new Set(["online", "idle"]);

function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/**
 * A plate's text with one line-break opportunity, after the centre's name that every plate
 * starts with ("兴宁市政务服务中心" + "税务分厅"), so a narrow tree wraps it there, not mid-word.
 */
function setPlate(node, text) {
  const at = text.lastIndexOf("中心") + 2;
  if (at > 1 && at < text.length) node.replaceChildren(text.slice(0, at), document.createElement("wbr"), text.slice(at));
  else node.textContent = text;
}

export class HallTree {
  /**
   * @param {HTMLElement} nav the nav#hall-tree element
   * @param {HTMLInputElement} search the input#camera-search element
   * @param {{onHall: (id: string) => void, onCamera: (id: string) => void}} actions
   */
  constructor(nav, search, actions) {
    this.nav = nav;
    this.search = search;
    this.actions = actions;
    this.halls = [];
    this.cameras = new Map();
    this.collapsed = new Set();
    this.query = "";
    this.list = el("ul", "tree", { role: "tree" });
    this.emptyNote = el("p", "tree-empty", { hidden: "" });
    nav.replaceChildren(this.list, this.emptyNote);
    search.addEventListener("input", () => {
      this.query = search.value.trim().toLowerCase();
      this.filter();
    });
    search.addEventListener("keydown", (ev) => {
      if (ev.key === "ArrowDown") {
        ev.preventDefault();
        this.focus(this.visibleItems()[0]);
      } else if (ev.key === "Escape") {
        search.value = "";
        this.query = "";
        this.filter();
      }
    });
    this.list.addEventListener("keydown", (ev) => this.onKey(ev));
    this.list.addEventListener("click", (ev) => this.onClick(ev));
    this.list.addEventListener("dragstart", (ev) => {
      const item = ev.target.closest("[data-camera-item]");
      if (!item) return;
      ev.dataTransfer.setData("application/x-hallwatch-camera", item.dataset.cameraItem);
      ev.dataTransfer.setData("text/plain", item.dataset.cameraItem);
      ev.dataTransfer.effectAllowed = "copy";
    });
  }

  /** Rebuild when the set of halls or cameras changes, else update states and counts in place. */
  update(halls, cameras) {
    const shape = JSON.stringify(halls.map((h) => [h.id, h.cameras]));
    this.cameras = new Map(cameras.map((c) => [c.id, c]));
    this.halls = halls;
    if (shape !== this.shape) {
      this.shape = shape;
      this.build();
    }
    this.refresh();
  }

  build() {
    const focused = document.activeElement && this.list.contains(document.activeElement) ? document.activeElement : null;
    const keep = focused ? focused.dataset.hall || focused.dataset.cameraItem : null;
    this.list.replaceChildren();
    for (const hall of this.halls) {
      const li = el("li", "hall", { role: "none" });
      const row = el("div", "hall-row", {
        role: "treeitem",
        tabindex: "-1",
        "aria-level": "1",
        "data-hall": hall.id,
        "aria-owns": `hall-group-${hall.id}`,
      });
      const toggle = el("span", "toggle", { "aria-hidden": "true" });
      const text = el("span", "hall-text");
      const name = el("span", "hall-name");
      const plate = el("span", "hall-plate");
      const dept = el("span", "hall-dept");
      text.append(name, plate, dept);
      const count = el("span", "count");
      row.append(toggle, text, count);
      const group = el("ul", "cameras", { role: "group", id: `hall-group-${hall.id}` });
      for (const id of hall.cameras) {
        const cam = this.cameras.get(id);
        if (!cam) continue;
        const item = el("li", "camera", {
          role: "treeitem",
          tabindex: "-1",
          "aria-level": "2",
          draggable: "true",
          "data-camera-item": id,
        });
        const dot = el("span", "state-dot", { "aria-hidden": "true" });
        const camName = el("span", "camera-name");
        const badge = el("span", "state-badge");
        item.append(dot, camName, badge);
        group.append(item);
      }
      li.append(row, group);
      this.list.append(li);
    }
    const first = this.list.querySelector('[role="treeitem"]');
    const again = keep && this.list.querySelector(`[data-hall="${CSS.escape(keep)}"], [data-camera-item="${CSS.escape(keep)}"]`);
    if (again) {
      again.tabIndex = 0;
      again.focus();
    } else if (first) first.tabIndex = 0;
    this.filter();
  }

  /** States, counts and labels (every poll and after a language switch). */
  refresh() {
    for (const hall of this.halls) {
      const row = this.list.querySelector(`[data-hall="${CSS.escape(hall.id)}"]`);
      if (!row) continue;
      const cams = hall.cameras.map((id) => this.cameras.get(id)).filter(Boolean);
      const online = cams.filter((c) => AVAILABLE.has(c.live.state)).length;
      row.querySelector(".hall-name").textContent = hall.name;
      const plate = row.querySelector(".hall-plate");
      if (plate.textContent !== (hall.plate || "")) setPlate(plate, hall.plate || "");
      plate.hidden = !hall.plate;
      row.querySelector(".hall-dept").textContent = hall.department;
      const count = row.querySelector(".count");
      count.textContent = `${online}/${cams.length}`;
      count.dataset.level = online === cams.length ? "all" : online === 0 ? "none" : "some";
      row.setAttribute("aria-expanded", String(!this.collapsed.has(hall.id)));
      const labelKey = hall.plate ? "tree.hallLabelPlate" : "tree.hallLabel";
      row.setAttribute("aria-label", t(labelKey, { name: hall.name, plate: hall.plate, department: hall.department, online, total: cams.length }));
      row.title = hall.plate ? `${hall.name}\n${hall.plate}` : hall.name;
      for (const cam of cams) {
        const item = this.list.querySelector(`[data-camera-item="${CSS.escape(cam.id)}"]`);
        if (!item) continue;
        const state = cam.live.state;
        item.dataset.state = state;
        item.querySelector(".camera-name").textContent = cam.name;
        item.querySelector(".state-badge").textContent = t(`state.${state}`);
        item.setAttribute("aria-label", t("tree.cameraLabel", { name: cam.name, hall: hall.name, state: t(`state.${state}`) }));
      }
    }
    this.emptyNote.textContent = t("tree.empty");
  }

  filter() {
    const q = this.query;
    let shown = 0;
    for (const li of this.list.children) {
      const row = li.querySelector("[data-hall]");
      const hall = this.halls.find((h) => h.id === row.dataset.hall);
      const hallHit = !q || `${hall.name} ${hall.plate || ""} ${hall.department} ${hall.id}`.toLowerCase().includes(q);
      let any = false;
      for (const item of li.querySelectorAll("[data-camera-item]")) {
        const cam = this.cameras.get(item.dataset.cameraItem);
        const hit = hallHit || `${cam.name} ${cam.id}`.toLowerCase().includes(q);
        item.hidden = !hit;
        any = any || hit;
      }
      li.hidden = !(hallHit || any);
      const open = q ? true : !this.collapsed.has(hall.id);
      li.querySelector(".cameras").hidden = !open;
      row.setAttribute("aria-expanded", String(open));
      if (!li.hidden) shown += 1;
    }
    this.emptyNote.hidden = shown > 0;
    const current = this.list.querySelector('[role="treeitem"][tabindex="0"]');
    if (!current || !this.isVisible(current)) {
      for (const item of this.list.querySelectorAll('[role="treeitem"]')) item.tabIndex = -1;
      const first = this.visibleItems()[0];
      if (first) first.tabIndex = 0;
    }
  }

  isVisible(item) {
    return !item.closest("[hidden]");
  }

  visibleItems() {
    return [...this.list.querySelectorAll('[role="treeitem"]')].filter((x) => this.isVisible(x));
  }

  focus(item) {
    if (!item) return;
    for (const x of this.list.querySelectorAll('[tabindex="0"]')) x.tabIndex = -1;
    item.tabIndex = 0;
    item.focus();
  }

  setOpen(hallId, open) {
    if (open) this.collapsed.delete(hallId);
    else this.collapsed.add(hallId);
    this.filter();
  }

  activate(item) {
    if (item.dataset.hall) this.actions.onHall(item.dataset.hall);
    else if (item.dataset.cameraItem) this.actions.onCamera(item.dataset.cameraItem);
  }

  onClick(ev) {
    const item = ev.target.closest('[role="treeitem"]');
    if (!item) return;
    this.focus(item);
    if (ev.target.closest(".toggle")) {
      this.setOpen(item.dataset.hall, this.collapsed.has(item.dataset.hall));
      return;
    }
    this.activate(item);
  }

  onKey(ev) {
    const item = ev.target.closest('[role="treeitem"]');
    if (!item) return;
    const items = this.visibleItems();
    const i = items.indexOf(item);
    const hallId = item.dataset.hall;
    const parentRow = item.closest("li.hall")?.querySelector("[data-hall]");
    switch (ev.key) {
      case "ArrowDown":
        this.focus(items[Math.min(items.length - 1, i + 1)]);
        break;
      case "ArrowUp":
        if (i === 0) this.search.focus();
        else this.focus(items[i - 1]);
        break;
      case "Home":
        this.focus(items[0]);
        break;
      case "End":
        this.focus(items[items.length - 1]);
        break;
      case "ArrowRight":
        if (hallId && this.collapsed.has(hallId)) this.setOpen(hallId, true);
        else if (hallId) this.focus(items[i + 1]);
        break;
      case "ArrowLeft":
        if (hallId && !this.collapsed.has(hallId)) this.setOpen(hallId, false);
        else if (!hallId) this.focus(parentRow);
        break;
      case "Enter":
      case " ":
        this.activate(item);
        break;
      default:
        return;
    }
    ev.preventDefault();
  }
}
