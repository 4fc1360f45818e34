// The course banner (visa_instance/broadcast.py): the trainer's broadcast and who is helping, on top
// of JupyterLab and the desktop page of a course instance. Text only: nothing here is parsed as HTML.
(() => {
  const tag = document.currentScript;
  const broadcastUrl = tag.dataset.broadcast;
  const roomUrl = tag.dataset.room;
  const POLL_MS = 4000;
  const bar = document.createElement("div");
  bar.id = "visa-course-banner";
  bar.setAttribute("role", "status");
  bar.hidden = true;
  bar.style.cssText = "position:fixed;top:0;left:50%;transform:translateX(-50%);z-index:100000;max-width:80vw;" +
    "background:#fff4d6;color:#4a3300;border:1px solid #e0c070;border-top:0;border-radius:0 0 6px 6px;" +
    "padding:4px 10px;font:14px system-ui,sans-serif;box-shadow:0 2px 6px rgba(0,0,0,.2)";
  const message = document.createElement("span");
  message.id = "visa-course-message";
  const helping = document.createElement("span");
  helping.id = "visa-course-helping";
  helping.style.marginLeft = "8px";
  const close = document.createElement("button");
  close.type = "button";
  close.textContent = "×";
  close.title = "Hide this message";
  close.style.cssText = "margin-left:10px;border:0;background:none;font-size:16px;cursor:pointer";
  bar.append(message, helping, close);
  let shown = null; // the broadcast on screen
  close.addEventListener("click", () => {
    if (shown) sessionStorage.setItem("visa-course-dismissed", String(shown.id));
    shown = null;
    render(null, helping.textContent);
  });

  // Same-origin GETs in "no-cors" mode: JupyterHub needs no XSRF token for them, and a first
  // visit follows the service's OAuth redirects (all on this origin) like a page would.
  async function getJson(url) {
    const r = await fetch(url, {mode: "no-cors", credentials: "same-origin", headers: {Accept: "application/json"}});
    return r.ok ? r.json() : null;
  }

  function render(broadcast, helpers) {
    shown = broadcast;
    message.textContent = broadcast ? `${broadcast.from}: ${broadcast.text}` : "";
    helping.textContent = helpers || "";
    close.hidden = !broadcast;
    bar.hidden = !broadcast && !helpers;
  }

  async function poll() {
    let broadcast = null;
    let helpers = "";
    try {
      const data = await getJson(broadcastUrl);
      const b = data && data.broadcast;
      if (b && sessionStorage.getItem("visa-course-dismissed") !== String(b.id)) broadcast = b;
    } catch (e) { /* the service restarts: try again later */ }
    try {
      const room = await getJson(roomUrl);
      const names = [...new Set(((room && room.present) || []).filter((p) => p.role === "support").map((p) => p.user))];
      if (names.length) helpers = `${names.join(", ")} ${names.length > 1 ? "are" : "is"} helping you`;
    } catch (e) { /* idem */ }
    render(broadcast, helpers);
    setTimeout(poll, POLL_MS);
  }

  const start = () => { document.body.append(bar); poll(); };
  if (document.body) start(); else document.addEventListener("DOMContentLoaded", start);
})();
