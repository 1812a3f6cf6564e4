// tinymlops fleet dashboard: the only script. Two jobs, no library:
// 1. live pages: <main data-refresh="ms"> is re-fetched (same URL, header X-Fragment: main) and its
//    content swapped in place, paused while the tab is hidden or a form control has focus;
// 2. confirmations: a form with data-confirm asks before it submits (verbs, alarm actions).
(function () {
  "use strict";
  var main = document.getElementById("main");

  function busy() {
    var el = document.activeElement;
    return el && (el.tagName === "INPUT" || el.tagName === "SELECT" || el.tagName === "TEXTAREA");
  }

  function refresh() {
    if (document.hidden || busy()) return schedule();
    fetch(window.location.href, { headers: { "X-Fragment": "main" }, credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.redirected || r.status === 401) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) { if (html !== null && html !== undefined) main.innerHTML = html; })
      .catch(function () {})
      .then(schedule);
  }

  function schedule() {
    var every = main && parseInt(main.getAttribute("data-refresh") || "0", 10);
    if (every > 0) window.setTimeout(refresh, every);
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  schedule();
})();
