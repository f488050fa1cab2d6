// The lab dashboard: renders the state the server streams (server-sent
// events on /api/stream) and posts chaos actions to /api/action.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  };
  const badge = (text, tone) => el("span", { class: "badge b-" + tone }, text);
  const fmtTime = (iso) => new Date(iso).toLocaleTimeString([], { hour12: false });
  const fmtBytes = (n) => {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " kB";
    return (n / 1024 / 1024).toFixed(1) + " MB";
  };

  let state = null;
  const charts = {};

  function render(s) {
    state = s;
    const ready = s.phase === "ready";
    $("starting").hidden = ready;
    $("topology").hidden = !ready;
    $("timeline-card").hidden = !ready;
    $("traffic").hidden = !ready;
    const busy = $("busy");
    busy.hidden = !s.busy;
    busy.textContent = s.busy ? s.busy + "…" : "";
    if (!ready) return;

    // PostgreSQL
    $("pg-leader").textContent = s.leader ? "leader " + s.leader : "no leader";
    $("pg-nodes").replaceChildren(...s.postgres.map((n) => {
      let role;
      if (n.role === "leader") role = badge("leader", "ok");
      else if (n.role === "replica") role = badge(n.paused ? "replica · replay paused" : "replica", n.paused ? "warn" : "info");
      else if (n.role === "down") role = badge("down", "bad");
      else role = badge(n.state || "unknown", "grey");
      const lag = n.role === "replica" ? fmtBytes(n.lag_bytes) : "–";
      return el("tr", { "data-node": n.name, "data-role": n.role },
        el("td", { class: "name" }, n.name), el("td", {}, role),
        el("td", {}, n.timeline ? String(n.timeline) : "–"),
        el("td", { class: n.lag_bytes > 1024 * 1024 ? "lag bad" : "lag" }, lag));
    }));

    // Redis
    $("redis-master").textContent = s.master ? "master " + s.master : "no master";
    $("redis-nodes").replaceChildren(...s.redis.map((n) => {
      const tone = n.role === "master" ? "ok" : n.role === "replica" ? "info" : n.role === "down" ? "bad" : "grey";
      return el("tr", { "data-node": n.name, "data-role": n.role },
        el("td", { class: "name" }, n.name), el("td", {}, badge(n.role, tone)), el("td", { class: "addr" }, n.addr));
    }));
    const sent = $("sentinels");
    sent.replaceChildren("Sentinels say the master is: ");
    (s.sentinels || []).forEach((x, i) => {
      if (i) sent.append(" · ");
      sent.append(x.name + " → ", el("b", {}, x.master || "no answer"));
    });

    // MinIO
    $("minio").replaceChildren(el("span", { class: "dot " + (s.minio ? "ok" : "bad") }), s.minio ? "Up" : "Down");
    $("minio").dataset.up = String(s.minio);

    // Apps, grouped by example app (shop, SSO), as HAProxy sees them.
    const groups = s.groups || [];
    const appRow = (a) => {
      const st = a.status;
      // "UP 1/2": failed a check, going down; "DOWN 1/2": passed one, coming up.
      let tone = "bad", label = st;
      if (st === "UP") tone = "ok";
      else if (st.startsWith("UP ")) { tone = "warn"; label = "UP · going down"; }
      else if (st.startsWith("DOWN ")) { tone = "warn"; label = "DOWN · coming up"; }
      else if (st === "DRAIN") tone = "warn";
      else if (st === "MAINT" || st === "unknown") tone = "grey";
      return el("tr", { "data-app": a.name, "data-status": st },
        el("td", { class: "name" }, a.name),
        el("td", { title: "HAProxy: " + st }, badge(label, tone)),
        el("td", {}, a.running ? badge("running", "grey") : badge("stopped", "bad")),
        el("td", { class: "num" }, String(a.current)),
        el("td", { class: "num" }, a.rps.toFixed(1)),
        el("td", { class: "num" }, String(a.errors)),
        el("td", { class: "addr" }, a.addr));
    };
    const rows = [];
    for (const g of groups) {
      rows.push(el("tr", { class: "group", "data-group": g.id },
        el("td", { colSpan: 7 }, el("b", {}, g.title), " ", el("a", { href: g.url, target: "_blank", rel: "noopener" }, g.url))));
      rows.push(...s.apps.filter((a) => a.app === g.id).map(appRow));
    }
    rows.push(...s.apps.filter((a) => !a.app).map(appRow));
    $("apps").replaceChildren(...rows);
    const acts = $("app-actions");
    if ([...acts.children].map((x) => x.dataset.app).join("|") !== groups.map((g) => g.id).join("|")) {
      acts.replaceChildren(...groups.map((g) => el("div", { class: "app-acts", "data-app": g.id },
        el("span", { class: "acts-label" }, g.title), el("div", { class: "actions", "data-group": "app:" + g.id }))));
    }

    renderActions(s.actions || []);
    renderTraffic(s);
    renderTimeline(s.events || []);
    confirmDone(s.events || []);

    const links = $("links");
    if (!links.childElementCount) {
      for (const g of groups) links.append(el("a", { href: g.url, target: "_blank", rel: "noopener" }, g.title + " through HAProxy"));
      if (!groups.length) links.append(el("a", { href: s.haproxy, target: "_blank", rel: "noopener" }, "HAProxy"));
      links.append(el("a", { href: s.mailpit, target: "_blank", rel: "noopener" }, "Mailpit (sent mail)"));
    }
  }

  function renderActions(actions) {
    for (const box of document.querySelectorAll(".actions[data-group]")) {
      const group = box.dataset.group;
      const want = actions.filter((a) => a.group === group);
      const have = [...box.children].map((b) => b.dataset.action).join("|");
      if (have !== want.map((a) => a.id).join("|")) {
        box.replaceChildren(...want.map((a) => el("button", {
          class: "act" + (a.danger ? " danger" : "") + (a.id === "load on" ? " primary" : ""),
          type: "button", "data-action": a.id,
          onclick: () => act(a),
        }, a.label)));
      }
      for (const b of box.children) {
        const a = want.find((x) => x.id === b.dataset.action);
        b.disabled = !a.enabled;
        b.title = a.enabled ? "" : a.why;
      }
    }
  }

  async function act(a) {
    const btn = document.querySelector(`button[data-action="${a.id}"]`);
    if (btn) btn.disabled = true;
    try {
      const r = await fetch("api/action", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ id: a.id }),
      });
      const body = await r.json().catch(() => ({ message: r.statusText }));
      toast(body.message || r.statusText, !r.ok);
    } catch (e) {
      toast(String(e), true);
    }
  }

  let toastTimer;
  function toast(msg, bad) {
    const t = $("toast");
    t.textContent = msg;
    t.className = "toast" + (bad ? " bad" : "");
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 5000);
  }

  const palette = ["#2f6fde", "#1f8a5b", "#b7791f", "#8a4fd6", "#c2413a", "#3a9bb5"];

  // trafficBlock is one app's row of the traffic card: its numbers and
  // its charts (success rate, p50/p99, requests per instance).
  function trafficBlock(g) {
    const box = $("traffic-apps");
    let b = box.querySelector(`[data-app="${g.id}"]`);
    if (b) return b;
    const kpi = (key, label) => el("div", { class: "kpi" }, el("span", { class: "kpi-label" }, label),
      el("span", { class: "kpi-value", "data-kpi": key }, "–"));
    const fig = (key, caption) => el("figure", {}, el("figcaption", {}, caption), el("div", { class: "chart", "data-chart": key, id: "chart-" + key + "-" + g.id }));
    const withLoad = g.id !== "apps";
    b = el("div", { class: "app-traffic", "data-app": g.id },
      el("div", { class: "app-traffic-head" }, el("h3", {}, g.title), el("span", { class: "meta" }, g.load || "")),
      withLoad ? el("div", { class: "kpis" }, kpi("ok", "Success"), kpi("rps", g.unit === "logins/s" ? "Logins/s" : "Requests/s"),
        kpi("p50", "p50"), kpi("p99", "p99"), kpi("done", g.id === "sso" ? "Logins" : "Orders"),
        kpi("failed", g.id === "sso" ? "Failed logins" : "Failed requests")) : null,
      el("div", { class: "charts" + (withLoad ? "" : " one") },
        withLoad ? fig("ok", "Success rate (%)") : null,
        withLoad ? fig("lat", (g.id === "sso" ? "Sign-in flow" : "Request") + " latency p50 / p99 (ms)") : null,
        fig("rps", "Requests/s per instance (HAProxy)")));
    box.append(b);
    return b;
  }

  function renderTraffic(s) {
    const on = s.load && s.load.on;
    const groups = (s.groups || []).slice();
    if (!groups.length && s.apps.length) groups.push({ id: "apps", title: "Stand-in apps" });
    $("traffic").hidden = !groups.length;
    $("load-summary").textContent = !s.load ? "per instance, as HAProxy counts it"
      : on ? "load through HAProxy: on" : "load through HAProxy: off";
    const rates = s.rates || [];
    for (const g of groups) {
      const b = trafficBlock(g);
      const samples = (s.samples || []).filter((x) => x.app === g.id);
      const last = samples[samples.length - 1];
      const set = (key, v, cls) => {
        const e = b.querySelector(`[data-kpi="${key}"]`);
        if (e) { e.textContent = v; e.className = "kpi-value" + (cls ? " " + cls : ""); }
      };
      if (last) {
        set("ok", last.ok_pct.toFixed(2) + " %", last.ok_pct >= 99 ? "good" : "bad");
        set("rps", last.rps.toFixed(1));
        set("p50", last.p50_ms.toFixed(0) + " ms");
        set("p99", last.p99_ms.toFixed(0) + " ms");
        set("done", String(g.id === "sso" ? last.logins : last.orders));
        set("failed", String(last.all_failed), last.all_failed ? "bad" : "");
      }
      const t = samples.map((x) => Date.parse(x.time) / 1000);
      if (g.id !== "apps") {
        chart("chart-ok-" + g.id, [t, samples.map((x) => x.ok_pct)],
          [{ label: "success %", stroke: "#1f8a5b", fill: "rgba(31,138,91,0.08)", width: 2 }], { min: 90, max: 100 });
        chart("chart-lat-" + g.id, [t, samples.map((x) => x.p50_ms), samples.map((x) => x.p99_ms)],
          [{ label: "p50 ms", stroke: "#2f6fde", width: 2 }, { label: "p99 ms", stroke: "#b7791f", width: 2 }], { min: 0 });
      }
      const names = s.apps.filter((a) => (g.id === "apps" ? !a.app : a.app === g.id)).map((a) => a.name);
      chart("chart-rps-" + g.id, [rates.map((r) => Date.parse(r.time) / 1000), ...names.map((n) => rates.map((r) => r.rps[n] || 0))],
        names.map((n, i) => ({ label: n, stroke: palette[i % palette.length], width: 1.6, dash: i % 2 ? [5, 3] : undefined })), { min: 0 });
    }
  }

  function chart(id, data, series, range) {
    const box = $(id);
    const width = Math.max(240, box.clientWidth || 360);
    const height = 150;
    let c = charts[id];
    if (c && c.series.length !== series.length + 1) { c.destroy(); c = null; }
    if (!c) {
      c = new uPlot({
        width, height, legend: { show: true, live: false }, cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true }, y: { range: (u, lo, hi) => [Math.min(range.min ?? lo, lo ?? 0), Math.max(range.max ?? hi, hi ?? 0, (range.min ?? 0) + 1)] } },
        axes: [{ stroke: "#6b7380", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#eef0f3" } },
          { stroke: "#6b7380", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#eef0f3" }, size: 56 }],
        series: [{}, ...series.map((x) => Object.assign({ points: { show: false } }, x))],
      }, data, box);
      charts[id] = c;
    } else {
      if (Math.abs(c.width - width) > 4) c.setSize({ width, height });
      c.setData(data);
    }
  }

  // confirmDone shows each action's outcome as it lands on the timeline.
  let seenUntil = null;
  function confirmDone(events) {
    const last = events.length ? Date.parse(events[events.length - 1].time) : 0;
    if (seenUntil !== null) {
      for (const e of events) {
        if (Date.parse(e.time) > seenUntil && (e.kind === "confirm" || e.kind === "error")) {
          toast(e.text + (e.detail ? ": " + e.detail : ""), e.kind === "error");
        }
      }
    }
    seenUntil = last;
  }

  function renderTimeline(events) {
    const ol = $("timeline");
    if (!events.length) {
      ol.replaceChildren(el("li", {}, el("span", { class: "empty" }, "Nothing yet: press a button above.")));
      return;
    }
    const tone = { action: "info", confirm: "ok", recovered: "ok", failover: "bad", warn: "warn", error: "bad", info: "grey" };
    const label = { action: "action", confirm: "done", recovered: "recovered", failover: "detected", warn: "warning", error: "error", info: "note" };
    ol.replaceChildren(...events.slice().reverse().map((e) => el("li", { "data-kind": e.kind },
      el("time", {}, fmtTime(e.time)),
      el("span", {}, badge(label[e.kind] || e.kind, tone[e.kind] || "grey")),
      el("span", { class: "text" }, e.text, e.detail ? el("span", { class: "detail" }, e.detail) : null))));
  }

  function connect() {
    const es = new EventSource("api/stream");
    const conn = $("conn");
    es.addEventListener("state", (ev) => {
      const s = JSON.parse(ev.data);
      conn.textContent = s.phase === "ready" ? "live" : "starting";
      conn.className = "pill " + (s.phase === "ready" ? "pill-ok" : "pill-wait");
      render(s);
    });
    es.onerror = () => {
      conn.textContent = "disconnected: retrying";
      conn.className = "pill pill-bad";
    };
  }
  window.addEventListener("resize", () => { if (state) renderTraffic(state); });
  connect();
})();
