// Countdowns tick in place; the server's text is the no-JS fallback.
(function () {
  function fmt(seconds) {
    var s = Math.round(Math.abs(seconds)), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    var text = h ? h + "h " + String(m).padStart(2, "0") + "m " + String(r).padStart(2, "0") + "s"
      : m ? m + "m " + String(r).padStart(2, "0") + "s" : r + "s";
    return seconds >= 0 ? "in " + text : text + " overdue";
  }
  function tick() {
    document.querySelectorAll(".countdown[data-at]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("data-at"));
      if (!isNaN(at)) el.textContent = fmt((at - Date.now()) / 1000);
    });
  }
  setInterval(tick, 1000);
  function chart() {
    var el = document.getElementById("chart");
    if (!el || !window.uPlot || el.dataset.drawn) return;
    var d = JSON.parse(el.getAttribute("data-series"));
    el.dataset.drawn = "1";
    var opts = { width: el.clientWidth || 600, height: 240, scales: { x: { time: true } },
      series: [{}, { label: "opened", stroke: "#1f5fbf", width: 2 }, { label: "resolved", stroke: "#1d7a3e", width: 2 }],
      axes: [{}, { label: "incidents" }] };
    var plot = new uPlot(opts, [d.x, d.opened, d.resolved], el);
    window.addEventListener("resize", function () { plot.setSize({ width: el.clientWidth, height: 240 }); });
  }
  document.addEventListener("DOMContentLoaded", chart);
})();
// Forms answer 422 with themselves re-rendered, errors next to their fields: swap those too.
if (window.htmx) {
  htmx.config.responseHandling = [
    { code: "204", swap: false },
    { code: "[23]..", swap: true },
    { code: "422", swap: true },
    { code: "[45]..", swap: false, error: true },
  ];
}
