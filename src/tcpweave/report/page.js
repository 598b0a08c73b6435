// The tcpweave report page: tables and graphs drawn from the JSON document in
// #report-data (written by tcpweave/report/page.py) with plotly.js, embedded above.
"use strict";
(function () {
  const DOC = JSON.parse(document.getElementById("report-data").textContent);
  const PAGE_ROWS = 50;
  const SVG_SEGMENTS = 4000; // above this a graph is drawn with WebGL (scattergl)
  const GAP_SHAPES = 300; // gaps drawn as bands, at most (the byte map shows them all)
  const DIRS = ["c2s", "s2c"];
  const MARK_COLOURS = {
    "conflict": "#d62728", "bad-checksum": "#8c564b", "truncated": "#ff7f0e",
    "out-of-order": "#9467bd", "new": "#1f77b4", "retransmission": "#e6550d",
    "other": "#7f7f7f",
  };
  const SPAN_COLOURS = {
    "kept": "#2ca02c", "gap": "#bbbbbb", "truncated": "#ff7f0e", "conflict": "#d62728",
    "bad-checksum": "#8c564b",
  };

  // -- columns: base64 little-endian typed arrays, text as dictionary + codes ----------
  function bytesOf(text) {
    const bin = atob(text);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }
  function column(c) {
    const values = c.u8 !== undefined ? new Uint8Array(bytesOf(c.u8))
      : c.u16 !== undefined ? new Uint16Array(bytesOf(c.u16))
      : c.i32 !== undefined ? new Int32Array(bytesOf(c.i32))
      : new Float64Array(bytesOf(c.f64));
    if (c.dict === undefined) return values;
    return { dict: c.dict, codes: values };
  }
  function columns(obj) {
    const out = {};
    for (const k of Object.keys(obj)) out[k] = column(obj[k]);
    return out;
  }
  const S = columns(DOC.sessions.columns);
  const N = DOC.sessions.n;
  // the graph columns are decoded when a session is first drawn (the table comes first)
  let P = null, SP = null, LEN = null;
  function graphColumns() {
    if (P === null) {
      P = columns(DOC.graphs.packet);
      SP = columns(DOC.graphs.span);
      LEN = columns(DOC.graphs.length);
    }
  }
  const text = (c, i) => c.dict[c.codes[i]];

  // -- header, capture summary, audit ---------------------------------------------------
  const esc = (s) => String(s).replace(/[&<>"]/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[ch]));
  const num = (v) => Number(v).toLocaleString("en-US");
  document.getElementById("title").textContent = "tcpweave report: " + DOC.captures.join(", ");
  document.getElementById("subtitle").textContent = "tcpweave " + DOC.version + ", generated "
    + DOC.generated + "; overlap policy " + DOC.policy + ", checksums " + DOC.checksums;
  document.getElementById("capture").innerHTML = "<tbody>" + DOC.capture
    .filter((row, i) => i < 4 || row[1] !== 0)
    .map((row) => "<tr><td>" + esc(row[0]) + "</td><td>" + num(row[1]) + "</td></tr>").join("")
    + "</tbody>";
  document.querySelector("#audit tbody").innerHTML = DOC.audit
    .map((r) => "<tr><td>" + esc(r[0]) + "</td><td>" + esc(r[1]) + "</td><td>" + esc(r[2]) + "</td></tr>")
    .join("");
  const g = DOC.graphs;
  document.getElementById("graph-note").textContent = "Graphs are embedded for " + num(g.drawn)
    + " of " + num(N) + " sessions (" + num(g.packets) + " packets; budget " + num(g.budget)
    + " packets, --graph-packets)" + (g.drawn < N ? ": " + num(N - g.drawn)
    + " sessions did not fit and are left out (their rows are in the table)." : ".");

  // -- the session table: sort, filter, pages -------------------------------------------
  const endpoint = (addr, port, i) => {
    const a = text(addr, i);
    return (a.includes(":") ? "[" + a + "]" : a) + ":" + port[i];
  };
  const COLS = [
    { key: "stream", label: "stream", n: (i) => S.stream[i] },
    { key: "client", label: "client", t: (i) => endpoint(S.client, S.cport, i) },
    { key: "server", label: "server", t: (i) => endpoint(S.server, S.sport, i) },
    { key: "start", label: "start (UTC)", n: (i) => S.start[i],
      show: (i) => new Date(S.start[i] * 1000).toISOString().replace("T", " ").replace("Z", "") },
    { key: "duration", label: "duration s", n: (i) => S.duration[i], show: (i) => S.duration[i].toFixed(3) },
    { key: "pkts_c2s", label: "pkts →", n: (i) => S.pkts_c2s[i] },
    { key: "pkts_s2c", label: "pkts ←", n: (i) => S.pkts_s2c[i] },
    { key: "bytes_c2s", label: "bytes →", n: (i) => S.bytes_c2s[i] },
    { key: "bytes_s2c", label: "bytes ←", n: (i) => S.bytes_s2c[i] },
    { key: "retrans", label: "retrans B", n: (i) => S.retrans[i] },
    { key: "ooo", label: "out of order", n: (i) => S.ooo[i] },
    { key: "gaps", label: "gaps", n: (i) => S.gaps[i] },
    { key: "conflicts", label: "conflicts", n: (i) => S.conflicts[i] },
    { key: "close", label: "close", c: S.close },
    { key: "state", label: "state", c: S.state },
    { key: "history", label: "history", c: S.history },
    { key: "verdict", label: "verdict", c: S.verdict },
  ];
  const view = { order: null, rows: null, page: 0, sortKey: "stream", asc: true, chosen: -1 };
  let haystack = null; // per row: its text, lower case, built on the first filter

  function sortKeys(col) {
    if (col.n) return col.n;
    if (col.c) { // rank of each dictionary value
      const idx = col.c.dict.map((_, k) => k).sort((a, b) => col.c.dict[a] < col.c.dict[b] ? -1 : col.c.dict[a] > col.c.dict[b] ? 1 : 0);
      const rank = new Int32Array(idx.length);
      idx.forEach((k, r) => { rank[k] = r; });
      return (i) => rank[col.c.codes[i]];
    }
    return null;
  }
  function sortRows() {
    const col = COLS.find((c) => c.key === view.sortKey);
    const order = new Int32Array(N);
    for (let i = 0; i < N; i++) order[i] = i;
    const key = sortKeys(col);
    const dir = view.asc ? 1 : -1;
    if (col.key === "stream" && view.asc) {
      // rows are in stream order already
    } else if (key) {
      const k = new Float64Array(N);
      for (let i = 0; i < N; i++) k[i] = key(i);
      order.sort((a, b) => (k[a] - k[b]) * dir || a - b);
    } else {
      const t = Array.from({ length: N }, (_, i) => col.t(i));
      order.sort((a, b) => (t[a] < t[b] ? -dir : t[a] > t[b] ? dir : a - b));
    }
    view.order = order;
  }
  function rowText(i) {
    return [S.stream[i], endpoint(S.client, S.cport, i), endpoint(S.server, S.sport, i),
      text(S.close, i), text(S.state, i), text(S.history, i), text(S.verdict, i)].join(" ").toLowerCase();
  }
  function applyFilter() {
    const terms = document.getElementById("filter").value.toLowerCase().split(/\s+/).filter(Boolean);
    const notExact = document.getElementById("not-exact").checked;
    if (terms.length && haystack === null) haystack = Array.from({ length: N }, (_, i) => rowText(i));
    const exactCode = S.verdict.dict.indexOf("exact");
    const out = new Int32Array(N);
    let n = 0;
    for (const i of view.order) {
      if (notExact && S.verdict.codes[i] === exactCode) continue;
      if (terms.length) {
        const h = haystack[i];
        let ok = true;
        for (const t of terms) if (!h.includes(t)) { ok = false; break; }
        if (!ok) continue;
      }
      out[n++] = i;
    }
    view.rows = out.subarray(0, n);
    view.page = 0;
    drawTable();
  }
  function cell(col, i) {
    if (col.c) {
      const v = text(col.c, i);
      const cls = col.key === "verdict" ? (v === "exact" ? ' class="verdict-exact"' : ' class="verdict-bad"') : "";
      return "<td" + cls + ">" + esc(v) + "</td>";
    }
    if (col.show) return '<td class="num">' + esc(col.show(i)) + "</td>";
    if (col.n) return '<td class="num">' + num(col.n(i)) + "</td>";
    return "<td>" + esc(col.t(i)) + "</td>";
  }
  function drawHead() {
    document.querySelector("#sessions thead").innerHTML = "<tr>" + COLS.map((c) => {
      const cls = c.key === view.sortKey ? (view.asc ? "sorted-asc" : "sorted-desc") : "";
      return '<th data-key="' + c.key + '" class="' + cls + '">' + esc(c.label) + "</th>";
    }).join("") + "</tr>";
  }
  function drawTable() {
    const rows = view.rows;
    const pages = Math.max(1, Math.ceil(rows.length / PAGE_ROWS));
    view.page = Math.min(view.page, pages - 1);
    const lo = view.page * PAGE_ROWS;
    const html = [];
    for (let r = lo; r < Math.min(lo + PAGE_ROWS, rows.length); r++) {
      const i = rows[r];
      html.push('<tr data-row="' + i + '"' + (i === view.chosen ? ' class="chosen"' : "") + ">"
        + COLS.map((c) => cell(c, i)).join("") + "</tr>");
    }
    document.querySelector("#sessions tbody").innerHTML = html.join("");
    document.getElementById("page-label").textContent = "page " + (view.page + 1) + " of " + pages;
    document.getElementById("match-count").textContent = num(rows.length) + " of " + num(N) + " sessions";
    document.getElementById("match-count").dataset.count = rows.length;
  }
  document.querySelector("#sessions thead").addEventListener("click", (e) => {
    const th = e.target.closest("th");
    if (!th) return;
    if (view.sortKey === th.dataset.key) view.asc = !view.asc;
    else { view.sortKey = th.dataset.key; view.asc = true; }
    drawHead();
    sortRows();
    applyFilter();
  });
  document.querySelector("#sessions tbody").addEventListener("click", (e) => {
    const tr = e.target.closest("tr");
    if (tr) showSession(Number(tr.dataset.row));
  });
  document.getElementById("filter").addEventListener("input", applyFilter);
  document.getElementById("not-exact").addEventListener("change", applyFilter);
  document.getElementById("prev").addEventListener("click", () => { view.page = Math.max(0, view.page - 1); drawTable(); });
  document.getElementById("next").addEventListener("click", () => { view.page += 1; drawTable(); });

  // -- one session: time-sequence graphs and byte map --------------------------------------
  function bounds(sorted, value) { // [lo, hi) of value in a sorted column
    let lo = 0, hi = sorted.length;
    while (lo < hi) { const m = (lo + hi) >> 1; if (sorted[m] < value) lo = m + 1; else hi = m; }
    let end = lo, top = sorted.length;
    while (end < top) { const m = (end + top) >> 1; if (sorted[m] <= value) end = m + 1; else top = m; }
    return [lo, end];
  }
  function segmentTraces(lo, hi, d, type) {
    const byMark = {};
    for (let k = lo; k < hi; k++) {
      if (P.dir[k] !== d || P.len[k] === 0) continue;
      const m = DOC.graphs.marks[P.mark[k]];
      const t = byMark[m] || (byMark[m] = { x: [], y: [], minus: [], text: [] });
      const end = P.seq[k] + P.len[k];
      t.x.push(P.t[k]); t.y.push(end); t.minus.push(P.len[k]);
      t.text.push("frame " + P.frame[k] + "<br>bytes " + P.seq[k] + "-" + end + " (" + P.len[k] + ")<br>" + m);
    }
    return Object.keys(byMark).map((m) => ({
      type: type, mode: "markers", name: m, x: byMark[m].x, y: byMark[m].y,
      text: byMark[m].text, hoverinfo: "text+x",
      marker: { symbol: "line-ew-open", size: 7, color: MARK_COLOURS[m], line: { width: 2, color: MARK_COLOURS[m] } },
      error_y: { type: "data", symmetric: false, array: byMark[m].minus.map(() => 0), arrayminus: byMark[m].minus, width: 0, thickness: 1.5, color: MARK_COLOURS[m] },
    }));
  }
  function ackTraces(lo, hi, d, type) {
    const x = [], ack = [], win = [];
    for (let k = lo; k < hi; k++) {
      if (P.dir[k] === d || Number.isNaN(P.ack[k])) continue;
      x.push(P.t[k]); ack.push(P.ack[k]); win.push(P.win[k]);
    }
    const line = (name, y, colour, dash) => ({
      type: type, mode: "lines", name: name, x: x, y: y, hoverinfo: "x+y+name",
      line: { shape: "hv", color: colour, width: 1, dash: dash },
    });
    return x.length ? [line("ACK", ack, "#2ca02c", "solid"), line("ACK + window", win, "#bcbd22", "dot")] : [];
  }
  function gapShapes(s, d) {
    const [lo, hi] = bounds(SP.session, s);
    const shapes = [];
    let left = 0;
    for (let k = lo; k < hi; k++) {
      const kind = DOC.graphs.spans[SP.kind[k]];
      if (SP.dir[k] !== d || (kind !== "gap" && kind !== "truncated")) continue;
      if (shapes.length >= GAP_SHAPES) { left++; continue; }
      shapes.push({ type: "rect", xref: "paper", x0: 0, x1: 1, y0: SP.offset[k], y1: SP.offset[k] + SP.length[k],
        fillcolor: kind === "gap" ? "rgba(214,39,40,0.15)" : "rgba(255,127,14,0.2)", line: { width: 0 }, layer: "below" });
    }
    return [shapes, left];
  }
  function segmentsOf(lo, hi) {
    let n = 0;
    for (let k = lo; k < hi; k++) if (P.len[k] > 0) n++;
    return n;
  }
  const rendered = [];
  function drawGraph(s, d, lo, hi, type) {
    const el = document.getElementById("graph-" + DIRS[d]);
    const [shapes, left] = gapShapes(s, d);
    const traces = segmentTraces(lo, hi, d, type).concat(ackTraces(lo, hi, d, type));
    // the y range holds the segments and the ACKs; the window line may leave it upwards
    let ylo = Infinity, yhi = -Infinity;
    for (const t of traces) {
      if (t.name === "ACK + window") continue;
      const minus = t.error_y ? t.error_y.arrayminus : null;
      t.y.forEach((y, k) => { ylo = Math.min(ylo, y - (minus ? minus[k] : 0)); yhi = Math.max(yhi, y); });
    }
    if (!(ylo <= yhi)) { ylo = 0; yhi = 1; }
    const pad = Math.max(1, (yhi - ylo) * 0.05);
    const title = "stream " + s + " " + DIRS[d] + ": sequence offset against time"
      + (left ? " (" + left + " more gaps not shaded)" : "");
    const layout = {
      title: { text: title, font: { size: 14 } }, margin: { t: 40, r: 10, b: 45, l: 80 },
      xaxis: { title: { text: "seconds since the session's first packet" }, zeroline: false },
      yaxis: { title: { text: "stream offset (bytes)" }, zeroline: false, exponentformat: "none", range: [ylo - pad, yhi + pad] },
      shapes: shapes, hovermode: "closest", legend: { orientation: "h", y: -0.2 },
    };
    return Plotly.react(el, traces, layout, { displaylogo: false, responsive: true });
  }
  function drawByteMap(s) {
    const el = document.getElementById("bytemap");
    const [lo, hi] = bounds(SP.session, s);
    const byKind = {};
    for (let k = lo; k < hi; k++) {
      const kind = DOC.graphs.spans[SP.kind[k]];
      const t = byKind[kind] || (byKind[kind] = { x: [], y: [], base: [] });
      t.x.push(SP.length[k]); t.base.push(SP.offset[k]); t.y.push(DIRS[SP.dir[k]]);
    }
    const traces = DOC.graphs.spans.filter((k) => byKind[k]).map((k) => ({
      type: "bar", orientation: "h", name: k, x: byKind[k].x, y: byKind[k].y, base: byKind[k].base,
      marker: { color: SPAN_COLOURS[k] }, hovertemplate: k + ": bytes %{base:,} + %{x:,}<extra></extra>",
    }));
    const [llo, lhi] = bounds(LEN.session, s);
    const lengths = [];
    for (let k = llo; k < lhi; k++) lengths.push(DIRS[LEN.dir[k]] + " " + num(LEN.length[k]) + " bytes");
    return Plotly.react(el, traces, {
      title: { text: "byte map of stream " + s + " (" + lengths.join(", ") + ")", font: { size: 14 } },
      barmode: "overlay", margin: { t: 40, r: 10, b: 40, l: 50 }, xaxis: { title: { text: "stream offset (bytes)" }, exponentformat: "none" },
      yaxis: { categoryorder: "array", categoryarray: ["s2c", "c2s"] }, legend: { orientation: "h", y: -0.35 },
    }, { displaylogo: false, responsive: true });
  }
  function showSession(i) {
    graphColumns();
    view.chosen = i;
    const s = S.stream[i];
    document.getElementById("session-title").textContent = "Session " + s + ": " + endpoint(S.client, S.cport, i) + " → " + endpoint(S.server, S.sport, i);
    document.getElementById("session-facts").textContent = "history " + text(S.history, i) + ", state " + text(S.state, i)
      + ", close " + text(S.close, i) + ", verdict " + text(S.verdict, i) + "; " + num(S.bytes_c2s[i]) + " bytes →, "
      + num(S.bytes_s2c[i]) + " bytes ←.";
    const files = document.getElementById("session-files");
    files.innerHTML = "";
    if (S.file_c2s !== undefined) {
      const links = [["c2s", S.file_c2s], ["s2c", S.file_s2c]].filter(([, c]) => text(c, i))
        .map(([d, c]) => d + ': <a href="' + encodeURI(text(c, i)) + '">' + esc(text(c, i)) + "</a>");
      files.innerHTML = links.length ? "Extracted files: " + links.join(", ") : "No extracted file for this session.";
    }
    const [lo, hi] = bounds(P.session, s);
    const missing = document.getElementById("session-missing");
    const holder = document.getElementById("session-section");
    holder.dataset.stream = s;
    holder.dataset.rendered = "";
    for (const id of ["graph-c2s", "graph-s2c", "bytemap"]) Plotly.purge(document.getElementById(id));
    drawTable();
    if (lo === hi) {
      missing.textContent = "No graph for this session: its " + num(S.pkts_c2s[i] + S.pkts_s2c[i])
        + " packets did not fit the report's budget of " + num(DOC.graphs.budget)
        + " packets (raise it with --graph-packets).";
      holder.dataset.segments = "";
      holder.dataset.rendered = "1";
      return Promise.resolve();
    }
    const segments = segmentsOf(lo, hi);
    const type = segments > SVG_SEGMENTS ? "scattergl" : "scatter";
    missing.textContent = segments + " segments (packets with payload)" + (type === "scattergl" ? ", drawn with WebGL" : "")
      + "; each is a bar from its first to its last byte, coloured by what reassembly did with it.";
    holder.dataset.segments = segments;
    holder.dataset.renderer = type;
    const done = [drawGraph(s, 0, lo, hi, type), drawGraph(s, 1, lo, hi, type), drawByteMap(s)];
    return Promise.all(done).then(() => { holder.dataset.rendered = "1"; });
  }

  // -- start ------------------------------------------------------------------------------
  drawHead();
  sortRows();
  applyFilter();
  window.tcpweaveReport = { show: showSession, rows: () => view.rows, doc: DOC };
  document.body.dataset.ready = "1";
  setTimeout(() => { // after the table is on screen
    graphColumns();
    const wanted = /^#stream=(\d+)$/.exec(location.hash);
    let first = wanted ? Number(wanted[1]) : -1;
    if (first < 0 || first >= N) { // the first drawn session with data, else the first
      first = 0;
      for (let k = 0; k < P.session.length; k++) if (P.len[k] > 0) { first = P.session[k]; break; }
    }
    if (N && view.chosen < 0) showSession(first);
  }, 0);
})();
