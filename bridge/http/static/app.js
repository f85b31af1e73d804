// alertbridge's page: local times, "select all", and live updates from the event stream.
// No library, nothing inline (the Content-Security-Policy allows scripts from this origin only).
"use strict";
(function () {
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var iso = t.getAttribute("datetime");
      var d = new Date(iso);
      if (!isNaN(d.getTime())) {
        t.textContent = d.toLocaleString();
        t.title = iso.replace("T", " ") + " (UTC)";
      }
    });
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

  function live() {
    var stream = document.body.dataset.stream;
    var rows = document.body.dataset.rows;
    var target = document.getElementById("live");
    var state = document.getElementById("live-state");
    if (!stream || !rows || !target || !window.EventSource) return;
    var pending = false, last = 0;

    function replace(html) {
      if (target.dataset.kind === "rows") {
        var checked = {};
        target.querySelectorAll('input[name="id"]:checked').forEach(function (b) { checked[b.value] = true; });
        target.querySelectorAll("tbody").forEach(function (b) { b.remove(); });
        target.insertAdjacentHTML("beforeend", html);
        target.querySelectorAll('input[name="id"]').forEach(function (b) { if (checked[b.value]) b.checked = true; });
      } else {
        target.innerHTML = html;
      }
      localTimes(target);
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

    var source = new EventSource(stream);
    source.onmessage = changed;
    source.onopen = function () { if (state) state.textContent = "live"; document.body.classList.add("is-live"); };
    source.onerror = function () { if (state) state.textContent = "reconnecting..."; document.body.classList.remove("is-live"); };
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    selectAll();
    live();
  });
})();
