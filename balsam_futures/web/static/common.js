"use strict";
// Shared by the campaign page and the task page: table rows from values, dates, polling.
function when(t) {
  if (t === null || t === undefined) return "";
  const d = new Date(t * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
         `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function cell(value, cls) {
  const td = document.createElement("td");
  if (value instanceof Node) td.appendChild(value); else td.textContent = value ?? "";
  if (cls) td.className = cls;
  return td;
}
function fillRows(table, rows) {
  const body = document.querySelector(`#${table} tbody`);
  body.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    for (const c of cells) tr.appendChild(Array.isArray(c) ? cell(c[0], c[1]) : cell(c));
    return tr;
  }));
}
function taskLink(id) {
  const a = document.createElement("a");
  a.href = `/task/${id}`;
  a.textContent = String(id);
  return a;
}
async function getJSON(path) {
  const response = await fetch(path, {credentials: "same-origin"});
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}
