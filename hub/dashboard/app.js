/* citybrain hub dashboard: live state from GET /events (SSE, `event: state`), falling back to
 * polling GET /api/state every 2 s. Charts: Apache ECharts vendored at /static/vendor/.
 * Plain JS, no build step. Any numeric field may be null (not known yet): rendered as "—". */
(function () {
  "use strict";

  const DASH = "—";
  const POLL_MS = 2000;
  const STALE_MS = 5000;
  const SSE_RETRY_MS = 30000;
  const HEAT_COLS = 21;

  // AQI categories 1..6 (HJ 633-2012): official colours.
  const AQI_CATEGORIES = [
    null,
    { zh: "优", en: "Good", color: "#00E400", ink: "#000" },
    { zh: "良", en: "Moderate", color: "#FFFF00", ink: "#000" },
    { zh: "轻度污染", en: "Lightly polluted", color: "#FF7E00", ink: "#000" },
    { zh: "中度污染", en: "Moderately polluted", color: "#FF0000", ink: "#fff" },
    { zh: "重度污染", en: "Heavily polluted", color: "#99004C", ink: "#fff" },
    { zh: "严重污染", en: "Severely polluted", color: "#7E0023", ink: "#fff" },
  ];
  const NO_DATA_COLOR = "#33415c";
  const STATE_LABELS = {
    raised: "新发 Raised", ongoing: "持续 Ongoing", cleared: "解除 Cleared",
  };
  const DOMAIN_LABELS = {
    environment: "环境 Environment", parking: "停车 Parking", kitchen: "明厨亮灶 Kitchen",
  };

  const AXIS_TEXT = { color: "#9fb3d4", fontSize: 11 };
  const SPLIT_LINE = { lineStyle: { color: "rgba(127,149,184,0.15)" } };
  const TOOLTIP = {
    backgroundColor: "rgba(8,20,42,0.95)", borderColor: "#31c8ff",
    textStyle: { color: "#d8e6ff", fontSize: 12 },
  };

  // ---- formatting ----------------------------------------------------------------------
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const fmtInt = (v) => (isNum(v) ? Math.round(v).toLocaleString("en-US") : DASH);
  const fmtNum = (v, d) =>
    isNum(v)
      ? v.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d })
      : DASH;
  const fmtPct = (v, d = 1) => (isNum(v) ? (v * 100).toFixed(d) + "%" : DASH);
  const fmtSec = (v) => {
    if (!isNum(v)) return DASH;
    return v < 1 ? Math.round(v * 1000) + " ms" : v.toFixed(2) + " s";
  };
  const dtFull = new Intl.DateTimeFormat("zh-CN", {
    timeZone: "Asia/Shanghai", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });
  const dtTime = new Intl.DateTimeFormat("zh-CN", {
    timeZone: "Asia/Shanghai", hour: "2-digit", minute: "2-digit", second: "2-digit",
    hour12: false,
  });
  const fmtClock = (t) => (isNum(t) ? dtFull.format(new Date(t * 1000)) : DASH);
  const fmtTime = (t) => (isNum(t) ? dtTime.format(new Date(t * 1000)) : DASH);
  const esc = (s) =>
    String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({
      "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
    })[c]);
  // "石柱土家族自治县" -> "石柱县": short labels for tiles and chart axes (full name in tooltips).
  const shortZh = (name) => String(name || "").replace(/^(\S{2})\S*自治县$/, "$1县");
  // Vertical label (one character per line), the usual big-screen trick for dense axes.
  const stacked = (text) => Array.from(String(text || "")).join("\n");
  const category = (c) => (isNum(c) && c >= 1 && c <= 6 ? AQI_CATEGORIES[c] : null);
  const aqiColor = (item) => (item && item.color) || (category(item && item.category) || {}).color
    || NO_DATA_COLOR;
  const ratioColor = (r) => {
    if (!isNum(r)) return NO_DATA_COLOR;
    if (r >= 0.99) return "#19d27c";
    if (r >= 0.95) return "#b5e61d";
    if (r >= 0.8) return "#ffb020";
    return "#ff4d4f";
  };
  const $ = (id) => document.getElementById(id);
  const setText = (id, text) => {
    const el = $(id);
    if (el && el.textContent !== text) el.textContent = text;
  };

  // ---- charts ----------------------------------------------------------------------------
  const charts = {};
  function initCharts() {
    const opts = { renderer: "canvas" };
    charts.aqi = echarts.init($("chart-district-aqi"), null, opts);
    charts.kitchen = echarts.init($("chart-kitchen-alarms"), null, opts);
    charts.parking = echarts.init($("chart-parking"), null, opts);
    charts.readings = echarts.init($("chart-readings"), null, opts);
    charts.health = echarts.init($("chart-health"), null, opts);

    charts.aqi.setOption({
      backgroundColor: "transparent",
      animation: false, // re-sorted every second: moving bars would only distract
      grid: { left: 118, right: 40, top: 4, bottom: 22 },
      tooltip: {
        ...TOOLTIP, trigger: "item",
        formatter: (p) => {
          const d = p.data.d;
          const cat = category(d.category);
          return `<b>${esc(d.name_zh)} ${esc(d.name_en)}</b> (${esc(d.code)})<br>`
            + `AQI <b>${fmtInt(d.aqi)}</b> ${cat ? esc(cat.zh + " " + cat.en) : ""}<br>`
            + `首要污染物 Primary: ${esc((d.primary || []).join(", ") || DASH)}`;
        },
      },
      xAxis: { type: "value", axisLabel: AXIS_TEXT, splitLine: SPLIT_LINE, min: 0 },
      yAxis: {
        type: "category", inverse: true, data: [],
        axisLabel: { ...AXIS_TEXT, interval: 0, fontSize: 11 },
        axisTick: { show: false }, axisLine: { lineStyle: { color: "#1c3f6e" } },
      },
      series: [{
        type: "bar", barWidth: "62%", data: [],
        label: { show: true, position: "right", color: "#d8e6ff", fontSize: 11,
          formatter: (p) => fmtInt(p.data.d.aqi) },
        itemStyle: { borderRadius: [0, 3, 3, 0] },
      }],
    });

    charts.kitchen.setOption({
      backgroundColor: "transparent",
      grid: { left: 30, right: 6, top: 18, bottom: 50 },
      tooltip: { ...TOOLTIP, trigger: "axis", axisPointer: { type: "shadow" } },
      xAxis: {
        type: "category", data: [],
        axisLabel: { ...AXIS_TEXT, interval: 0, fontSize: 10, lineHeight: 11, formatter: stacked },
        axisTick: { show: false }, axisLine: { lineStyle: { color: "#1c3f6e" } },
      },
      yAxis: { type: "value", minInterval: 1, axisLabel: AXIS_TEXT, splitLine: SPLIT_LINE },
      series: [{
        name: "未结告警 Open alarms", type: "bar", barWidth: "60%", data: [],
        label: { show: true, position: "top", color: "#ffb020", fontSize: 10,
          formatter: (p) => (p.value > 0 ? p.value : "") },
        itemStyle: {
          borderRadius: [3, 3, 0, 0],
          color: new echarts.graphic.LinearGradient(0, 0, 0, 1, [
            { offset: 0, color: "#ffb020" }, { offset: 1, color: "#ff4d4f" }]),
        },
      }],
    });

    charts.parking.setOption({
      backgroundColor: "transparent",
      legend: { top: 0, right: 4, textStyle: AXIS_TEXT, itemWidth: 12, itemHeight: 8 },
      grid: { left: 42, right: 8, top: 24, bottom: 42 },
      tooltip: {
        ...TOOLTIP, trigger: "axis", axisPointer: { type: "shadow" },
        valueFormatter: (v) => (isNum(v) ? v.toFixed(1) + "%" : DASH),
      },
      xAxis: {
        type: "category", data: [],
        axisLabel: { ...AXIS_TEXT, interval: 0, rotate: 45, fontSize: 10 },
        axisTick: { show: false }, axisLine: { lineStyle: { color: "#1c3f6e" } },
      },
      yAxis: { type: "value", min: 0, max: 100,
        axisLabel: { ...AXIS_TEXT, formatter: "{value}%" }, splitLine: SPLIT_LINE },
      series: [
        { name: "路内泊位 On-street bays", type: "bar", barGap: "10%", data: [],
          itemStyle: { color: "#31c8ff", borderRadius: [2, 2, 0, 0] } },
        { name: "停车场 Parking lots", type: "bar", data: [],
          itemStyle: { color: "#7b8cff", borderRadius: [2, 2, 0, 0] } },
      ],
    });

    charts.readings.setOption({
      backgroundColor: "transparent",
      animation: false,
      grid: { left: 56, right: 12, top: 14, bottom: 22 },
      tooltip: {
        ...TOOLTIP, trigger: "axis",
        valueFormatter: (v) => fmtNum(v, 1) + " /s",
      },
      xAxis: {
        type: "time", axisLabel: { ...AXIS_TEXT, hideOverlap: true,
          formatter: (v) => fmtTime(v / 1000) },
        splitLine: { show: false }, axisLine: { lineStyle: { color: "#1c3f6e" } },
      },
      yAxis: { type: "value", min: 0, axisLabel: AXIS_TEXT, splitLine: SPLIT_LINE },
      series: [{
        name: "读数/秒 Readings/s", type: "line", showSymbol: false, smooth: 0.2, data: [],
        lineStyle: { color: "#31c8ff", width: 2 },
        areaStyle: {
          color: new echarts.graphic.LinearGradient(0, 0, 0, 1, [
            { offset: 0, color: "rgba(49,200,255,0.45)" },
            { offset: 1, color: "rgba(49,200,255,0.02)" }]),
        },
      }],
    });

    const heatAxis = (gridIndex) => ({
      gridIndex, type: "category", show: false, data: [],
    });
    const heatPieces = [
      { gte: 0.99, color: "#19d27c", label: "≥99%" },
      { gte: 0.95, lt: 0.99, color: "#b5e61d", label: "95–99%" },
      { gte: 0.8, lt: 0.95, color: "#ffb020", label: "80–95%" },
      { gte: 0, lt: 0.8, color: "#ff4d4f", label: "<80%" },
      { lt: 0, color: NO_DATA_COLOR, label: "无数据 n/a" },
    ];
    charts.health.setOption({
      backgroundColor: "transparent",
      animation: false,
      title: [
        { text: "在线率 Online ratio", left: "1%", top: 0,
          textStyle: { color: "#9fb3d4", fontSize: 12, fontWeight: 500 } },
        { text: "完整率 Completeness", left: "51%", top: 0,
          textStyle: { color: "#9fb3d4", fontSize: 12, fontWeight: 500 } },
      ],
      tooltip: {
        ...TOOLTIP, trigger: "item",
        formatter: (p) => {
          const s = p.data.s;
          return `<b>${esc(s.name_zh)}</b><br>${esc(s.name_en)}<br>`
            + `<span style="color:#7f95b8">${esc(s.id)} · ${esc(districtName(s.district))}</span><br>`
            + `在线 Online ${fmtInt(s.online)} / ${fmtInt(s.devices)} (${fmtPct(s.online_ratio)})<br>`
            + `完整率 Completeness ${fmtPct(s.completeness)} · 有效率 Validity ${fmtPct(s.validity, 2)}<br>`
            + `P95 延迟 Latency ${fmtSec(s.latency_p95_s)}`;
        },
      },
      grid: [
        { left: "1%", width: "48%", top: 22, bottom: 26 },
        { left: "51%", width: "48%", top: 22, bottom: 26 },
      ],
      xAxis: [heatAxis(0), heatAxis(1)],
      yAxis: [{ ...heatAxis(0), inverse: true }, { ...heatAxis(1), inverse: true }],
      visualMap: {
        type: "piecewise", dimension: 2, seriesIndex: [0, 1], pieces: heatPieces,
        orient: "horizontal", left: "center", bottom: 0, itemWidth: 12, itemHeight: 8,
        itemGap: 8, textStyle: { color: "#9fb3d4", fontSize: 11 }, selectedMode: false,
      },
      series: [0, 1].map((i) => ({
        type: "heatmap", xAxisIndex: i, yAxisIndex: i, data: [],
        itemStyle: { borderColor: "#0b1a33", borderWidth: 1.5, borderRadius: 2 },
        emphasis: { itemStyle: { borderColor: "#fff", borderWidth: 1.5 } },
      })),
    });

    // Containers are sized by CSS flex/grid: follow their size, not only the window's.
    if (typeof ResizeObserver !== "undefined") {
      const ro = new ResizeObserver((entries) => {
        for (const e of entries) {
          const c = echarts.getInstanceByDom(e.target);
          if (c) c.resize();
        }
      });
      Object.values(charts).forEach((c) => ro.observe(c.getDom()));
    } else {
      window.addEventListener("resize", () => Object.values(charts).forEach((c) => c.resize()));
    }
  }

  // ---- rendering -------------------------------------------------------------------------
  const districtsByCode = new Map();
  const districtName = (code) => {
    const d = districtsByCode.get(code);
    return d ? `${d.name_zh} ${d.name_en}` : code || DASH;
  };
  let lastState = null;
  let activeDomain = "environment";

  function renderCity(state) {
    const city = state.city || {};
    const cat = category(city.category);
    setText("city-aqi", fmtInt(city.aqi));
    const aqiEl = $("city-aqi");
    aqiEl.style.color = isNum(city.aqi) ? aqiColor(city) : "";
    const badge = $("city-aqi-category");
    badge.textContent = cat ? `${cat.zh} ${cat.en}` : `${DASH} 暂无 n/a`;
    badge.style.background = cat ? aqiColor(city) : NO_DATA_COLOR;
    badge.style.color = cat ? cat.ink : "#fff";
    setText("city-devices", fmtInt(city.devices));
    setText("city-online", fmtInt(city.online));
    setText("city-online-ratio",
      isNum(city.online) && isNum(city.devices) && city.devices > 0
        ? fmtPct(city.online / city.devices) : DASH);
    setText("city-open-alarms", fmtInt(city.open_alarms));
    setText("clock", fmtClock(state.t));
  }

  function renderDistrictGrid(districts) {
    const grid = $("district-grid");
    const codes = districts.map((d) => d.code).join(",");
    if (grid.dataset.codes !== codes) {
      grid.textContent = "";
      for (const d of districts) {
        const tile = document.createElement("div");
        tile.className = "district-tile";
        tile.dataset.code = d.code;
        tile.innerHTML = '<div class="row"><span class="dn"></span><span class="dp"></span></div>'
          + '<div class="row"><span class="de"></span><span class="da"></span></div>'
          + '<div class="row dm"><span class="occ"></span><span class="alm"></span></div>';
        grid.appendChild(tile);
      }
      grid.dataset.codes = codes;
    }
    districts.forEach((d, i) => {
      const tile = grid.children[i];
      const color = isNum(d.aqi) ? aqiColor(d) : NO_DATA_COLOR;
      const cat = category(d.category);
      tile.style.borderLeftColor = color;
      tile.style.background = `linear-gradient(90deg, ${color}40, rgba(20,45,85,0.85) 70%)`;
      tile.title = `${d.name_zh} ${d.name_en} (${d.code})\nAQI ${fmtInt(d.aqi)}`
        + (cat ? ` ${cat.zh} ${cat.en}` : "")
        + `\n首要污染物 Primary: ${(d.primary || []).join(", ") || DASH}`
        + `\n泊位 Bays ${fmtPct(d.bay_occupancy, 0)} · 车场 Lots ${fmtPct(d.lot_occupancy, 0)}`
        + `\n在线率 Online ${fmtPct(d.online_ratio)} · 完整率 Completeness ${fmtPct(d.completeness)}`;
      tile.querySelector(".dn").textContent = shortZh(d.name_zh) || d.code;
      tile.querySelector(".de").textContent = d.name_en || "";
      tile.querySelector(".da").textContent = fmtInt(d.aqi);
      tile.querySelector(".dp").textContent = (d.primary || []).join(" ");
      tile.querySelector(".occ").textContent = isNum(d.bay_occupancy) || isNum(d.lot_occupancy)
        ? `P ${fmtPct(isNum(d.bay_occupancy) ? d.bay_occupancy : d.lot_occupancy, 0)}` : "";
      const alm = tile.querySelector(".alm");
      alm.textContent = isNum(d.open_alarms) ? `⚠ ${d.open_alarms}` : "";
      alm.className = "alm" + (d.open_alarms > 0 ? " alarms-hot" : "");
    });
  }

  function renderDistrictCharts(districts) {
    const sorted = districts.slice().sort((a, b) => {
      const av = isNum(a.aqi) ? a.aqi : -1;
      const bv = isNum(b.aqi) ? b.aqi : -1;
      return bv - av || String(a.code).localeCompare(String(b.code));
    });
    charts.aqi.setOption({
      yAxis: { data: sorted.map((d) => `${shortZh(d.name_zh)} ${d.name_en}`) },
      series: [{
        data: sorted.map((d) => ({
          value: isNum(d.aqi) ? d.aqi : 0, d,
          itemStyle: { color: isNum(d.aqi) ? aqiColor(d) : NO_DATA_COLOR },
        })),
      }],
    });

    charts.kitchen.setOption({
      xAxis: { data: districts.map((d) => shortZh(d.name_zh)) },
      series: [{ data: districts.map((d) => (isNum(d.open_alarms) ? d.open_alarms : null)) }],
    });

    let withParking = districts.filter((d) => isNum(d.bay_occupancy) || isNum(d.lot_occupancy));
    if (withParking.length === 0) withParking = districts;
    const pct = (v) => (isNum(v) ? Math.round(v * 1000) / 10 : null);
    charts.parking.setOption({
      xAxis: { data: withParking.map((d) => shortZh(d.name_zh)) },
      series: [
        { data: withParking.map((d) => pct(d.bay_occupancy)) },
        { data: withParking.map((d) => pct(d.lot_occupancy)) },
      ],
    });
  }

  function renderDomain(systems) {
    const rows = systems.filter((s) => s.domain === activeDomain);
    const bar = (r) => `<span class="bar"><i style="width:${isNum(r) ? Math.max(0, Math.min(1, r)) * 100 : 0}%;`
      + `background:${ratioColor(r)}"></i></span><span class="pct">${fmtPct(r)}</span>`;
    $("domain-rows").innerHTML = rows.map((s) => `<tr data-system="${esc(s.id)}">`
      + `<td class="sys" title="${esc(s.name_en)} (${esc(s.id)})">${esc(s.name_zh)}</td>`
      + `<td>${esc(districtName(s.district))}</td>`
      + `<td class="num">${fmtInt(s.online)} / ${fmtInt(s.devices)}</td>`
      + `<td>${bar(s.online_ratio)}</td><td>${bar(s.completeness)}</td>`
      + `<td class="num">${fmtPct(s.validity, 2)}</td>`
      + `<td class="num">${fmtSec(s.latency_p95_s)}</td></tr>`).join("");
    let dev = null;
    let onl = null;
    let compSum = 0;
    let compN = 0;
    for (const s of rows) {
      if (isNum(s.devices)) dev = (dev || 0) + s.devices;
      if (isNum(s.online)) onl = (onl || 0) + s.online;
      if (isNum(s.completeness)) { compSum += s.completeness; compN += 1; }
    }
    $("domain-summary").title = DOMAIN_LABELS[activeDomain];
    $("domain-summary").innerHTML = `<b>${rows.length}</b> 系统 systems · `
      + `在线 online <b>${fmtInt(onl)}</b> / ${fmtInt(dev)} · `
      + `平均完整率 avg completeness <b>${compN ? fmtPct(compSum / compN) : DASH}</b>`;
  }

  function renderHealth(systems) {
    const cell = (s, i, key) => ({
      value: [i % HEAT_COLS, Math.floor(i / HEAT_COLS), isNum(s[key]) ? s[key] : -1], s,
    });
    const rowsN = Math.max(1, Math.ceil(systems.length / HEAT_COLS));
    const xs = Array.from({ length: HEAT_COLS }, (_, i) => i);
    const ys = Array.from({ length: rowsN }, (_, i) => i);
    charts.health.setOption({
      xAxis: [{ data: xs }, { data: xs }],
      yAxis: [{ data: ys }, { data: ys }],
      series: [
        { data: systems.map((s, i) => cell(s, i, "online_ratio")) },
        { data: systems.map((s, i) => cell(s, i, "completeness")) },
      ],
    });
  }

  function renderPipeline(state) {
    const p = state.pipeline || {};
    setText("readings-per-s", fmtNum(p.readings_per_s, 1));
    setText("frames-per-s", fmtNum(p.frames_per_s, 1));
    setText("latency-p50", fmtSec(p.latency_p50_s));
    setText("latency-p95", fmtSec(p.latency_p95_s));
    setText("latency-p99", fmtSec(p.latency_p99_s));
    setText("frame-queue", fmtInt(p.frame_queue));
    setText("write-queue", fmtInt(p.write_queue));
    setText("stored-raw", fmtInt(p.stored_raw));
    setText("stored-agg", fmtInt(p.stored_agg));
    setText("late-readings", fmtInt(p.late_readings));
    setText("rejected", fmtInt(p.rejected));
    setText("write-errors", fmtInt(p.write_errors));
    $("write-errors").classList.toggle("bad", isNum(p.write_errors) && p.write_errors > 0);
    const lag = isNum(state.t) && isNum(state.event_clock) ? state.t - state.event_clock : null;
    setText("event-clock", isNum(state.event_clock)
      ? `${fmtTime(state.event_clock)} −${fmtNum(lag, 1)}s` : DASH);
    const series = Array.isArray(p.series) ? p.series : [];
    charts.readings.setOption({
      series: [{
        data: series.filter((pt) => Array.isArray(pt) && isNum(pt[0]))
          .map((pt) => [pt[0] * 1000, isNum(pt[1]) ? pt[1] : null]),
      }],
    });
  }

  const seenAlarms = new Set();
  let alarmsPrimed = false;
  function renderAlarms(alarms) {
    const feed = $("alarm-feed");
    setText("alarm-count", `${alarms.length} 条 entries`);
    if (alarms.length === 0) {
      feed.innerHTML = '<li class="empty">暂无告警 No alarms</li>';
      return;
    }
    const keys = alarms.map((a) => `${a.t}|${a.restaurant}|${a.alarm}|${a.state}`);
    feed.innerHTML = alarms.map((a, i) => {
      const fresh = alarmsPrimed && !seenAlarms.has(keys[i]);
      const st = ["raised", "ongoing", "cleared"].includes(a.state) ? a.state : "";
      return `<li class="${fresh ? "fresh" : ""}" title="${esc(a.restaurant)}">`
        + `<span class="at">${fmtTime(a.t)}</span>`
        + `<span class="ad">${esc(districtName(a.district).split(" ")[0])}</span>`
        + `<span class="an">${esc(a.alarm_zh || a.alarm)}<small>${esc(a.alarm)}</small></span>`
        + `<span class="av">${isNum(a.value) ? fmtNum(a.value, 1) : DASH}</span>`
        + `<span class="as ${st}">${esc(STATE_LABELS[a.state] || a.state || DASH).split(" ")[0]}</span></li>`;
    }).join("");
    seenAlarms.clear();
    keys.forEach((k) => seenAlarms.add(k));
    alarmsPrimed = true;
  }

  function render(state) {
    lastState = state;
    const districts = Array.isArray(state.districts) ? state.districts : [];
    const systems = Array.isArray(state.systems) ? state.systems : [];
    districtsByCode.clear();
    for (const d of districts) districtsByCode.set(d.code, d);
    renderCity(state);
    renderDistrictGrid(districts);
    renderDistrictCharts(districts);
    renderDomain(systems);
    renderHealth(systems);
    renderPipeline(state);
    renderAlarms(Array.isArray(state.alarms) ? state.alarms : []);
  }

  // ---- connection: SSE first, polling fallback ------------------------------------------
  let es = null;
  let pollTimer = null;
  let retryTimer = null;
  let lastUpdate = 0;
  let mode = "connecting";

  const CONN_TEXT = {
    connecting: "连接中 Connecting",
    live: "实时 Live (SSE)",
    polling: "轮询 Polling /api/state",
    stale: "数据延迟 Stale",
    offline: "已断开 Offline",
  };
  function setConn(state) {
    const el = $("connection");
    if (el.dataset.state !== state) {
      el.dataset.state = state;
      el.querySelector(".conn-text").textContent = CONN_TEXT[state] || state;
    }
  }

  function accept(text, how) {
    let state;
    try {
      state = JSON.parse(text);
    } catch (err) {
      return; // a torn frame: the next one (≤ 1 s) replaces it
    }
    lastUpdate = Date.now();
    mode = how;
    setConn(how);
    render(state);
  }

  function connectSSE() {
    if (typeof EventSource === "undefined") {
      startPolling();
      return;
    }
    if (es) es.close();
    es = new EventSource("/events");
    const onData = (ev) => {
      stopPolling();
      accept(ev.data, "live");
    };
    es.addEventListener("state", onData);
    es.addEventListener("message", onData);
    es.onerror = () => {
      // The browser would retry by itself, but we fall back to polling until SSE works again.
      if (es) es.close();
      es = null;
      startPolling();
      if (!retryTimer) {
        retryTimer = setTimeout(() => { retryTimer = null; connectSSE(); }, SSE_RETRY_MS);
      }
    };
  }

  async function pollOnce() {
    try {
      const resp = await fetch("/api/state", { cache: "no-store" });
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      accept(await resp.text(), "polling");
    } catch (err) {
      mode = "offline";
      setConn("offline");
    }
  }
  function startPolling() {
    if (pollTimer) return;
    if (mode !== "live") setConn(lastUpdate ? "polling" : "connecting");
    pollOnce();
    pollTimer = setInterval(pollOnce, POLL_MS);
  }
  function stopPolling() {
    if (pollTimer) clearInterval(pollTimer);
    pollTimer = null;
  }

  function watchdog() {
    if (lastUpdate && Date.now() - lastUpdate > STALE_MS && mode !== "offline") setConn("stale");
  }

  // ---- boot ---------------------------------------------------------------------------------
  function initTabs() {
    document.querySelectorAll(".tab").forEach((btn) => {
      btn.addEventListener("click", () => {
        activeDomain = btn.dataset.domain;
        document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b === btn));
        if (lastState) renderDomain(Array.isArray(lastState.systems) ? lastState.systems : []);
      });
    });
  }

  function initLegend() {
    $("aqi-legend").innerHTML = AQI_CATEGORIES.slice(1).map((c) =>
      `<span><i style="background:${c.color}"></i>${esc(c.zh)} ${esc(c.en)}</span>`).join("");
  }

  function boot() {
    initLegend();
    initTabs();
    initCharts();
    connectSSE();
    setInterval(watchdog, 1000);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", boot);
  } else {
    boot();
  }
})();
