"""The web page of `dastra-kafka lag serve` (`GET /`): one self-contained HTML document, inline
CSS, JS and SVG, nothing from a CDN. It reads `/api/lag` and `/api/lag/trend` and redraws itself
every LAG_REFRESH_INTERVAL_S: one card per group, worst status first, with its status colour,
totals, the reason, lag and time-lag trend charts and a partition table."""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Consumer lag · dastra-kafka</title>
<style>
  :root {
    --bg: #f5f6f8; --card: #fff; --ink: #1f2430; --muted: #6b7280; --line: #e5e7eb;
    --ok: #15803d; --warn: #b45309; --rewind: #7e22ce; --stall: #dc2626; --stop: #991b1b;
    --notfound: #4b5563; --lag: #2563eb; --time: #db2777;
  }
  * { box-sizing: border-box; }
  body { margin: 0; background: var(--bg); color: var(--ink);
         font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
  header { background: #111827; color: #f9fafb; padding: 14px 24px; display: flex;
           align-items: baseline; gap: 16px; flex-wrap: wrap; }
  header h1 { margin: 0; font-size: 18px; font-weight: 600; }
  header .meta { color: #9ca3af; font-size: 13px; }
  main { padding: 18px 24px 32px; max-width: 1280px; margin: 0 auto; }
  .summary { display: flex; gap: 8px; flex-wrap: wrap; margin-bottom: 16px; }
  .chip { background: var(--card); border: 1px solid var(--line); border-radius: 999px;
          padding: 3px 12px; font-size: 13px; }
  .chip b { margin-left: 4px; }
  .banner { background: #fef2f2; border: 1px solid #fecaca; color: #991b1b; border-radius: 8px;
            padding: 10px 14px; margin-bottom: 14px; }
  .empty { color: var(--muted); padding: 24px 0; }
  .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr));
          gap: 14px; }
  .group { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
           border-left: 6px solid var(--c); padding: 14px 16px; }
  .head { display: flex; align-items: center; gap: 10px; flex-wrap: wrap; }
  .head h2 { margin: 0; font-size: 15px; font-weight: 600; word-break: break-all; }
  .pill { background: var(--c); color: #fff; border-radius: 4px; padding: 1px 8px;
          font-size: 12px; font-weight: 700; letter-spacing: .04em; }
  .state { color: var(--muted); font-size: 12px; margin-left: auto; }
  .stats { display: flex; gap: 28px; margin: 10px 0 4px; }
  .stats div { display: flex; flex-direction: column; }
  .stats b { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
  .stats small { color: var(--muted); font-size: 12px; }
  .reason { color: #374151; margin: 6px 0 8px; font-size: 13px; }
  .charts { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
  figure { margin: 0; }
  figcaption { font-size: 12px; color: var(--muted); display: flex;
               justify-content: space-between; }
  svg { width: 100%; height: 90px; display: block; background: #fafafa; border-radius: 6px; }
  details { margin-top: 8px; }
  summary { cursor: pointer; color: var(--muted); font-size: 12px; }
  table { width: 100%; border-collapse: collapse; margin-top: 6px; font-size: 12px;
          font-variant-numeric: tabular-nums; }
  th, td { text-align: right; padding: 3px 6px; border-bottom: 1px solid var(--line); }
  th:first-child, td:first-child, td.l, th.l { text-align: left; }
  th { color: var(--muted); font-weight: 500; }
  .s { font-weight: 700; color: var(--c); }
  .legend { color: var(--muted); font-size: 12px; margin-top: 22px; }
  .legend span { color: var(--c); font-weight: 700; }
  .OK { --c: var(--ok); } .WARN { --c: var(--warn); } .REWIND { --c: var(--rewind); }
  .STALL { --c: var(--stall); } .STOP { --c: var(--stop); } .NOTFOUND { --c: var(--notfound); }
</style>
</head>
<body>
<header>
  <h1>Consumer lag</h1>
  <span class="meta" id="meta">loading&hellip;</span>
</header>
<main>
  <div id="banner"></div>
  <div class="summary" id="summary"></div>
  <div class="grid" id="groups"><div class="empty">Waiting for the first refresh&hellip;</div></div>
  <p class="legend">
    <span class="OK">OK</span> caught up or consuming &middot;
    <span class="WARN">WARN</span> consuming but lag keeps growing &middot;
    <span class="REWIND">REWIND</span> committed offset went back &middot;
    <span class="STALL">STALL</span> offset not moving with lag (stuck consumer or frozen
    backlog) &middot;
    <span class="STOP">STOP</span> no consumer while records arrive &middot;
    <span class="NOTFOUND">NOTFOUND</span> no such group.
    Time lag is the age of the oldest unconsumed record, read from its own timestamp.
  </p>
</main>
<script>
"use strict";
const ORDER = ["OK", "WARN", "REWIND", "STALL", "STOP", "NOTFOUND"];
const opened = new Set();
let interval = 5;

function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"
  })[c]);
}
function num(n) { return n === null || n === undefined ? "-" : Number(n).toLocaleString("en"); }
function age(s) {
  if (s === null || s === undefined) return "?";
  if (s < 10) return s.toFixed(1) + " s";
  if (s < 120) return Math.round(s) + " s";
  const two = (v) => String(Math.floor(v)).padStart(2, "0");
  if (s < 7200) return Math.floor(s / 60) + "m " + two(s % 60) + "s";
  if (s < 172800) return Math.floor(s / 3600) + "h " + two((s % 3600) / 60) + "m";
  return (s / 86400).toFixed(1) + " d";
}

