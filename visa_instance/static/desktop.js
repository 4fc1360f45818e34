// The VISA desktop page: one noVNC RFB client filling the window, a status bar, reconnects,
// the clipboard (clipboard.js). noVNC is served by this Jupyter server (visa/novnc/), never from a CDN.
import RFB from "../novnc/core/rfb.js";
import { setupClipboard } from "./clipboard.js";

const config = JSON.parse(document.getElementById("visa-desktop-config").textContent);
const screen = document.getElementById("visa-screen");
const stateEl = document.getElementById("visa-state");
const stateText = document.getElementById("visa-state-text");
const reconnectButton = document.getElementById("visa-reconnect");
const fullscreenButton = document.getElementById("visa-fullscreen");
const fitButton = document.getElementById("visa-fit");
const peopleEl = document.getElementById("visa-people");
const promptFrame = document.getElementById("visa-prompt");
const bannerFrame = document.getElementById("visa-ops-banner");

const AUTO_RETRIES = 3; // drops retried on their own (1 s, 2 s, 4 s), then the user decides
const CLOSE_IDLE = 4408; // the server closed an input-less connection (VisaDesktop.idle_disconnect)
const BANNER_REFRESH_MS = 15 * 60 * 1000; // warnings move by hours; a reload must not cost the hub
const FIT_KEY = "visa-desktop-fit"; // this browser's choice: the screen follows the window, or not

// Exposed for tests and for the humans debugging a stuck session.
const desktop = {
  state: "connecting", // 'connecting' | 'connected' | 'disconnected'
  url: websocketUrl(),
  viewOnly: Boolean(config.viewOnly),
  connects: 0,
  retries: 0,
  lastDisconnect: null,
  lastClose: null, // {code, reason} of the websocket's last close
  banner: "none", // 'none' (no ops service) | 'empty' | 'shown'
  securityFailure: null,
  rfb: null,
  room: null, // {role, level, view_only, owner_present, ...} from visa/api/room
  promptShown: false,
  fit: Boolean(config.fitsWindow) && localStorage.getItem(FIT_KEY) !== "false",
  clipboard: null, // set by clipboard.js
  reconnect: () => connect(),
};
window.visaDesktop = desktop;

const clipboard = setupClipboard({
  desktop,
  button: document.getElementById("visa-clipboard-button"),
  panel: document.getElementById("visa-clipboard"),
  text: document.getElementById("visa-clipboard-text"),
  note: document.getElementById("visa-clipboard-note"),
});

