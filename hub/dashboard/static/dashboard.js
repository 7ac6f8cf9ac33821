// hub dashboard: the spend chart (uPlot) and the connection indicator. Everything else on the
// page is server-rendered HTML that htmx's SSE extension swaps in as it changes.
(function () {
  "use strict";
  var state = { range: "day", group: "plugin" };
  var plot = null;
  var COLORS = ["#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899", "#84cc16"];

  function data() {
    var node = document.getElementById("spend-data");
    if (!node) return null;
    try { return JSON.parse(node.dataset.chart); } catch (e) { return null; }
  }

  function money(v) { return v == null ? "" : "$" + (v >= 0.1 ? v.toFixed(2) : v.toFixed(4)); }

  // Stacked bars: each series is drawn as the running sum of itself and the ones before it.
  function draw() {
    var chart = data();
    var box = document.getElementById("chart");
    if (!chart || !box) return;
    var range = chart[state.range];
    var groups = range.by[state.group] || {};
    var names = Object.keys(groups).sort();
    var stacked = [], sums = range.x.map(function () { return 0; });
    names.forEach(function (name) {
      sums = sums.map(function (s, i) { return s + groups[name][i]; });
      stacked.push(sums.slice());
    });
    var bars = uPlot.paths.bars({ size: [0.8, 60] });
    var series = [{ label: state.range === "day" ? "hour" : "day" }];
    names.forEach(function (name, i) {
      series.push({
        label: name, stroke: COLORS[i % COLORS.length], fill: COLORS[i % COLORS.length] + "cc",
        paths: bars, points: { show: false },
        value: function (u, v, si, idx) { return idx == null ? "" : money(groups[name][idx]); }
      });
    });
    // Drawn from the tallest stack down, so each bar shows its own band.
    var order = stacked.map(function (_, i) { return i; }).reverse();
    var opts = {
      width: Math.max(320, box.clientWidth || 640), height: 220,
      series: [series[0]].concat(order.map(function (i) { return series[i + 1]; })),
      axes: [{}, { values: function (u, ticks) { return ticks.map(money); }, size: 70 }],
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(max, 0.0001)]; } } },
      legend: { live: true }
    };
    var rows = [range.x].concat(order.map(function (i) { return stacked[i]; }));
    if (plot) plot.destroy();
    box.textContent = "";
    plot = new uPlot(opts, rows, box);
    box.dataset.total = String(range.total);
    box.dataset.range = state.range;
    box.dataset.series = names.join(",");
    window.hubSpendChart = { plot: plot, range: state.range, group: state.group, total: range.total, names: names };
  }

  function select(attr, value) {
    document.querySelectorAll("button[data-" + attr + "]").forEach(function (b) {
      b.classList.toggle("on", b.getAttribute("data-" + attr) === value);
    });
  }

  document.addEventListener("click", function (e) {
    var b = e.target.closest && e.target.closest(".chart-controls button");
    if (!b) return;
    if (b.dataset.range) { state.range = b.dataset.range; select("range", state.range); }
    if (b.dataset.group) { state.group = b.dataset.group; select("group", state.group); }
    draw();
  });

  document.body.addEventListener("htmx:sseMessage", function (e) {
    if (e.detail && e.detail.type === "spend") draw();
  });
  document.body.addEventListener("htmx:sseOpen", function () {
    var live = document.getElementById("live");
    live.textContent = "live"; live.className = "live on";
  });
  document.body.addEventListener("htmx:sseError", function () {
    var live = document.getElementById("live");
    live.textContent = "reconnecting..."; live.className = "live off";
  });
  window.addEventListener("resize", draw);
  draw();
})();
