// The desktop page's clipboard, both ways, for members who may use the desktop (OWNER, USER,
// SUPPORT). View-only members (GUEST, a USER while the room is locked) get none: their page
// shows no clipboard, and the Jupyter server drops the clipboard messages of their connection in
// both directions (visa_instance/rfb_filter.py), whatever the page does.
//
// Desktop → browser: Xvnc sends what is copied in the desktop (CLIPBOARD, or a selection made
// with the mouse); noVNC raises "clipboard". The text goes to the browser's clipboard where the
// browser lets a page write it (navigator.clipboard: a secure context, the page focused), and
// always into the clipboard panel, where it can be copied by hand.
// Browser → desktop: text typed or pasted into the panel is sent as it changes; where the
// browser lets the page read its clipboard, what was copied elsewhere is sent when the person
// comes back to the desktop (the window or the screen gets focus).

const SEND_DELAY_MS = 300; // the panel's text is sent once typing pauses

export function setupClipboard({ desktop, button, panel, text, note }) {
  const clip = {
    received: null, // the last text from the desktop
    sent: null, // the last text sent to the desktop
    browserSeen: null, // the browser's clipboard when last read or written here
    browserWrites: 0, // how many received texts reached navigator.clipboard
    note: "",
  };
  desktop.clipboard = clip;
  let sendTimer = null;

  const allowed = () => !desktop.viewOnly && desktop.rfb && desktop.state === "connected";

  function setNote(message) {
    clip.note = message;
    note.textContent = message;
  }

  function send(value) {
    if (!allowed() || value === clip.sent || value === clip.received) return;
    desktop.rfb.clipboardPasteFrom(value);
    clip.sent = value;
    setNote("Sent to the desktop: paste it there.");
  }

  // called by desktop.js for each new RFB client
  function attach(rfb) {
    rfb.addEventListener("clipboard", async (event) => {
      if (desktop.viewOnly) return; // never expected (the server withholds it): nothing is shown
      const value = event.detail.text;
      clip.received = value;
      text.value = value;
      try {
        if (!navigator.clipboard || !document.hasFocus()) throw new Error("not allowed here");
        await navigator.clipboard.writeText(value);
        clip.browserSeen = value;
        clip.browserWrites += 1;
        setNote("Copied from the desktop to your clipboard.");
      } catch (e) {
        setNote("Copied from the desktop: select the text here and copy it (Ctrl+C).");
        if (panel.hidden) toggle(true);
      }
    });
  }

  // What was copied in another tab or program, once the person returns to the desktop. Only a
  // change is sent: an old browser clipboard must not overwrite a newer copy made in the desktop
  // (one the page could not write to the browser's clipboard).
  async function pullBrowserClipboard() {
    if (!allowed() || !navigator.clipboard || !navigator.clipboard.readText) return;
    try {
      const value = await navigator.clipboard.readText();
      if (value === clip.browserSeen) return;
      clip.browserSeen = value;
      if (value) send(value);
    } catch (e) {
      /* not permitted: the panel is the way */
    }
  }

  function toggle(show = panel.hidden) {
    panel.hidden = !show;
    button.setAttribute("aria-expanded", String(show));
  }

  // View-only members see no clipboard at all.
  function follow() {
    button.hidden = desktop.viewOnly;
    if (desktop.viewOnly) {
      toggle(false);
      text.value = "";
      clip.received = null;
    }
  }

  button.addEventListener("click", () => toggle());
  text.addEventListener("input", () => {
    clearTimeout(sendTimer);
    sendTimer = setTimeout(() => send(text.value), SEND_DELAY_MS);
  });
  window.addEventListener("focus", pullBrowserClipboard);
  clip.pull = pullBrowserClipboard; // for tests: awaitable
  return { attach, follow, pullBrowserClipboard };
}
