// Modal dialogs: a native <dialog> with a title and a close button. The browser keeps the
// focus inside while it is open and closes it on Esc; a click beside the box closes it too.
// Once closed it leaves the page, and the focus goes back to the element that had it (or,
// when a re-render replaced that element meanwhile, to the one the caller names).

import { t } from "./i18n.js";

let count = 0;

/**
 * Open a modal dialog; returns the <dialog> element.
 * @param {{title: string, body: Node[], className?: string, onClose?: () => void,
 *          returnFocus?: () => HTMLElement | null}} options
 */
export function openDialog({ title, body, className = "", onClose = () => {}, returnFocus = () => null }) {
  const opener = document.activeElement;
  count += 1;
  const dialog = document.createElement("dialog");
  dialog.className = `modal ${className}`.trim();
  dialog.setAttribute("aria-labelledby", `dialog-title-${count}`);
  const box = document.createElement("div");
  box.className = "modal-box";
  const head = document.createElement("header");
  head.className = "modal-head";
  const heading = document.createElement("h2");
  heading.id = `dialog-title-${count}`;
  heading.textContent = title;
  const close = document.createElement("button");
  close.type = "button";
  close.className = "tool-button modal-close";
  close.dataset.action = "close";
  close.textContent = t("dialog.close");
  close.addEventListener("click", () => dialog.close());
  head.append(heading, close);
  box.append(head, ...body);
  dialog.append(box);
  dialog.addEventListener("click", (ev) => {
    if (ev.target === dialog) dialog.close(); // the backdrop: the box fills the dialog
  });
  dialog.addEventListener("close", () => {
    dialog.remove();
    onClose();
    const target = opener instanceof HTMLElement && opener.isConnected ? opener : returnFocus();
    if (target) target.focus();
  });
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

/** Close every open dialog (the session ended: nothing of it may stay over the login). */
export function closeDialogs() {
  for (const dialog of document.querySelectorAll("dialog.modal[open]")) dialog.close();
}
