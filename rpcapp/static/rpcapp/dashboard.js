/* The overview's charts (Chart.js, served with the app) and its live refresh:
   every 5 s the page fetches dashboard-data and updates cards, charts and tables. */
(function () {
  "use strict";
  const script = document.getElementById("dashboard-script");
  const dataUrl = script.dataset.url;
  const initial = JSON.parse(document.getElementById("initial-series").textContent);
  const charts = {};

  function line(id, datasets, labels) {
    return new Chart(document.getElementById(id), {
      type: "line",
      data: { labels: labels, datasets: datasets },
      options: { animation: false, responsive: true, maintainAspectRatio: false, spanGaps: true,
                 plugins: { legend: { display: datasets.length > 1 } }, scales: { y: { beginAtZero: true } } },
    });
  }

  function draw(series) {
    const sets = {
      throughput: [{ label: "calls/min", data: series.throughput, borderColor: "#2563eb", backgroundColor: "rgba(37,99,235,.12)", fill: true, tension: .25 }],
      errors: [{ label: "error %", data: series.error_rate, borderColor: "#dc2626", backgroundColor: "rgba(220,38,38,.12)", fill: true, tension: .25 }],
      latency: [
        { label: "p50", data: series.p50, borderColor: "#059669", tension: .25 },
        { label: "p95", data: series.p95, borderColor: "#d97706", tension: .25 },
        { label: "p99", data: series.p99, borderColor: "#7c3aed", tension: .25 },
      ],
    };
    for (const [name, datasets] of Object.entries(sets)) {
      const id = "chart-" + name;
      if (!charts[name]) {
        charts[name] = line(id, datasets, series.labels);
      } else {
        charts[name].data.labels = series.labels;
        datasets.forEach((d, i) => { charts[name].data.datasets[i].data = d.data; });
        charts[name].update();
      }
    }
    window.rpcappCharts = charts;
  }

  function text(id, value, unit) {
    const el = document.getElementById(id);
    if (el) el.textContent = value === null || value === undefined ? "–" : value + (unit || "");
  }

  function rows(tableId, items, render) {
    const body = document.querySelector("#" + tableId + " tbody");
    if (!body || !items.length) return;
    body.innerHTML = "";
    for (const item of items) {
      const tr = document.createElement("tr");
      for (const cell of render(item)) {
        const td = document.createElement("td");
        td.textContent = cell;
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  async function refresh() {
    const response = await fetch(dataUrl + window.location.search, { credentials: "same-origin" });
    if (!response.ok) return;
    const data = await response.json();
    text("card-calls", data.cards.calls_per_min);
    text("card-errors", data.cards.error_rate, " %");
    text("card-p95", data.cards.p95_ms, " ms");
    text("card-p50", data.cards.p50_ms);
    text("card-p99", data.cards.p99_ms);
    draw(data.series);
    rows("providers", data.providers, (p) => [p.id, p.services.join(", "), p.state, p.heartbeat_age.toFixed(1) + " s", p.in_flight, p.calls_served]);
    document.getElementById("refreshed").textContent = "live: updated " + new Date().toLocaleTimeString();
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  }

  draw(initial);
  setInterval(() => { refresh().catch(() => {}); }, 5000);
})();
