// The admin console: polls /admin/state once a second and redraws its tables; Cancel POSTs
// /admin/queries/<id>/cancel with the page's CSRF token. Text goes in with textContent only.
(function () {
  "use strict";
  var root = document.getElementById("admin-console");
  var stateUrl = root.dataset.stateUrl, cancelUrl = root.dataset.cancelUrl;
  var pollMs = parseInt(root.dataset.pollMs, 10) || 1000;
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var status = document.getElementById("admin-status");

  function duration(s) {
    if (s === null || s === undefined) return "–";
    if (s < 60) return s.toFixed(1) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  function bytes(n) { return n === null || n === undefined ? "–" : (n / 1048576).toFixed(0) + " MB"; }
  function num(v) { return v === null || v === undefined ? "–" : String(v); }

  function row(cells, attrs) {
    var tr = document.createElement("tr");
    Object.keys(attrs || {}).forEach(function (k) { tr.setAttribute(k, attrs[k]); });
    cells.forEach(function (c) {
      var td = document.createElement("td");
      if (c instanceof Node) td.appendChild(c); else td.textContent = c;
      if (typeof c === "string" && /^([0-9]+(\.[0-9]+)?|–)( s| MB)?$/.test(c)) td.className = "num";
      tr.appendChild(td);
    });
    return tr;
  }
  function fill(id, rows, empty, columns) {
    var body = document.querySelector("#" + id + " tbody");
    body.replaceChildren.apply(body, rows.length ? rows : [emptyRow(empty, columns)]);
  }
  function emptyRow(text, columns) {
    var tr = document.createElement("tr"), td = document.createElement("td");
    td.colSpan = columns; td.className = "empty"; td.textContent = text;
    tr.appendChild(td);
    return tr;
  }

  function cancelButton(q) {
    var b = document.createElement("button");
    b.type = "button"; b.className = "cancel-query"; b.textContent = "Cancel";
    b.dataset.query = q.id;
    b.addEventListener("click", function () { cancel(q.id, b); });
    return b;
  }

  function cancel(id, button) {
    button.disabled = true;
    var result = document.getElementById("cancel-result");
    fetch(cancelUrl.replace("REF", encodeURIComponent(id)), {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRFToken": csrf, "Accept": "application/json" }
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        result.textContent = r.status === 202 ? "Cancelling " + id + "." : (body.reason || ("HTTP " + r.status));
        result.dataset.status = String(r.status);
      });
    }).catch(function () { result.textContent = "The cancel did not reach the site."; button.disabled = false; });
  }

  function render(s) {
    var alive = s.workers.filter(function (w) { return w.alive; });
    document.getElementById("sum-hosts").textContent = String(s.hosts.length);
    document.getElementById("sum-workers").textContent = String(alive.length);
    document.getElementById("sum-sessions").textContent =
      String(alive.reduce(function (n, w) { return n + w.sessions; }, 0));
    document.getElementById("sum-running").textContent = String(s.counts.running);
    document.getElementById("sum-queued").textContent = String(s.counts.queued);
    document.getElementById("sum-live").textContent = String(s.live_updates_per_s);

    fill("workers", s.workers.map(function (w) {
      return row([w.worker, w.host, String(w.port), String(w.pid), duration(w.uptime_s), String(w.sessions),
                  num(w.queries_running), num(w.queries_queued), bytes(w.rss_bytes), num(w.live_updates_per_s),
                  duration(w.heartbeat_age_s) + (w.alive ? "" : " (stale)") + (w.ready ? "" : " (starting)")],
                 { "data-worker": w.worker, "class": w.alive ? "" : "stale" });
    }), "No worker is registered.", 11);

    fill("queries", s.queries.map(function (q) {
      var what = q.state === "queued" ? "queued, " + q.position + (q.position === 1 ? "st" : "th") + " in the user's line"
                                      : "running";
      return row([q.id, what, q.users.join(", ") || "–", q.dashboard || "–", q.label || "–", q.worker,
                  duration(q.elapsed_s), String(q.sessions), q.cache_ttl > 0 ? "yes, " + q.cache_ttl + " s" : "no",
                  cancelButton(q)], { "data-query": q.id, "data-state": q.state });
    }), "No query is running or queued.", 10);

    var names = Object.keys(s.dashboards);
    fill("dashboards", names.map(function (n) { return row([n, String(s.dashboards[n])]); }),
         "No open sessions.", 2);

    fill("errors", s.errors.map(function (e) {
      return row([new Date(e.at * 1000).toLocaleTimeString(), e.worker, e.dashboard, e.message]);
    }), "No errors reported recently.", 4);

    status.className = "";
    status.textContent = "Live: updated " + new Date().toLocaleTimeString() + ", every " + pollMs / 1000 + " s.";
  }

  function poll() {
    fetch(stateUrl, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(render)
      .catch(function (err) {
        status.className = "down";
        status.textContent = "Not updating (" + err.message + "); retrying.";
      })
      .then(function () { setTimeout(poll, pollMs); });
  }
  poll();
})();