function chart(t, values, now, span, colour) {
  // Stretched to the card's width (preserveAspectRatio none): no text or circles inside,
  // strokes keep their width with vector-effect, the last point is a round-capped dot.
  const W = 520, H = 90, P = 5;
  if (!t || t.length === 0) {
    return '<svg viewBox="0 0 ' + W + " " + H + '" preserveAspectRatio="none"></svg>';
  }
  const max = Math.max(1e-9, ...values);
  const x = (v) => P + (W - 2 * P) * (1 - Math.min(span, Math.max(0, now - v)) / span);
  const y = (v) => H - P - (H - 2 * P - 6) * (v / max);
  const pts = t.map((ti, i) => x(ti).toFixed(1) + "," + y(values[i]).toFixed(1));
  const line = pts.join(" ");
  const area = x(t[0]).toFixed(1) + "," + (H - P) + " " + line + " " +
               x(t[t.length - 1]).toFixed(1) + "," + (H - P);
  const last = pts[pts.length - 1].split(",");
  return '<svg viewBox="0 0 ' + W + " " + H + '" preserveAspectRatio="none" role="img">' +
    '<line x1="0" x2="' + W + '" y1="' + y(max).toFixed(1) + '" y2="' + y(max).toFixed(1) +
    '" stroke="#d1d5db" stroke-dasharray="4 4" vector-effect="non-scaling-stroke"/>' +
    '<polygon points="' + area + '" fill="' + colour + '" fill-opacity="0.12"/>' +
    '<polyline points="' + line + '" fill="none" stroke="' + colour +
    '" stroke-width="2" stroke-linejoin="round" vector-effect="non-scaling-stroke"/>' +
    '<line x1="' + last[0] + '" y1="' + last[1] + '" x2="' + last[0] + '" y2="' + last[1] +
    '" stroke="' + colour + '" stroke-width="7" stroke-linecap="round"' +
    ' vector-effect="non-scaling-stroke"/></svg>';
}

function spanOf(t, now, limit) {
  // Chart the history there is (at least a minute), up to the trend the server keeps.
  if (!t || t.length === 0) return 60;
  return Math.min(limit, Math.max(60, now - t[0]));
}

function spanLabel(span) {
  return span < 120 ? Math.round(span) + " s" : Math.round(span / 60) + " min";
}

function partitions(g) {
  const rows = g.partitions.map((p) =>
    '<tr class="' + p.status + '"><td>' + esc(p.topic) + "</td><td>" + p.partition +
    "</td><td>" + num(p.committed) + "</td><td>" + num(p.log_end) + "</td><td>" + num(p.lag) +
    "</td><td>" + age(p.time_lag_s) + '</td><td class="l s">' + p.status +
    '</td><td class="l">' + esc(p.host || p.client_id || "-") + '</td><td class="l">' +
    esc(p.reason) + "</td></tr>").join("");
  return "<table><thead><tr><th>topic</th><th>partition</th><th>committed</th>" +
    "<th>log end</th><th>lag</th><th>time lag</th><th class=\"l\">status</th>" +
    "<th class=\"l\">owner</th><th class=\"l\">why</th></tr></thead><tbody>" + rows +
    "</tbody></table>";
}

