// The VISA desktop page: one noVNC RFB client filling the window, a status bar, reconnects.
// noVNC is served by this Jupyter server (visa/novnc/), never from a CDN.
import RFB from "../novnc/core/rfb.js";

const config = JSON.parse(document.getElementById("visa-desktop-config").textContent);
const screen = document.getElementById("visa-screen");
const stateEl = document.getElementById("visa-state");
const stateText = document.getElementById("visa-state-text");
const reconnectButton = document.getElementById("visa-reconnect");
const fullscreenButton = document.getElementById("visa-fullscreen");

const AUTO_RETRIES = 3; // drops retried on their own (1 s, 2 s, 4 s), then the user decides

// Exposed for tests and for the humans debugging a stuck session.
const desktop = {
  state: "connecting", // 'connecting' | 'connected' | 'disconnected'
  url: websocketUrl(),
  viewOnly: Boolean(config.viewOnly),
  connects: 0,
  retries: 0,
  lastDisconnect: null,
  securityFailure: null,
  rfb: null,
  reconnect: () => connect(),
};
window.visaDesktop = desktop;

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
    rfb = new RFB(screen, desktop.url, { shared: true });
  } catch (e) {
    onDisconnect(String(e));
    return;
  }
  desktop.rfb = rfb;
  // The hub chose the resolution and the session is shared: scale to the window, never resize
  // the remote screen under the other viewers.
  rfb.scaleViewport = true;
  rfb.resizeSession = false;
  rfb.clipViewport = false;
  rfb.focusOnClick = true;
  rfb.viewOnly = desktop.viewOnly;
  rfb.background = "#202124";
  rfb.addEventListener("connect", () => {
    if (desktop.rfb !== rfb) return;
    desktop.connects += 1;
    desktop.retries = 0;
    setState("connected", desktop.viewOnly ? "Connected (view only)" : "Connected");
    rfb.focus();
  });
  rfb.addEventListener("disconnect", (event) => {
    if (desktop.rfb !== rfb) return;
    onDisconnect(event.detail.clean ? "closed" : "connection lost");
  });
  rfb.addEventListener("securityfailure", (event) => {
    desktop.securityFailure = String(event.detail.reason || event.detail.status);
  });
  rfb.addEventListener("desktopname", (event) => {
    if (event.detail.name) document.title = `${event.detail.name} – Desktop`;
  });
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

reconnectButton.addEventListener("click", () => {
  desktop.retries = 0;
  connect();
});
fullscreenButton.addEventListener("click", () => {
  if (document.fullscreenElement) document.exitFullscreen();
  else document.documentElement.requestFullscreen().catch(() => {});
});

connect();
