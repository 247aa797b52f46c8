// The console's Insights view: the tenant's statistics from
// `GET /analytics/summary` (with the staff key), drawn as SVG by this file
// (no chart library, no CDN), and exported as CSV. Also the panel beside a
// conversation's transcript with its insights (summary, intent, sentiment).
// Every text reaches the page through textContent.
"use strict";
window.tertuliaInsights = (function () {
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2"];

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function html(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function tick(value) { return Number.isInteger(value) ? String(value) : value.toFixed(1); }

  // A chart's frame: a titled SVG with a y axis up to `max` and `labels` below.
  function frame(title, labels, max, height) {
    const width = 560, left = 44, bottom = 28, top = 10;
    const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title, class: "chart" });
    const plot = { left, top, width: width - left - 8, height: height - top - bottom };
    for (const step of [0, 0.5, 1]) {
      const y = plot.top + plot.height * (1 - step);
      svg.append(el("line", { x1: left, x2: width - 8, y1: y, y2: y, stroke: "#e3e6ea" }));
      svg.append(el("text", { x: left - 4, y: y + 4, "text-anchor": "end", "font-size": 10, fill: "#5b6470" },
        tick(max * step)));
    }
    const every = Math.max(1, Math.ceil(labels.length / 8));
    labels.forEach((label, i) => {
      if (i % every) return;
      const x = plot.left + (i + 0.5) * plot.width / labels.length;
      svg.append(el("text", { x, y: height - 10, "text-anchor": "middle", "font-size": 10, fill: "#5b6470" }, label));
    });
    return { svg, plot };
  }

  function legend(series) {
    const box = html("div", undefined, "legend");
    series.forEach((s, i) => {
      const key = html("span", s.name);
      key.style.borderLeft = `10px solid ${COLORS[i % COLORS.length]}`;
      box.append(key);
    });
    return box;
  }

  // Grouped bars: one group per label, one bar per series.
  function bars(title, labels, series) {
    const max = Math.max(1, ...series.flatMap((s) => s.values));
    const { svg, plot } = frame(title, labels, max, 180);
    const group = plot.width / labels.length;
    const bar = Math.max(1, (group * 0.8) / series.length);
    series.forEach((s, k) => s.values.forEach((value, i) => {
      const h = plot.height * value / max;
      svg.append(el("rect", {
        x: plot.left + i * group + group * 0.1 + k * bar, y: plot.top + plot.height - h,
        width: bar, height: h, fill: COLORS[k % COLORS.length], "data-value": value,
      }));
    }));
    return figure(title, svg, legend(series));
  }

  // Lines: one per series, gaps where a bucket has no value.
  function lines(title, labels, series) {
    const max = Math.max(1, ...series.flatMap((s) => s.values.filter((v) => v !== null)));
    const { svg, plot } = frame(title, labels, max, 180);
    series.forEach((s, k) => {
      let path = "", pen = "M";
      s.values.forEach((value, i) => {
        if (value === null) { pen = "M"; return; }
        const x = plot.left + (i + 0.5) * plot.width / labels.length;
        const y = plot.top + plot.height * (1 - value / max);
        path += `${pen}${x.toFixed(1)},${y.toFixed(1)} `;
        pen = "L";
        svg.append(el("circle", { cx: x, cy: y, r: 2.5, fill: COLORS[k % COLORS.length] }));
      });
      if (path) svg.append(el("path", { d: path, fill: "none", stroke: COLORS[k % COLORS.length], "stroke-width": 2 }));
    });
    return figure(title, svg, legend(series));
  }

  // Horizontal bars for a distribution: [[name, count], ...].
  function distribution(title, entries) {
    const max = Math.max(1, ...entries.map(([, n]) => n));
    const rowHeight = 22, width = 560, left = 110;
    const svg = el("svg", { viewBox: `0 0 ${width} ${Math.max(1, entries.length) * rowHeight + 8}`, role: "img", "aria-label": title, class: "chart" });
    if (!entries.length) svg.append(el("text", { x: 8, y: 18, "font-size": 12, fill: "#5b6470" }, "nothing yet"));
    entries.forEach(([name, n], i) => {
      const y = 4 + i * rowHeight;
      svg.append(el("text", { x: left - 6, y: y + 14, "text-anchor": "end", "font-size": 12 }, name));
      const w = (width - left - 50) * n / max;
      svg.append(el("rect", { x: left, y, width: w, height: rowHeight - 6, fill: COLORS[i % COLORS.length], "data-value": n }));
      svg.append(el("text", { x: left + w + 4, y: y + 14, "font-size": 12 }, String(n)));
    });
    return figure(title, svg);
  }

  function figure(title, svg, extra) {
    const box = html("figure", undefined, "card");
    box.append(html("figcaption", title), svg);
    if (extra) box.append(extra);
    return box;
  }

  function totalOf(byChannel) { return Object.values(byChannel || {}).reduce((a, b) => a + b, 0); }

  // Draws the whole view for one summary.
  function draw(target, summary) {
    const hourly = summary.bucket === "hour";
    const labels = summary.buckets.map((b) => hourly ? b.start.slice(11, 13) + "h" : b.start.slice(5, 10));
    const t = summary.total;
    const figures = html("div", undefined, "figures");
    const numbers = html("p", undefined, "totals");
    numbers.textContent = `${t.conversations_started} conversations · ` +
      `${totalOf(t.messages.user)} visitor messages · ${t.leads_captured} leads · ` +
      `${t.handoffs_requested} handoffs asked, ${t.handoffs_taken_over} taken over · ` +
      `${t.answers.failed} failed and ${t.answers.interrupted} interrupted answers`;
    figures.append(
      bars("Conversations and messages", labels, [
        { name: "conversations", values: summary.buckets.map((b) => b.conversations_started) },
        { name: "messages", values: summary.buckets.map((b) => totalOf(b.messages.user) + totalOf(b.messages.assistant)) },
      ]),
      lines("First token (ms)", labels, [
        { name: "p50", values: summary.buckets.map((b) => b.time_to_first_token_ms.p50) },
        { name: "p95", values: summary.buckets.map((b) => b.time_to_first_token_ms.p95) },
      ]),
      distribution("Intents", Object.entries(t.intents).sort((a, b) => b[1] - a[1])),
      distribution("Sentiment", [["negative", t.sentiment.negative], ["neutral", t.sentiment.neutral], ["positive", t.sentiment.positive]]),
      bars("Leads and handoffs", labels, [
        { name: "leads", values: summary.buckets.map((b) => b.leads_captured) },
        { name: "handoffs asked", values: summary.buckets.map((b) => b.handoffs_requested) },
        { name: "taken over", values: summary.buckets.map((b) => b.handoffs_taken_over) },
      ]),
    );
    target.replaceChildren(numbers, figures);
  }

  // The range a choice means: [query, file name].
  function range(choice) {
    const now = Date.now(), day = 86400000;
    if (choice === "48h") return `bucket=hour&from=${new Date(now - 2 * day).toISOString()}`;
    const days = choice === "7d" ? 7 : 30;
    return `bucket=day&from=${new Date(now - days * day).toISOString().slice(0, 10)}`;
  }

  // The view: a range picker, the charts, the CSV export. `api` is the
  // console's fetch with the staff key; `raw` the same, answering a Response.
  function view({ root, api, raw }) {
    const picker = root.querySelector(".range");
    const charts = root.querySelector(".charts");
    const exporter = root.querySelector(".export");
    const load = async () => {
      charts.replaceChildren(html("p", "Loading…"));
      try { draw(charts, await api(`/analytics/summary?${range(picker.value)}`)); }
      catch (error) { charts.replaceChildren(html("p", error.message, "error")); }
    };
    picker.onchange = load;
    exporter.onclick = async () => {
      const response = await raw(`/analytics/summary?${range(picker.value)}&format=csv`);
      const text = await response.text();
      exporter.dataset.rows = String(text.trim().split("\n").length);
      const link = document.createElement("a");
      link.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
      link.download = `tertulia-${picker.value}.csv`;
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 1000);
    };
    return { load };
  }

  // The panel beside a transcript: the conversation's insights, or why none.
  async function panel(target, api, id) {
    target.replaceChildren(html("h2", "Insights"));
    try {
      const insight = await api(`/console/api/conversations/${id}/insights`);
      const facts = html("dl");
      for (const [name, value] of [
        ["Intent", insight.intent], ["Sentiment", insight.sentiment.toFixed(2)],
        ["Resolved", insight.resolved ? "yes" : "no"], ["Lead", insight.lead_quality],
        ["Language", insight.language], ["Topics", insight.topics.join(", ")],
        ["Next step", insight.follow_up || "—"],
      ]) { facts.append(html("dt", name), html("dd", value)); }
      target.append(html("p", insight.summary, "summary"), facts,
        html("p", `${insight.model} · ${insight.analyzed_at.slice(0, 16).replace("T", " ")}`, "who"));
    } catch (error) {
      target.append(html("p", /not_analyzed/.test(error.message) ? "Not analysed yet: it will be once the conversation is quiet."
        : /insights_need_a_model/.test(error.message) ? "Insights need a model (the echo agent has none)." : error.message, "who"));
    }
  }

  return { view, panel, draw };
})();