function card(g, trend, now, limit) {
  const tr = trend[g.group] || { t: [], lag: [], time_lag_s: [] };
  const span = spanOf(tr.t, now, limit);
  const open = opened.has(g.group) ? " open" : "";
  const plural = (n, word) => n + " " + word + (n === 1 ? "" : "s");
  const maxLag = tr.lag.length ? Math.max(...tr.lag) : 0;
  const maxTime = tr.time_lag_s.length ? Math.max(...tr.time_lag_s) : 0;
  return '<article class="group ' + g.status + '" data-group="' + esc(g.group) + '">' +
    '<div class="head"><span class="pill status">' + g.status + "</span><h2>" +
    esc(g.group) + '</h2><span class="state">' + esc(g.state.toLowerCase()) + " &middot; " +
    plural(g.members.length, "member") + "</span></div>" +
    '<div class="stats"><div><b>' + num(g.lag) + "</b><small>lag (records)</small></div>" +
    "<div><b>" + age(g.max_time_lag_s) + "</b><small>max time lag</small></div>" +
    "<div><b>" + g.partitions.length + "</b><small>partitions</small></div></div>" +
    '<p class="reason">' + esc(g.reason) + "</p>" +
    '<div class="charts"><figure><figcaption><span>lag &middot; last ' + spanLabel(span) +
    "</span><span>peak " + num(maxLag) + "</span></figcaption>" +
    chart(tr.t, tr.lag, now, span, "#2563eb") + "</figure>" +
    "<figure><figcaption><span>time lag &middot; last " + spanLabel(span) +
    "</span><span>peak " + age(maxTime) + "</span></figcaption>" +
    chart(tr.t, tr.time_lag_s, now, span, "#db2777") + "</figure></div>" +
    (g.partitions.length ? "<details" + open + "><summary>" +
      plural(g.partitions.length, "partition") + "</summary>" + partitions(g) +
      "</details>" : "") +
    "</article>";
}

function render(data, trend) {
  const groups = data.groups.slice().sort((a, b) =>
    (b.status_code - a.status_code) || (b.lag - a.lag) || a.group.localeCompare(b.group));
  const counts = {};
  groups.forEach((g) => { counts[g.status] = (counts[g.status] || 0) + 1; });
  document.getElementById("summary").innerHTML = ORDER.filter((s) => counts[s])
    .map((s) => '<span class="chip ' + s + '"><span class="s">' + s + "</span><b>" +
      counts[s] + "</b></span>").join("");
  const when = new Date(data.taken_at * 1000).toLocaleTimeString();
  document.getElementById("meta").textContent = "cluster " + data.cluster + " · " +
    data.selection + " · updated " + when + " · refresh took " + data.poll_ms.toFixed(0) +
    " ms";
  document.getElementById("banner").innerHTML = data.error
    ? '<div class="banner">Kafka is not answering: ' + esc(data.error) +
      " (showing the last good refresh)</div>" : "";
  const el = document.getElementById("groups");
  el.innerHTML = groups.length
    ? groups.map((g) => card(g, trend.groups || {}, data.taken_at, trend.trend_s || 900))
      .join("")
    : '<div class="empty">No consumer groups (' + esc(data.selection) + ").</div>";
  el.querySelectorAll("details").forEach((d) => d.addEventListener("toggle", () => {
    const name = d.closest("article").dataset.group;
    if (d.open) { opened.add(name); } else { opened.delete(name); }
  }));
}

async function tick() {
  try {
    const [lag, trend] = await Promise.all([
      fetch("api/lag", { cache: "no-store" }), fetch("api/lag/trend", { cache: "no-store" })
    ]);
    if (lag.ok) {
      const data = await lag.json();
      interval = Math.max(1, data.refresh_interval_s || interval);
      render(data, trend.ok ? await trend.json() : { groups: {} });
    } else {
      const body = await lag.json().catch(() => ({}));
      document.getElementById("banner").innerHTML = '<div class="banner">' +
        esc(body.error || ("HTTP " + lag.status)) + "</div>";
    }
  } catch (err) {
    document.getElementById("banner").innerHTML =
      '<div class="banner">The lag server is not answering.</div>';
  }
  setTimeout(tick, interval * 1000);
}
tick();
</script>
</body>
</html>
"""
