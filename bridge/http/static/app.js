// alertbridge's page: relative ages, filters, "select all", the keyboard, and live updates
// from the event stream. No library, nothing inline (the Content-Security-Policy allows
// scripts from this origin only).
"use strict";
(function () {
  var UNITS = [["d", 86400], ["h", 3600], ["m", 60]];

  function ago(ms) {  // "5m ago", "in 2h", "just now"
    var s = Math.round((Date.now() - ms) / 1000), a = Math.abs(s);
    if (a < 45) return "just now";
    for (var i = 0; i < UNITS.length; i++) {
      if (a >= UNITS[i][1] || i === UNITS.length - 1) {
        var n = Math.max(1, Math.floor(a / UNITS[i][1])) + UNITS[i][0];
        return s >= 0 ? n + " ago" : "in " + n;
      }
    }
    return "";
  }

  function times(root) {  // relative where asked (data-rel), exact local time on hover or tap
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var iso = t.getAttribute("datetime"), d = new Date(iso);
      if (isNaN(d.getTime())) return;
      var exact = d.toLocaleString([], { dateStyle: "medium", timeStyle: "medium" });
      t.title = exact + " (" + iso.replace("T", " ") + " UTC)";
      t.textContent = t.hasAttribute("data-rel") && !t.classList.contains("exact") ? ago(d.getTime()) : exact;
    });
  }

  function tapForExact() {
    document.addEventListener("click", function (e) {
      var t = e.target.closest && e.target.closest("time[data-rel]");
      if (!t) return;
      t.classList.toggle("exact");
      times(t.parentNode);
    });
  }

  function filters() {  // open at desk width; behind one control on a phone
    var box = document.getElementById("filters");
    if (box && window.matchMedia("(min-width: 641px)").matches) box.open = true;
  }

  function selectAll() {
    var all = document.getElementById("select-all");
    if (!all) return;
    all.addEventListener("change", function () {
      document.querySelectorAll('input[name="id"][form="bulk"]:not([disabled])').forEach(function (box) {
        box.checked = all.checked;
      });
    });
  }

  // The keyboard: j/k move through the list, o or Enter opens, x selects, / searches;
  // on an alert's page, a goes to the acknowledgement's comment (Enter acknowledges).
  function keyboard() {
    var at = -1;
    function rows() { return Array.prototype.slice.call(document.querySelectorAll("tr[data-id]")); }
    function move(by) {
      var all = rows();
      if (!all.length) return;
      all.forEach(function (r) { r.classList.remove("cursor"); });
      at = Math.max(0, Math.min(all.length - 1, at + by));
      all[at].classList.add("cursor");
      var link = all[at].querySelector("a");
      if (link) link.focus();
    }
    document.addEventListener("keydown", function (e) {
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      var tag = (e.target.tagName || "").toLowerCase();
      if (tag === "input" || tag === "select" || tag === "textarea") return;
      var row = rows()[at];
      if (e.key === "j") move(1);
      else if (e.key === "k") move(-1);
      else if (e.key === "o" && row) row.querySelector("a").click();
      else if (e.key === "x" && row) {
        var box = row.querySelector('input[name="id"]:not([disabled])');
        if (box) box.checked = !box.checked;
      } else if (e.key === "/") {
        var search = document.querySelector('input[name="q"]');
        if (!search) return;
        var box2 = document.getElementById("filters");
        if (box2) box2.open = true;
        search.focus();
      } else if (e.key === "a") {
        var comment = document.querySelector('form[action$="/ack"] input[name="comment"]');
        if (!comment) return;
        comment.focus();
      } else return;
      e.preventDefault();
    });
  }

  function live() {
    var stream = document.body.dataset.stream;
    var rows = document.body.dataset.rows;
    var target = document.getElementById("live");
    var state = document.getElementById("live-state");
    if (!stream || !rows || !target || !window.EventSource) return;
    var pending = false, last = 0;

    function replace(html) {
      if (target.dataset.kind === "rows") {
        var checked = {}, cursor = target.querySelector("tr.cursor");
        var at = cursor ? cursor.dataset.id : null;
        target.querySelectorAll('input[name="id"]:checked').forEach(function (b) { checked[b.value] = true; });
        target.querySelectorAll("tbody").forEach(function (b) { b.remove(); });
        target.insertAdjacentHTML("beforeend", html);
        target.querySelectorAll('input[name="id"]').forEach(function (b) { if (checked[b.value]) b.checked = true; });
        if (at) {
          var again = target.querySelector('tr[data-id="' + at + '"]');
          if (again) again.classList.add("cursor");
        }
      } else {
        target.innerHTML = html;
      }
      times(target);
    }

    function load() {
      pending = false;
      last = Date.now();
      fetch(rows, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) replace(html); })
        .catch(function () {});
    }

    function changed() {  // at most one refresh a second, however many events
      if (pending) return;
      pending = true;
      setTimeout(load, Math.max(0, 1000 - (Date.now() - last)));
    }

    // An EventSource retries by itself after a dropped connection, not after a refusal (a
    // 503 while the server is busy or its stream worker restarts): then open a new one, from
    // the last event seen, after a few seconds (more each time, with jitter, at most 30 s).
    var delay = 2000;
    function open(url) {
      var source = new EventSource(url);
      source.onmessage = changed;
      source.onopen = function () {
        delay = 2000;
        if (state) state.textContent = "live";
        document.body.classList.add("is-live");
      };
      source.onerror = function () {
        if (state) state.textContent = "reconnecting...";
        document.body.classList.remove("is-live");
        if (source.readyState !== 2) return;  // CLOSED: refused, the browser will not retry
        var from = source.lastEventId;
        var next = from ? url.replace(/([?&])after=[^&]*/, "$1after=" + encodeURIComponent(from)) : url;
        setTimeout(function () { open(next); changed(); }, delay + Math.random() * 1000);
        delay = Math.min(delay * 2, 30000);
      };
    }
    open(stream);
  }

  document.addEventListener("DOMContentLoaded", function () {
    times(document);
    setInterval(function () { times(document); }, 30000);
    tapForExact();
    filters();
    selectAll();
    keyboard();
    live();
  });
})();
