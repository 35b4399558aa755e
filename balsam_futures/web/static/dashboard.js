"use strict";
// The campaign page: polls /api/summary and redraws counts, charts and tables.
const STATE_ORDER = ["CREATED", "AWAITING_PARENTS", "AWAITING_STAGE_IN", "STAGING_IN",
  "STAGED_IN", "READY", "CLAIMED", "RUNNING", "RUN_DONE", "STAGING_OUT", "STAGED_OUT",
  "POSTPROCESSED", "JOB_FINISHED", "RUN_ERROR", "RUN_TIMEOUT", "RESTART_READY", "FAILED",
  "KILLED", "CANCELLED"];
let finishedChart = null;
let utilChart = null;

function chart(el, series, data, yRange) {
  const opts = {
    width: Math.max(300, el.clientWidth || 420), height: 180, series: [{}, ...series],
    scales: {y: yRange ? {range: yRange} : {}}, legend: {show: true},
  };
  return new uPlot(opts, data, el);
}

function drawCharts(profile) {
  const times = profile.times;
  const finished = [times, profile.finished_per_minute];
  const util = [times, profile.node.map((u) => 100 * u)];
  const utilSeries = [{label: "nodes", stroke: "#1659b8"}];
  if (profile.gpu.length) {
    util.push(profile.gpu.map((u) => 100 * u));
    utilSeries.push({label: "GPUs", stroke: "#1b7f3a"});
  }
  if (!finishedChart) {
    finishedChart = chart(document.getElementById("chart-finished"),
      [{label: "finished / min", stroke: "#6a3d9a", fill: "rgba(106,61,154,.1)"}], finished);
    utilChart = chart(document.getElementById("chart-util"), utilSeries, util, [0, 100]);
  } else {
    finishedChart.setData(finished);
    if (utilChart.series.length !== util.length) {
      utilChart.destroy();
      utilChart = chart(document.getElementById("chart-util"), utilSeries, util, [0, 100]);
    } else {
      utilChart.setData(util);
    }
  }
}

function renderCounts(c) {
  document.getElementById("total").textContent = String(c.total);
  const states = Object.keys(c.counts).sort(
    (a, b) => STATE_ORDER.indexOf(a) - STATE_ORDER.indexOf(b));
  fillRows("counts", states.map((st) => [[st, `state-${st}`], [String(c.counts[st]), "num"]]));
  document.querySelectorAll("#counts tbody tr").forEach((tr, k) => {
    tr.dataset.state = states[k];
  });
}

function render(s) {
  fillRows("failures", s.failures.map((g) => [[String(g.count), "num"],
    g.signature, taskLink(g.example_id)]));
  document.getElementById("failures-note").textContent =
    s.failures_sampled ? "(from the first failures; `balsam-futures failures` reads all)" : "";
  fillRows("launchers", s.launchers.map((l) => [String(l.id), l.hostname,
    [l.state, `state-${l.state}`], when(l.heartbeat_at), l.batch_job_id ?? ""]));
  fillRows("batch-jobs", s.batch_jobs.map((j) => [String(j.id), j.scheduler,
    j.scheduler_id ?? "", j.state, String(j.num_nodes)]));
  fillRows("slowest", s.slowest.map((k) => [k.name, [String(k.runs), "num"],
    [k.mean_s.toFixed(2), "num"], [k.max_s.toFixed(2), "num"]]));
  drawCharts(s.profile);
  document.getElementById("updated").textContent = `updated ${when(s.now)}`;
}

async function refresh() {
  let wait = 2000;
  try {
    // The counts first, alone: on a big store the two reads would slow each other down
    // (each is a scan or a range of the same tables), and the counts matter most.
    renderCounts(await getJSON("/api/counts"));
    const s = await getJSON("/api/summary");
    render(s);
    wait = s.poll_ms;
  } catch (err) {
    document.getElementById("updated").textContent = `cannot reach the server (${err.message})`;
  }
  setTimeout(refresh, wait);
}
refresh();
