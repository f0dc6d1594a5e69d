"use strict";
// The page draws every snapshot the dashboard sends on its event stream (events), starting with the one the page was
// served with. It keeps no state of its own: each snapshot is drawn whole. Text from the fleet goes in as text, never
// as markup.

const $ = (sel) => document.querySelector(sel);
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

const td = (cls, text) => el("td", { class: cls }, text);
const num = (cls, n) => td(cls + " num", Number.isInteger(n) ? n : n.toFixed(2));
const pct = (u) => (u > 0 && u < 0.001 ? "<0.1" : (u * 100).toFixed(u > 0 && u < 0.1 ? 1 : 0)) + "%";
const ago = (s) => (s < 1 ? "<1s" : s < 90 ? Math.round(s) + "s" : Math.round(s / 60) + "m") + " ago";
const badge = (status) => el("span", { class: "badge " + status }, status);

function meter(u) {
  const fill = el("span", { class: "fill" });
  fill.style.width = Math.min(100, Math.max(0, u * 100)) + "%";
  return el("span", { class: u >= 0.9 ? "meter hot" : "meter" }, fill);
}

function table(heads, rows, empty) {
  const body = el("tbody", {}, ...rows);
  if (!rows.length) body.append(el("tr", {}, el("td", { class: "empty", colspan: heads.length }, empty)));
  return el("table", {}, el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", {}, h)))), body);
}

function drawAgents(s) {
  const rows = s.agents.map((a) =>
    el("tr", { "data-agent": a.id, class: a.status },
      td("id", a.id), td("host", a.host), num("capacity", a.capacity), num("free", a.free),
      el("td", { class: "use" }, meter(a.capacity > 0 ? (a.capacity - a.free) / a.capacity : 0)),
      num("workers", a.workers), num("in-flight", a.in_flight), td("kinds", a.kinds.join(", ")),
      el("td", { class: "status" }, badge(a.status))));
  const body = $("#agents tbody");
  body.replaceChildren(...rows);
  if (!rows.length) body.append(el("tr", {}, el("td", { class: "empty", colspan: 9 }, "No agent answers discovery.")));
}

function drawPools(s) {
  const cards = s.pools.map((p) => {
    const title = p.standing ? `Standing ${p.kind} workers` : `Pool ${p.id}`;
    const summary = el("p", { class: "summary" }, `${p.kind} · ${p.workers.length} workers · in flight `,
      el("b", { class: "in-flight" }, p.in_flight), " · calls ", el("b", { class: "calls" }, p.calls),
      " · errors ", el("b", { class: "errors" }, p.errors));
    if (p.limit_set) summary.append(" · limits ", el("a", { href: "#set-" + p.limit_set }, p.limit_set));
    const rows = p.workers.map((w) =>
      el("tr", { "data-worker": w.id, class: w.health },
        num("index", w.index), td("id", w.id), td("agent", w.agent || "–"), num("in-flight", w.in_flight),
        num("calls", w.calls), num(w.errors > 0 ? "errors some" : "errors", w.errors),
        el("td", { class: "health" }, badge(w.health)), td("age", ago(w.age))));
    return el("div", { class: "card pool", "data-pool": p.standing ? "standing:" + p.kind : p.id },
      el("h3", {}, title, " ", badge(p.status)), summary,
      table(["#", "Worker", "Agent", "In flight", "Calls", "Errors", "Health", "Last heartbeat"], rows, ""));
  });
  $("#pools").replaceChildren(...cards);
  if (!cards.length) $("#pools").append(el("p", { class: "empty" }, "No worker heartbeats."));
}

// chart draws a limit's utilisation up to at, 0 at the bottom and capacity at the top, over the last span seconds or,
// while the dashboard has watched for less, over what it has seen.
function chart(history, at, span) {
  if (history.length) span = Math.max(1, Math.min(span, at - history[0][0]));
  const W = 240, H = 36;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  const add = (tag, attrs) => {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    svg.append(e);
  };
  add("line", { class: "grid", x1: 0, x2: W, y1: H / 2, y2: H / 2 });
  const pts = history.map(([t, u]) =>
    [((t - (at - span)) / span) * W, H - Math.min(1, Math.max(0, u)) * (H - 2) - 1]);
  if (pts.length) {
    const line = pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
    add("polygon", { class: "area", points: `${pts[0][0].toFixed(1)},${H} ${line} ${pts[pts.length - 1][0].toFixed(1)},${H}` });
    add("polyline", { class: "line", points: line });
  }
  const title = document.createElementNS(SVG, "title");
  title.textContent = `utilisation over the last ${span < 90 ? Math.round(span) + " s" : Math.round(span / 60) + " min"}`;
  svg.append(title);
  return svg;
}

function drawLimits(s) {
  const cards = s.limits.map((set) => {
    const head = el("h3", { id: "set-" + set.name }, set.name);
    if (set.pool) head.append(" ", el("small", {}, "limits of pool " + set.pool));
    const note = set.partitions > 0
      ? el("p", { class: "summary" }, `per partition: the busiest of ${set.partitions} partitions`) : "";
    const rows = set.limits.map((l) =>
      el("tr", { "data-limit": l.key },
        td("key", l.key), td("algorithm", l.algorithm || "resource"), num("capacity", l.capacity),
        num("available", l.available), el("td", { class: "use" }, meter(l.utilization)),
        td("utilization num", pct(l.utilization)), el("td", { class: "history" }, chart(l.history, s.at, s.history))));
    return el("div", { class: "card set", "data-set": set.name }, head, note,
      table(["Limit", "Algorithm", "Capacity", "Available", "In use", "Utilisation",
        `Up to ${Math.round(s.history / 60)} min back`], rows, ""));
  });
  $("#limits").replaceChildren(...cards);
  if (!cards.length) $("#limits").append(el("p", { class: "empty" }, "No shared limit set in the bucket."));
}

function draw(s) {
  drawAgents(s);
  drawPools(s);
  drawLimits(s);
  $("#problems").replaceChildren(...s.problems.map((p) => el("li", {}, p)));
  $("#updated").textContent = "updated " + new Date(s.at * 1000).toLocaleTimeString();
  document.body.dataset.at = s.at;
}

draw(JSON.parse($("#initial").textContent));
const stream = new EventSource("events");
stream.onmessage = (e) => {
  draw(JSON.parse(e.data));
  $("#stream").className = "badge live";
  $("#stream").textContent = "live";
};
stream.onerror = () => {
  $("#stream").className = "badge down";
  $("#stream").textContent = "reconnecting";
};
