"use strict";
// The task page: fields, history, error and the tail of job.out, refreshed while it runs.
const FINAL = ["JOB_FINISHED", "FAILED", "KILLED", "CANCELLED"];
const taskId = location.pathname.split("/").pop();

function render(d) {
  const t = d.task;
  document.getElementById("title").textContent = `task ${t.id} ${t.name} (${t.state})`;
  fillRows("fields", Object.keys(t).map((k) => [k,
    k.endsWith("_at") ? when(t[k]) : (typeof t[k] === "object" && t[k] !== null ?
      JSON.stringify(t[k]) : String(t[k] ?? ""))]));
  fillRows("history", d.history.map((h) => [when(h.at), h.from_state ?? "",
    [h.to_state, `state-${h.to_state}`], h.message]));
  document.getElementById("error").textContent =
    d.error ? `${d.error.summary}\n\n${d.error.traceback.trim()}` : "none";
  document.getElementById("job-out").textContent = d.job_out || "(none)";
  return FINAL.includes(t.state);
}

async function refresh() {
  try {
    if (render(await getJSON(`/api/task/${taskId}`))) return;  // final: nothing will change
  } catch (err) {
    document.getElementById("title").textContent = `task ${taskId}: ${err.message}`;
  }
  setTimeout(refresh, 2000);
}
refresh();
