"use strict";
// The dashboard page: reads /api/state every refresh and draws every cluster. Every value
// that came from a node or a record is put in as text (textContent), never as markup.

const TOKEN = new URLSearchParams(window.location.search).get("token") || "";
const WINDOW_S = 300; // the charts show the last five minutes at most
const FIRST_WINDOW_S = 60; // and at least one minute, so that the first samples spread
const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 300;
const HEIGHT = 70;
let refreshMs = 2000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  return node;
}

function size(value) {
  if (value === null || value === undefined) return "-";
  for (const [unit, scale] of [["T", 1e12], ["G", 1e9], ["M", 1e6], ["K", 1e3]]) {
    if (value >= scale) return (value / scale).toFixed(1) + unit;
  }
  return value.toFixed(0);
}

function percent(value) {
  return value === null || value === undefined ? "-" : value.toFixed(0) + "%";
}

function clock(epoch) {
  return epoch ? new Date(epoch * 1000).toLocaleTimeString() : "-";
}

// One series as polylines (a gap where a node did not answer), times mapped on the window.
function lines(times, values, cls, end, window) {
  const group = svg("g", { class: cls });
  let points = [];
  const flush = () => {
    if (points.length > 0) group.append(svg("polyline", { points: points.join(" ") }));
    points = [];
  };
  times.forEach((time, i) => {
    const value = values[i];
    if (value === null || value === undefined) return flush();
    const x = WIDTH * (1 - (end - time) / window);
    const y = HEIGHT - (HEIGHT * Math.min(100, Math.max(0, value))) / 100;
    if (x >= 0) points.push(x.toFixed(1) + "," + y.toFixed(1));
  });
  flush();
  return group;
}

function chart(title, node, series, history, end) {
  const box = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    preserveAspectRatio: "none",
    class: "chart-svg",
    role: "img",
    "aria-label": title,
  });
  for (const level of [25, 50, 75]) {
    const y = HEIGHT - (HEIGHT * level) / 100;
    box.append(svg("line", { x1: 0, x2: WIDTH, y1: y, y2: y, class: "grid" }));
  }
  const keys = [];
  const span = history.t.length ? end - history.t[0] : 0;
  const window = Math.min(WINDOW_S, Math.max(FIRST_WINDOW_S, span));
  for (const [name, values, cls] of series) {
    box.append(lines(history.t, values, cls, end, window));
    const last = values.length ? values[values.length - 1] : null;
    keys.push(el("span", { class: "key-" + cls }, `${name} ${percent(last)}`));
  }
  return el(
    "div",
    { class: "chart", "data-node": node, "data-chart": title, "data-samples": history.t.length },
    el("div", { class: "label" }, el("span", {}, title), el("span", { class: "keys" }, ...keys)),
    box,
  );
}

function nodeRow(node) {
  const sample = node.sample;
  const cells = [
    el("td", {}, node.name),
    el("td", { class: "num" }, node.rank),
    el("td", {}, node.address),
    el("td", { class: "state-" + (node.state || "unknown") }, node.state || "unknown"),
  ];
  if (!sample) {
    cells.push(el("td", { colspan: 7, class: "muted" }, "waiting for the first sample"));
  } else if (!sample.answered) {
    cells.push(el("td", { colspan: 7, class: "bad" }, `${sample.status}: ${sample.error}`));
  } else {
    const load = sample.load.length ? sample.load.map((v) => v.toFixed(2)).join(" ") : "-";
    cells.push(
      el("td", { class: "num" }, percent(sample.cpu_percent)),
      el("td", { class: "num" }, `${size(sample.memory_used_bytes)}/${size(sample.memory_total_bytes)}`),
      el("td", { class: "num" }, load),
      el("td", { class: "num" }, `${size(sample.disk_used_bytes)}/${size(sample.disk_total_bytes)}`),
      el("td", { class: "num" }, `${size(sample.net_rx_bytes_per_s)}/s ↓ ${size(sample.net_tx_bytes_per_s)}/s ↑`),
      el("td", { class: "num" }, sample.gpus.length || (sample.gpu_error ? "error" : "-")),
      el("td", { class: "bad" }, sample.lagging || ""),
    );
  }
  const lagging = sample && sample.lagging;
  return el("tr", { "data-node": node.name, class: lagging ? "lagging" : null }, ...cells);
}

