/* jarvis's web page, kept current from the event stream without a reload.

   The server renders every page whole (it reads without this script). Here:
   - <main data-events="URL" data-kinds="..."> opens an EventSource on URL; each SSE
     frame names its kind as its event type, so a listener is added per kind.
   - Regions marked data-live are re-read from the server (the same URL, parsed, each
     region swapped by id) at most every REFRESH_MS after an event: the server stays
     the one place that renders and escapes.
   - On a deployment's page the #timeline is driven by the events themselves: a step
     or undo that starts adds a row whose bar grows on a timer, one that ends fixes its
     bar. When the stream (re)opens, the timeline is re-read once, so an event between
     the page's render and the stream's start is not missed; events meanwhile are kept
     and applied after. Times are the server's (data-now fixes the browser's skew). */
(function () {
  "use strict";
  var REFRESH_MS = 250;
  var TICK_MS = 200;
  var TICKS = 6;
  var main = document.querySelector("main[data-events]");
  if (!main || !window.EventSource || !window.fetch || !window.DOMParser) {
    return;
  }
  var svgNS = "http://www.w3.org/2000/svg";
  var tl = document.getElementById("timeline");
  var skew = tl ? Number(tl.dataset.now) - Date.now() / 1000 : 0;
  var syncing = false;
  var held = [];
  var refreshTimer = null;
  var refreshAgain = false;
  var refreshing = false;

  function now() { return Date.now() / 1000 + skew; }

  function secondsText(s) {
    if (s <= 0) { return "0s"; }
    if (s < 0.1) { return (s * 1000).toFixed(0) + "ms"; }
    if (s < 10) { return s.toFixed(1) + "s"; }
    if (s < 60) { return s.toFixed(0) + "s"; }
    var total = Math.round(s);
    var secs = total % 60;
    return Math.floor(total / 60) + "m" + (secs < 10 ? "0" : "") + secs + "s";
  }

  function pct(fraction) { return (Math.max(fraction, 0) * 100).toFixed(3) + "%"; }

  function fetchPage() {
    return fetch(location.href, {headers: {"Accept": "text/html"}, cache: "no-store"})
      .then(function (answer) {
        if (!answer.ok) { throw new Error("HTTP " + answer.status); }
        return answer.text();
      })
      .then(function (text) { return new DOMParser().parseFromString(text, "text/html"); });
  }

  /* -- data-live regions ----------------------------------------------------------------- */
  function swapRegions(doc) {
    document.querySelectorAll("[data-live][id]").forEach(function (region) {
      var fresh = doc.getElementById(region.id);
      if (!fresh) { return; }
      var open = {};
      region.querySelectorAll("details[open][id]").forEach(function (d) { open[d.id] = true; });
      region.innerHTML = fresh.innerHTML;
      region.querySelectorAll("details[id]").forEach(function (d) {
        if (open[d.id]) { d.open = true; }
      });
    });
  }

  function refresh() {
    if (refreshing) { refreshAgain = true; return; }
    refreshing = true;
    fetchPage().then(swapRegions).catch(function () { /* the next event tries again */ })
      .then(function () {
        refreshing = false;
        if (refreshAgain) { refreshAgain = false; later(); }
      });
  }

  function later() {
    if (refreshTimer === null) {
      refreshTimer = setTimeout(function () { refreshTimer = null; refresh(); }, REFRESH_MS);
    }
  }

  /* -- the timeline ---------------------------------------------------------------------- */
  function rows() { return tl.querySelectorAll(".rows .row"); }

  function tickStep(span) {
    var magnitude = Math.pow(10, Math.floor(Math.log10(span / TICKS)));
    var m = [1, 2, 5, 10].find(function (f) { return f * magnitude * TICKS >= span; });
    return m * magnitude;
  }

  function drawAxis(span) {
    var svg = tl.querySelector(".axis svg");
    if (!svg) { return; }
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    var step = tickStep(span);
    for (var at = 0; at <= span + 1e-9; at += step) {
      var x = pct(at / span);
      var line = document.createElementNS(svgNS, "line");
      line.setAttribute("x1", x); line.setAttribute("x2", x);
      line.setAttribute("y1", "14"); line.setAttribute("y2", "20");
      var text = document.createElementNS(svgNS, "text");
      text.setAttribute("x", x); text.setAttribute("y", "11");
      text.setAttribute("text-anchor", at === 0 ? "start" : "middle");
      text.textContent = secondsText(at);
      svg.appendChild(line); svg.appendChild(text);
    }
  }

  function layout() {
    var all = rows();
    var t0 = Number(tl.dataset.t0);
    var end = tl.dataset.end ? Number(tl.dataset.end) : now();
    var running = false;
    all.forEach(function (row) {
      if (row.dataset.end) {
        end = Math.max(end, Number(row.dataset.end));
      } else {
        running = true;
      }
    });
    if (running) { end = Math.max(end, now()); }
    var span = Math.max(end - t0, 0.001);
    all.forEach(function (row) {
      var start = Number(row.dataset.start);
      var finish = row.dataset.end ? Number(row.dataset.end) : now();
      var bar = row.querySelector(".bar");
      bar.setAttribute("x", pct((start - t0) / span));
      bar.setAttribute("width", pct(Math.max((finish - start) / span, 0.004)));
      row.querySelector(".secs").textContent =
        secondsText(finish - start) + (row.dataset.end ? "" : "…");
    });
    drawAxis(span);
  }

  function runningRow(kind, name) {
    var found = null;
    rows().forEach(function (row) {
      if (row.dataset.kind === kind && row.dataset.name === name && !row.dataset.end) {
        found = row;
      }
    });
    return found;
  }

  function lastRow(kind, name) {
    var found = null;
    rows().forEach(function (row) {
      if (row.dataset.kind === kind && row.dataset.name === name) { found = row; }
    });
    return found;
  }

  function addRow(kind, event, start) {
    var row = document.createElement("div");
    row.className = "row " + kind;
    row.dataset.kind = kind;
    row.dataset.name = event.step || "";
    row.dataset.start = String(start);
    var label = document.createElement("span");
    label.className = "label";
    label.textContent = kind === "undo" ? "undo " + event.step
      : (typeof event.index === "number" ? event.index + " " : "") + event.step;
    var svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("class", "track");
    var bar = document.createElementNS(svgNS, "rect");
    bar.setAttribute("class", "bar " + kind + " running");
    bar.setAttribute("y", "2"); bar.setAttribute("height", "14");
    svg.appendChild(bar);
    var secs = document.createElement("span");
    secs.className = "secs";
    row.appendChild(label); row.appendChild(svg); row.appendChild(secs);
    tl.querySelector(".rows").appendChild(row);
    var empty = tl.querySelector(".empty");
    if (empty) { empty.remove(); }
    if (!tl.dataset.t0 || Number(tl.dataset.t0) > start) { tl.dataset.t0 = String(start); }
    return row;
  }

  function finishRow(row, kind, state, at, error) {
    row.dataset.end = String(at);
    var bar = row.querySelector(".bar");
    bar.setAttribute("class", "bar " + kind + " " + state);
    if (error) {
      var title = document.createElementNS(svgNS, "title");
      title.textContent = error;
      bar.appendChild(title);
    }
  }

  function apply(event) {
    var parts = String(event.kind).split(".");
    var family = parts[0];
    var what = parts[1];
    if (family === "step" || family === "undo") {
      var kind = family;
      if (what === "started") {
        if (!runningRow(kind, event.step)) { addRow(kind, event, event.at); }
      } else {
        var row = runningRow(kind, event.step);
        if (!row) {
          var last = lastRow(kind, event.step);
          if (last && last.dataset.end) { return; }  /* already read from the server */
          row = addRow(kind, event, event.at - (event.seconds || 0));
        }
        finishRow(row, kind, what === "ok" ? "ok" : "failed", event.at, event.error);
      }
    } else if (family === "deploy") {
      if (event.kind === "deploy.retried" || event.kind === "deploy.resumed") {
        sync();
        return;
      }
      if (["deploy.accepted", "deploy.approved"].indexOf(event.kind) < 0 &&
          event.state && ["running", "rolling back", "queued"].indexOf(event.state) < 0) {
        tl.dataset.end = String(event.at);
      }
    }
    layout();
  }

  function sync() {
    syncing = true;
    fetchPage().then(function (doc) {
      var fresh = doc.getElementById("timeline");
      if (fresh) {
        tl.innerHTML = fresh.innerHTML;
        ["t0", "end", "now"].forEach(function (key) {
          if (fresh.dataset[key] !== undefined) { tl.dataset[key] = fresh.dataset[key]; }
          else { delete tl.dataset[key]; }
        });
        skew = Number(fresh.dataset.now) - Date.now() / 1000;
      }
      swapRegions(doc);
    }).catch(function () { /* keep what is shown; events still apply */ }).then(function () {
      syncing = false;
      var pending = held;
      held = [];
      pending.forEach(apply);
      layout();
    });
  }

  /* -- the stream ------------------------------------------------------------------------ */
  function heard(message) {
    var event;
    try { event = JSON.parse(message.data); } catch (e) { return; }
    if (tl) {
      if (syncing) { held.push(event); } else { apply(event); }
    }
    later();
  }

  var source = new EventSource(main.dataset.events);
  (main.dataset.kinds || "").split(" ").forEach(function (kind) {
    if (kind) { source.addEventListener(kind, heard); }
  });
  source.onmessage = heard;
  var badge = document.getElementById("live");
  source.onopen = function () {
    if (badge) { badge.hidden = false; }
    if (tl) { sync(); } else { later(); }
  };
  source.onerror = function () { if (badge) { badge.hidden = true; } };
  if (tl) {
    layout();
    setInterval(function () {
      if (!tl.dataset.end || tl.querySelector(".bar.running")) { layout(); }
    }, TICK_MS);
  }
}());
