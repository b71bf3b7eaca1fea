// The status page: polls the node's own JSON endpoints and redraws; no build step, no framework.
"use strict";

const REFRESH_MS = 1000;
const COLOURS = ["#3b6ea5", "#4e9a52", "#a5623b", "#7a4ea5", "#a53b6e", "#3ba59a", "#8a8a2e", "#555"];

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "-" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

// Ring positions travel as hex strings of 64-bit hashes (2**64 is the end of the ring).
function position(boundary) {
  return Number(BigInt(boundary) >> 32n) / 0x100000000;
}

function drawNodes(cluster) {
  const leads = {};
  for (const p of cluster.partitions) if (p.leader !== null) leads[p.leader] = (leads[p.leader] || 0) + 1;
  const body = document.querySelector("#nodes tbody");
  body.replaceChildren();
  for (const n of cluster.nodes) {
    const row = document.createElement("tr");
    row.className = "node";
    row.dataset.node = n.id;
    cell(row, n.id);
    cell(row, n.url);
    cell(row, n.reachable ? "yes" : "no: " + n.error, n.reachable ? "" : "down");
    cell(row, n.replicas);
    cell(row, leads[n.id] || 0);
    body.appendChild(row);
  }
  document.getElementById("node-count").textContent = `(${cluster.nodes.length})`;
}

function drawPartitions(cluster) {
  const body = document.querySelector("#partitions tbody");
  const ring = document.getElementById("ring");
  body.replaceChildren();
  ring.replaceChildren();
  for (const p of cluster.partitions) {
    const row = document.createElement("tr");
    row.className = "partition";
    row.dataset.partition = p.id;
    cell(row, p.id);
    cell(row, `[${p.range.start}, ${p.range.end})`);
    cell(row, p.epoch);
    cell(row, p.leader, p.leader === null ? "down" : "");
    cell(row, p.voters.join(", "));
    cell(row, p.learners.join(", "));
    cell(row, p.term);
    cell(row, p.commit);
    const lags = Object.entries(p.applied).map(([n, applied]) =>
      p.commit === null ? `${n}: ${applied}` : `${n}: ${Math.max(0, p.commit - applied)}`);
    const lagging = p.commit !== null && Object.values(p.applied).some((a) => p.commit - a > 0);
    cell(row, lags.join("  "), lagging ? "lag" : "");
    body.appendChild(row);

    const arc = document.createElement("div");
    const share = Math.max(0.002, position(p.range.end) - position(p.range.start));
    arc.style.flex = `${share} 0 0`;
    arc.style.background = COLOURS[(p.leader || 0) % COLOURS.length];
    arc.title = `partition ${p.id}, leader ${p.leader}`;
    arc.textContent = p.id;
    ring.appendChild(arc);
  }
  document.getElementById("partition-count").textContent = `(${cluster.partitions.length})`;
}

function drawReshape(job) {
  const text = document.getElementById("reshape");
  const bar = document.getElementById("reshape-progress");
  if (!job || job.state === "idle") {
    text.textContent = "idle";
    bar.hidden = true;
    return;
  }
  const t = job.target || {};
  text.textContent = `${job.state}: ${job.steps_done}/${job.steps_total} steps` +
    ` toward ${t.partitions} partitions x ${t.replicas} replicas on nodes ${(t.nodes || []).join(", ")}` +
    (job.current ? ` (now: ${job.current})` : "") + (job.error ? ` error: ${job.error}` : "");
  bar.hidden = false;
  bar.max = Math.max(1, job.steps_total || 1);
  bar.value = job.steps_done || 0;
}

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
  return body;
}

async function refresh() {
  const problem = document.getElementById("problem");
  try {
    const [cluster, job] = await Promise.all([
      getJSON("/v1/cluster"),
      getJSON("/v1/admin/reshape").catch(() => null),
    ]);
    drawNodes(cluster);
    drawPartitions(cluster);
    drawReshape(job);
    document.getElementById("served-by").textContent = `served by node ${cluster.node}`;
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
    document.body.dataset.refreshed = String(Date.now());
    problem.hidden = true;
  } catch (err) {
    problem.textContent = `cannot read the cluster status: ${err.message}`;
    problem.hidden = false;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
