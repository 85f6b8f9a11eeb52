// Loads the page's Bokeh session and keeps the chart alive when its worker goes away.
//
// A session lives in one worker process. When that worker dies or is replaced (rolling
// restart), Bokeh's own reconnect can only retry the same worker, which is gone. Here the
// page notices the lost websocket, asks Flask for a fresh session of the same view on a live
// worker (/dashboards/<name>/embed, with the widgets' current values), and loads it in place.
// Navigating away is not a loss. After MAX_ATTEMPTS failures the page says so and offers a reload,
// and keeps trying every KEEP_TRYING_MS for KEEP_TRYING_FOR_MS: a whole site being restarted (a
// deploy, a host reboot) is down for longer than the backoff, and its charts should come back.
(function () {
  "use strict";
  const root = document.getElementById("dashboard");
  if (!root) return;
  const notice = document.getElementById("dashboard-notice");
  const view = document.getElementById("dashboard-view");
  const BACKOFF_MS = [0, 250, 500, 1000, 2000, 4000, 8000];
  const MAX_ATTEMPTS = BACKOFF_MS.length;
  const KEEP_TRYING_MS = 10000;
  const KEEP_TRYING_FOR_MS = 10 * 60 * 1000;  // longer than a site takes to start; then the reload is up to the user
  let leaving = false;
  let current = null;      // the Bokeh document on show
  let recovering = false;
  window.dashboardRecoveries = 0;  // read by tests and curious users

  addEventListener("pagehide", () => { leaving = true; });
  addEventListener("beforeunload", () => { leaving = true; });

  function say(text, withReload) {
    notice.hidden = !text;
    notice.textContent = text || "";
    if (withReload) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "Reload the page";
      button.addEventListener("click", () => location.reload());
      notice.append(" ", button);
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function load(embed) {
    // Bokeh's autoload.js renders next to the element with this id.
    const anchor = document.createElement("script");
    anchor.id = embed.elementid;
    anchor.type = "application/json";
    view.replaceChildren(anchor);
    root.dataset.worker = embed.worker;
    const before = new Set((window.Bokeh && window.Bokeh.documents) || []);
    const response = await fetch(embed.src, { credentials: "same-origin", headers: { "X-Bokeh-Token": embed.token } });
    if (!response.ok) throw new Error(`autoload.js answered ${response.status}`);
    const script = document.createElement("script");
    script.src = URL.createObjectURL(await response.blob());
    document.body.appendChild(script);
    // The new document appears once BokehJS has pulled it over the websocket.
    for (let waited = 0; waited < 20000; waited += 50) {
      const docs = (window.Bokeh && window.Bokeh.documents) || [];
      const doc = docs.find((d) => !before.has(d));
      if (doc) return watch(doc);
      await sleep(50);
    }
    throw new Error("the dashboard did not load");
  }

  function watch(doc) {
    current = doc;
    doc.on_event("connection_lost", () => {
      if (!leaving && doc === current) recover();
    });
  }

  function forget(doc) {
    // The lost session's document is dead: drop it from BokehJS's list, so that
    // Bokeh.documents holds the documents on show only.
    const docs = window.Bokeh && window.Bokeh.documents;
    const i = docs && doc ? docs.indexOf(doc) : -1;
    if (i >= 0) docs.splice(i, 1);
  }

  function viewState() {
    // Widget values a dashboard publishes (teams: date range and window), to open the same view.
    const model = current && current.get_model_by_name("view-state");
    if (!model || !model.text) return {};
    try { return JSON.parse(model.text); } catch (e) { return {}; }
  }

  async function fresh() {
    const url = new URL(root.dataset.embedUrl, location.href);
    for (const [key, value] of Object.entries(viewState())) {
      if (value !== null && value !== undefined) url.searchParams.set(key, value);
    }
    // The worker that failed us last: its registry row may outlive it for a moment.
    if (root.dataset.worker) url.searchParams.set("lost", root.dataset.worker);
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 401 || response.status === 403) {
      const error = new Error("Your login has ended; reload the page to log in again.");
      error.final = true;
      throw error;
    }
    if (!response.ok) throw new Error(`the site answered ${response.status}`);
    return response.json();
  }

  async function recover() {
    if (recovering) return;
    recovering = true;
    const lost = current;
    root.classList.add("reconnecting");  // the old chart stays visible, dimmed: it is not live
    say("Reconnecting…");
    let last = null;
    const until = Date.now() + KEEP_TRYING_FOR_MS;
    for (let attempt = 0; !leaving; attempt++) {
      if (attempt === MAX_ATTEMPTS) {
        say(`The chart could not be reconnected (${last ? last.message : "unknown error"}); still trying.`, true);
      }
      if (attempt >= MAX_ATTEMPTS && Date.now() + KEEP_TRYING_MS > until) break;
      await sleep(attempt < MAX_ATTEMPTS ? BACKOFF_MS[attempt] : KEEP_TRYING_MS);
      if (leaving) break;
      try {
        await load(await fresh());
        window.dashboardRecoveries += 1;
        forget(lost);
        recovering = false;
        root.classList.remove("reconnecting");
        say("");
        return;
      } catch (error) {
        last = error;
        if (error.final) break;
      }
    }
    recovering = false;
    if (!leaving) say(`The chart could not be reconnected (${last ? last.message : "unknown error"}).`, true);
  }

  load({ worker: root.dataset.worker, src: root.dataset.src, elementid: root.dataset.elementid,
         token: root.dataset.token })
    .catch(() => recover());
})();