function jobBlock(job, open) {
  const when = clock(job.started) + (job.ended ? " – " + clock(job.ended) : "");
  const events = el("ul", { class: "events" });
  for (const event of job.events) events.append(el("li", {}, `${clock(event.time)}  ${event.text}`));
  if (!job.events.length) events.append(el("li", { class: "muted" }, "none recorded"));
  const logs = [];
  for (const [node, lines] of Object.entries(job.logs)) {
    logs.push(el("h3", {}, `${node}: last lines`), el("pre", { "data-log": node }, lines.join("\n") || "(no output yet)"));
  }
  const block = el(
    "details",
    { class: "job", "data-job": job.id },
    el(
      "summary",
      {},
      el("b", {}, job.id),
      `  ${job.framework}  `,
      el("span", { class: "job-state-" + job.state }, job.state),
      `  restarts ${job.restarts} (recoveries ${job.recoveries})  ${when}  `,
      el("span", { class: "muted" }, job.command),
    ),
    el("h3", {}, "events"),
    events,
    ...logs,
  );
  block.open = open;
  return block;
}

function clusterBlock(cluster, openJobs) {
  const facts = el("div", { class: "facts" });
  const fact = (name, value) => value && facts.append(el("span", {}, el("b", {}, name), value));
  fact("provider", cluster.kind);
  fact("price", cluster.price);
  fact("", cluster.spend);
  fact("autostop", cluster.autostop);
  fact("sampled", cluster.taken_at ? clock(cluster.taken_at) + " via " + cluster.through : "");
  const section = el("section", { class: "cluster", "data-cluster": cluster.name },
    el("h2", {}, "cluster " + cluster.name), facts);
  for (const problem of [cluster.problem, cluster.sampling_error]) {
    if (problem) section.append(el("div", { class: "problem" }, problem));
  }
  if (cluster.nodes.length) {
    const head = el("tr", {}, ...["node", "rank", "address", "machine", "cpu", "memory", "load",
      "disk", "network", "GPUs", ""].map((name) => el("th", {}, name)));
    section.append(el("table", { class: "nodes" }, el("thead", {}, head),
      el("tbody", {}, ...cluster.nodes.map(nodeRow))));
    const charts = el("div", { class: "charts" });
    for (const node of cluster.nodes) {
      const history = node.history;
      if (!history) continue;
      const end = history.t.length ? history.t[history.t.length - 1] : 0;
      charts.append(chart(node.name, node.name,
        [["cpu", history.cpu, "cpu"], ["mem", history.memory, "memory"]], history, end));
      for (const [index, values] of Object.entries(history.gpus)) {
        charts.append(chart(`${node.name} gpu ${index}`, node.name, [["util", values, "gpu"]], history, end));
      }
    }
    section.append(el("h3", {}, "utilization, last five minutes"), charts);
  }
  if (cluster.jobs.length) {
    section.append(el("h3", {}, "jobs"));
    for (const job of cluster.jobs) section.append(jobBlock(job, openJobs.has(cluster.name + "/" + job.id)));
  }
  return section;
}

function draw(state) {
  const main = document.getElementById("clusters");
  const openJobs = new Set();
  for (const block of main.querySelectorAll("details.job[open]")) {
    openJobs.add(block.closest("[data-cluster]").dataset.cluster + "/" + block.dataset.job);
  }
  const blocks = state.clusters.map((cluster) => clusterBlock(cluster, openJobs));
  if (!blocks.length) blocks.push(el("p", { class: "muted" }, "no clusters: `dlvm up FILE` makes one"));
  main.replaceChildren(...blocks);
  document.body.dataset.drawn = String(Number(document.body.dataset.drawn || 0) + 1);
  document.getElementById("updated").textContent = "updated " + clock(state.generated);
  document.getElementById("refresh").textContent = state.refresh_s;
  refreshMs = Math.max(500, state.refresh_s * 1000);
}

async function poll() {
  try {
    const answer = await fetch("/api/state?token=" + encodeURIComponent(TOKEN), { cache: "no-store" });
    if (!answer.ok) throw new Error(`the dashboard answered ${answer.status}`);
    draw(await answer.json());
  } catch (error) {
    document.getElementById("updated").textContent = "not updated: " + error.message;
  }
  window.setTimeout(poll, refreshMs);
}

poll();
