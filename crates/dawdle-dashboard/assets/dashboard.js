// Confirmation before every action.
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });
})();

// Live refresh of the overview's counts: the page works without it.
(function () {
  "use strict";
  var section = document.getElementById("overview");
  if (!section || !window.fetch) { return; }
  var url = section.getAttribute("data-refresh");
  function set(id, value) {
    var node = document.getElementById(id);
    if (node) { node.textContent = String(value); }
  }
  function age(seconds) {
    if (seconds === null || seconds === undefined) { return "none waiting"; }
    if (seconds < 120) { return Math.round(seconds) + " s"; }
    if (seconds < 7200) { return Math.round(seconds / 60) + " min"; }
    return (seconds / 3600).toFixed(1) + " h";
  }
  function refresh() {
    fetch(url, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (stats) {
        if (!stats) { return; }
        set("todo", stats.totals.todo);
        set("doing", stats.totals.doing);
        set("stuck", stats.stuck_doing);
        set("oldest", age(stats.oldest_runnable_age_seconds));
        set("failed-hour", stats.failed_last_hour);
        set("succeeded-hour", stats.succeeded_last_hour);
        set("workers", stats.live_workers);
        var verdict = document.getElementById("verdict");
        if (verdict) {
          var name = stats.verdict.charAt(0).toUpperCase() + stats.verdict.slice(1);
          verdict.textContent = name;
          verdict.className = "verdict verdict-" + stats.verdict;
        }
        var reasons = document.getElementById("reasons");
        if (reasons) {
          reasons.textContent = "";
          stats.reasons.forEach(function (reason) {
            var item = document.createElement("li");
            item.textContent = reason;
            reasons.appendChild(item);
          });
        }
      })
      .catch(function () { /* the next tick tries again */ });
  }
  setInterval(refresh, 5000);
})();