function websocketUrl() {
  const base = new URL(config.baseUrl, window.location.href);
  const url = new URL(config.websocketPath, base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

function setState(state, text) {
  desktop.state = state;
  stateEl.dataset.state = state;
  stateText.textContent = text;
  reconnectButton.hidden = state !== "disconnected";
}

let retryTimer = null;

function connect() {
  clearTimeout(retryTimer);
  if (desktop.rfb) {
    const old = desktop.rfb;
    desktop.rfb = null; // its disconnect event must not trigger a retry
    try { old.disconnect(); } catch (e) { /* already closed */ }
  }
  setState("connecting", "Connecting…");
  let rfb;
  try {
    // our own websocket, so the page can read the close code and reason (noVNC does not say)
    const ws = new WebSocket(desktop.url);
    ws.addEventListener("close", (event) => { desktop.lastClose = { code: event.code, reason: event.reason }; });
    rfb = new RFB(screen, ws, { shared: true });
  } catch (e) {
    onDisconnect(String(e));
    return;
  }
  desktop.rfb = rfb;
  rfb.clipViewport = false;
  rfb.focusOnClick = true;
  rfb.viewOnly = desktop.viewOnly;
  rfb.background = "#202124";
  // JPEG quality level 2 (noVNC's default: 6; it was 4) for the
  // picture-like areas Tight sends as JPEG while they change: text stays lossless and TigerVNC
  // resends lossy areas losslessly once they are still, so a still plot is exact. bench/desktop.py
  // (a panned matplotlib image, docs/desktop.md): 4-26 % (median 15 %) fewer bytes per changed
  // pixel than level 4 in the same runs (0.88-1.13 bit); the moving image is a little blocky in
  // smooth gradients, its rings and all text stay readable. Compression: noVNC's 2 (6 and 9
  // were not shown better).
  rfb.qualityLevel = 2;
  applyFit(rfb);
  clipboard.attach(rfb);
  rfb.addEventListener("connect", () => {
    if (desktop.rfb !== rfb) return;
    desktop.connects += 1;
    desktop.retries = 0;
    setState("connected", connectedText());
    rfb.focus();
  });
  rfb.addEventListener("disconnect", (event) => {
    if (desktop.rfb !== rfb) return;
    const close = desktop.lastClose;
    if (close && close.code === CLOSE_IDLE) {
      onIdleClose(close.reason || "no input for a long time");
      return;
    }
    onDisconnect(event.detail.clean ? "closed" : "connection lost");
  });
  rfb.addEventListener("securityfailure", (event) => {
    desktop.securityFailure = String(event.detail.reason || event.detail.status);
  });
  rfb.addEventListener("desktopname", (event) => {
    if (event.detail.name) document.title = `${event.detail.name} – Desktop`;
  });
}

// The remote screen fills the window: with "fit" the session's size follows the window (Xvnc
// resizes its screen through ExtendedDesktopSize/RandR; noVNC asks on connect and after each
// window resize), otherwise it keeps the size chosen for the instance. Either way the picture is
// scaled to the window whenever the sizes differ: a view-only member cannot resize the shared
// screen, and of two members with fit on, the last window resized sets it.
function applyFit(rfb) {
  rfb.scaleViewport = true;
  rfb.resizeSession = desktop.fit; // noVNC's setter asks for the window's size at once
  fitButton.textContent = desktop.fit ? "Fixed size" : "Fit window";
  fitButton.title = desktop.fit
    ? `Keep the screen size chosen for this instance (${config.screen || "its default"})`
    : "Make the desktop's screen the size of this window";
}

// Back to the instance's chosen screen size. noVNC has no public call for a given size: its own
// message builder, as its resizeSession uses it.
function restoreChosenSize(rfb) {
  const m = /^(\d+)x(\d+)$/.exec(config.screen || "");
  if (!m || desktop.viewOnly || !rfb._supportsSetDesktopSize) return;
  RFB.messages.setDesktopSize(rfb._sock, Number(m[1]), Number(m[2]), rfb._screenID, rfb._screenFlags);
}

function onDisconnect(reason) {
  desktop.rfb = null;
  desktop.lastDisconnect = reason;
  // Clean or not, a drop we did not ask for is retried a few times: the desktop may be
  // restarting (jupyter-server-proxy restarts a crashed launcher) or the network blinked.
  if (desktop.retries < AUTO_RETRIES) {
    const delay = 1000 * 2 ** desktop.retries;
    desktop.retries += 1;
    setState("disconnected", `Disconnected (${reason}); retrying in ${delay / 1000} s`);
    retryTimer = setTimeout(connect, delay);
    return;
  }
  setState("disconnected", `Disconnected (${reason})`);
}

// Closed for lack of input: not a fault, so no automatic retry; the desktop itself keeps running.
function onIdleClose(reason) {
  desktop.rfb = null;
  desktop.lastDisconnect = reason;
  setState("disconnected", `Disconnected: ${reason}. Your desktop is still running: Reconnect to continue.`);
}

function connectedText() {
  if (!desktop.viewOnly) return "Connected";
  const room = desktop.room;
  if (room && room.role === "user" && !room.owner_present) return "Connected (view only: the owner is away)";
  return "Connected (view only)";
}

// The room: the server decides what each person may do and enforces it (input from view-only
// members is dropped on the websocket); the page follows, so people see why.
async function pollRoom() {
  if (!config.roomPath) return;
  try {
    const r = await fetch(new URL(config.roomPath, new URL(config.baseUrl, window.location.href)),
      { credentials: "same-origin", headers: { "X-XSRFToken": config.xsrf || "" } });
    if (!r.ok) return;
    const room = await r.json();
    desktop.room = room;
    if (room.view_only !== desktop.viewOnly) {
      desktop.viewOnly = room.view_only;
      if (desktop.rfb) desktop.rfb.viewOnly = room.view_only;
    }
    followViewOnly();
    stateEl.dataset.viewOnly = String(desktop.viewOnly);
    if (desktop.state === "connected") stateText.textContent = connectedText();
    if (desktop.state === "disconnected" && room.level === "none") {
      stateText.textContent = room.role && !room.owner_present
        ? "Disconnected: the owner is away and the room is closed"
        : "Disconnected: your access to this desktop has ended";
    }
    if (room.is_owner) {
      const others = (room.present || []).filter((p) => p.user !== room.owner);
      peopleEl.hidden = others.length === 0;
      peopleEl.textContent = others.length ? `· with ${[...new Set(others.map((p) => p.user))].join(", ")}` : "";
      peopleEl.title = others.map((p) => `${p.user} (${p.role || "?"}, ${p.channel}${p.view_only ? ", view only" : ""})`).join("\n");
      // The prompt (a page of the collaboration service) stays loaded, hidden until a request
      // comes: its poll, signed in to the service as the owner, is how the service knows the
      // owner is here (support staff must ask then); the instance's own reports do not decide it.
      if (config.collabPrompt && !promptFrame.src) promptFrame.src = config.collabPrompt;
      if (room.pending_requests > 0 && config.collabPrompt) showPrompt();
    }
  } catch (e) {
    /* the next poll will tell */
  }
}

function showPrompt() {
  if (desktop.promptShown) return;
  desktop.promptShown = true;
  if (!promptFrame.src) promptFrame.src = config.collabPrompt;
  promptFrame.hidden = false;
}

window.addEventListener("message", (event) => {
  if (event.origin !== window.location.origin || !event.data || !("visaCollabPending" in event.data)) return;
  const pending = Number(event.data.visaCollabPending);
  desktop.promptShown = pending > 0;
  promptFrame.hidden = pending === 0;
});

// View-only members can neither resize the shared screen nor use the clipboard: no controls.
function followViewOnly() {
  fitButton.hidden = desktop.viewOnly || !config.fitsWindow;
  clipboard.follow();
}

fitButton.addEventListener("click", () => {
  desktop.fit = !desktop.fit;
  localStorage.setItem(FIT_KEY, String(desktop.fit));
  if (!desktop.rfb) return;
  applyFit(desktop.rfb);
  if (!desktop.fit) restoreChosenSize(desktop.rfb);
});

reconnectButton.addEventListener("click", () => {
  desktop.retries = 0;
  connect();
});
fullscreenButton.addEventListener("click", () => {
  if (document.fullscreenElement) document.exitFullscreen();
  else document.documentElement.requestFullscreen().catch(() => {});
});

// The operations banner (notifications, this instance's lifetime or inactivity warning, "Ask for
// more time"): a page of the visa-ops service, same origin. Shown only when the service answers
// and has something to say; its height follows its content.
let bannerTimer = null;

// Is there an ops service? Asked without following redirects: a fetch is refused the service's
// login cookie (no XSRF header), so following would loop through the hub's OAuth; the service
// answers a redirect (to log in) or the page, a hub without it answers 404. The iframe itself
// navigates, logs in through the hub and shows the page.
async function loadBanner() {
  let r;
  try {
    r = await fetch(config.opsBanner, { credentials: "same-origin", redirect: "manual" });
  } catch (e) {
    return; // the next refresh will tell
  }
  if (!r.ok && r.type !== "opaqueredirect") { // 404: no ops service on this hub; stays hidden
    desktop.banner = "none";
    bannerFrame.hidden = true;
    if (r.status === 404) clearInterval(bannerTimer);
    return;
  }
  if (document.activeElement === bannerFrame) return; // never wipe a request being typed
  bannerFrame.src = config.opsBanner;
}

function fitBanner() {
  const doc = bannerFrame.contentDocument;
  if (!doc || doc.URL === "about:blank") return; // the empty frame before its page: nothing known yet
  const body = doc && doc.body;
  const nav = doc && bannerFrame.contentWindow.performance.getEntriesByType("navigation")[0];
  const failed = nav && nav.responseStatus >= 400; // an error page is not a banner
  const empty = failed || !body || !body.innerText.trim();
  desktop.banner = empty ? "empty" : "shown";
  bannerFrame.hidden = empty;
  if (!empty) bannerFrame.style.height = `${Math.min(doc.documentElement.scrollHeight, window.innerHeight * 0.4)}px`;
}

bannerFrame.addEventListener("load", () => {
  fitBanner();
  const body = bannerFrame.contentDocument && bannerFrame.contentDocument.body;
  if (body && window.ResizeObserver) new ResizeObserver(fitBanner).observe(body); // e.g. "Sent" after the form
});

// back to the desktop from elsewhere: what was copied there (where the browser lets the page read it)
screen.addEventListener("pointerdown", clipboard.pullBrowserClipboard);
followViewOnly();
connect();
pollRoom();
setInterval(pollRoom, 2000);
if (config.opsBanner) {
  loadBanner();
  bannerTimer = setInterval(loadBanner, BANNER_REFRESH_MS);
}
