// The Oxbow console: reads /api/* of this broker and redraws every 2 s. No framework, no CDN.
(function () {
  const $ = (id) => document.getElementById(id);
  const colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
  let canChange = false;
  let tab = "cluster";

  async function json(path, options) {
    const response = await fetch(path, options);
    const body = response.status === 204 ? {} : await response.json();
    if (!response.ok) throw new Error(body.message || response.statusText);
    return body;
  }
  const cell = (row, text, className) => { const td = row.insertCell(); td.textContent = text; if (className) td.className = className; return td; };

  function show(name) {
    tab = name;
    for (const section of document.querySelectorAll(".tab")) section.hidden = section.id !== name;
    for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.tab === name);
    refresh();
  }

  // Rates (per second) between consecutive samples, per series.
  function rates(samples, field) {
    const series = {};
    for (let i = 1; i < samples.length; i++) {
      const seconds = (samples[i].at_ms - samples[i - 1].at_ms) / 1000;
      for (const [name, value] of Object.entries(samples[i][field])) {
        // A series new since the last sample (a topic just created) counts from zero.
        const before = samples[i - 1][field][name] || 0;
        if (seconds <= 0) continue;
        (series[name] = series[name] || []).push([samples[i].at_ms, Math.max(0, (value - before) / seconds)]);
      }
    }
    return series;
  }
  function levels(samples, field) {
    const series = {};
    for (const sample of samples) for (const [name, value] of Object.entries(sample[field])) (series[name] = series[name] || []).push([sample.at_ms, value]);
    return series;
  }

  // `format` writes a value for the legend (the latest and the peak of each series).
  function chart(svg, legend, series, format = (v) => String(Math.round(v))) {
    const names = Object.keys(series);
    let max = 1, first = Infinity, last = 0;
    for (const points of Object.values(series)) for (const [t, v] of points) { max = Math.max(max, v); first = Math.min(first, t); last = Math.max(last, t); }
    const span = Math.max(1, last - first);
    svg.innerHTML = "";
    legend.innerHTML = "";
    names.forEach((name, i) => {
      const color = colors[i % colors.length];
      const points = series[name].map(([t, v]) => `${((t - first) / span) * 600},${155 - (v / max) * 145}`).join(" ");
      const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
      line.setAttribute("points", points);
      line.setAttribute("fill", "none");
      line.setAttribute("stroke", color);
      line.setAttribute("stroke-width", "2");
      line.dataset.series = name;
      svg.appendChild(line);
      const latest = series[name].length ? series[name][series[name].length - 1][1] : 0;
      const item = document.createElement("span");
      item.innerHTML = `<i style="background:${color}"></i>`;
      const peak = Math.max(0, ...series[name].map(([, v]) => v));
      item.append(`${name}: ${format(latest)} (peak ${format(peak)})`);
      item.dataset.series = name;
      item.dataset.latest = String(latest);
      item.dataset.max = String(peak);
      legend.appendChild(item);
    });
    if (!names.length) legend.textContent = "No data yet.";
  }

  async function drawCluster() {
    const cluster = await json("/api/cluster");
    canChange = cluster.can_change;
    $("mode").textContent = canChange ? "read-write" : "read-only (log in to make changes)";
    const body = $("brokers").tBodies[0];
    body.innerHTML = "";
    for (const broker of cluster.brokers) {
      const row = body.insertRow();
      row.dataset.broker = broker.node_id;
      cell(row, broker.node_id);
      cell(row, `${broker.host}:${broker.port}`);
      cell(row, broker.fenced ? "fenced" : "alive", broker.fenced ? "fenced" : "alive");
      cell(row, broker.leaders);
    }
    $("controller").textContent = cluster.controller_id < 0 ? "electing…" : `Broker ${cluster.controller_id} (voters ${cluster.voters.join(", ")})`;
    $("version").textContent = `Oxbow ${cluster.version}`;
    const history = await json("/api/history");
    chart($("throughput"), $("throughput-legend"), rates(history, "records"), (v) => `${Math.round(v)}/s`);
    chart($("bytes"), $("bytes-legend"), rates(history, "bytes"), (v) => `${size(Math.round(v))}/s`);
  }

  async function drawTopics() {
    const topics = (await json("/api/topics")).filter((t) => !t.internal);
    const list = $("topic-list");
    list.innerHTML = "";
    const select = $("browse-topic");
    const chosen = select.value;
    select.innerHTML = "";
    for (const topic of topics) {
      select.add(new Option(topic.name, topic.name));
      const block = document.createElement("div");
      block.className = "topic";
      block.dataset.topic = topic.name;
      const title = document.createElement("h3");
      title.textContent = `${topic.name} `;
      const del = document.createElement("button");
      del.textContent = "Delete";
      del.className = "danger";
      del.disabled = !canChange;
      del.onclick = async () => { if (confirm(`Delete ${topic.name} and its data?`)) { await json(`/api/topics/${encodeURIComponent(topic.name)}`, { method: "DELETE" }); refresh(); } };
      title.appendChild(del);
      block.appendChild(title);
      const overrides = topic.configs.filter((c) => !c.is_default).map((c) => `${c.name}=${c.value}`);
      const configs = document.createElement("p");
      configs.className = "muted";
      configs.textContent = overrides.length ? `Overrides: ${overrides.join(", ")}` : "Broker defaults";
      block.appendChild(configs);
      const wrap = document.createElement("div");
      wrap.className = "scroll";
      const table = document.createElement("table");
      table.innerHTML = "<thead><tr><th>Partition</th><th>Leader</th><th>Replicas</th><th>In sync</th><th>Start</th><th>High watermark</th><th>End</th><th>Size</th></tr></thead>";
      const body = table.createTBody();
      for (const p of topic.partitions) {
        const row = body.insertRow();
        row.dataset.partition = p.partition;
        cell(row, p.partition);
        cell(row, p.leader < 0 ? "none" : p.leader);
        cell(row, p.replicas.join(","));
        cell(row, p.isr.join(","), p.isr.length < p.replicas.length ? "under isr" : "isr");
        cell(row, p.log_start_offset);
        cell(row, p.high_watermark);
        cell(row, p.log_end_offset);
        cell(row, size(p.size_bytes));
      }
      wrap.appendChild(table);
      block.appendChild(wrap);
      list.appendChild(block);
    }
    if (chosen) select.value = chosen;
    $("create-topic").querySelector("button").disabled = !canChange;
  }

  async function drawGroups() {
    const groups = await json("/api/groups");
    chart($("lag"), $("lag-legend"), levels(await json("/api/history"), "lag"));
    const list = $("group-list");
    list.innerHTML = "";
    for (const group of groups) {
      const card = document.createElement("div");
      card.className = "card";
      card.dataset.group = group.group_id;
      const lag = group.offsets.reduce((sum, row) => sum + row.lag, 0);
      card.innerHTML = "<h2></h2><p class='muted'></p><div class='scroll'><table><thead><tr><th>Topic</th><th>Partition</th><th>Committed</th><th>End</th><th>Lag</th><th>Member</th></tr></thead><tbody></tbody></table></div>";
      card.querySelector("h2").textContent = group.group_id;
      card.querySelector("p").textContent = `${group.state}, generation ${group.generation_id}, ${group.members.length} member(s), lag ${lag}`;
      card.dataset.lag = String(lag);
      const body = card.querySelector("tbody");
      for (const row of group.offsets) {
        const tr = body.insertRow();
        cell(tr, row.topic); cell(tr, row.partition); cell(tr, row.committed_offset < 0 ? "-" : row.committed_offset);
        cell(tr, row.log_end_offset); cell(tr, row.lag); cell(tr, row.client_id || "-");
      }
      list.appendChild(card);
    }
  }

  function size(bytes) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = bytes, unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
    return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
  }

  function rendered(value) {
    if (!value || value.format === "null") return "null";
    if (value.format === "json" || value.format === "msgpack") return JSON.stringify(value.value, null, 1) + (value.format === "msgpack" ? "\n(MessagePack)" : "");
    return value.value;
  }

  async function browse() {
    const topic = $("browse-topic").value;
    if (!topic) return;
    const time = $("browse-time").value.trim();
    let from = `offset=${$("browse-offset").value}`;
    if (time) {
      // The page shows UTC, so a time without a zone is UTC too (a bare date already is).
      const at = Date.parse(/T/.test(time) && !/([zZ]|[+-]\d\d:?\d\d)$/.test(time) ? `${time}Z` : time);
      if (Number.isNaN(at)) throw new Error(`"${time}" is not a time: write it as 2026-12-02T17:00:00Z`);
      from = `timestamp=${at}`;
    }
    const page = await json(`/api/topics/${encodeURIComponent(topic)}/partitions/${$("browse-partition").value}/records?${from}&limit=50`);
    $("browse-range").textContent = `${page.records.length} record(s) from offset ${page.start}; the partition ends at ${page.end}`;
    const body = $("records").tBodies[0];
    body.innerHTML = "";
    for (const record of page.records) {
      const row = body.insertRow();
      cell(row, record.offset);
      cell(row, new Date(record.timestamp).toISOString());
      for (const value of [record.key, record.value]) { const pre = document.createElement("pre"); pre.textContent = rendered(value); row.insertCell().appendChild(pre); }
      cell(row, record.headers.map((h) => `${h.key}=${rendered(h.value)}`).join(", "));
    }
  }

  async function refresh() {
    try {
      if (tab === "cluster") await drawCluster();
      else if (tab === "topics") { await drawCluster(); await drawTopics(); }
      else if (tab === "groups") await drawGroups();
      else if (tab === "browse" && !$("browse-topic").options.length) await drawTopics();
    } catch (error) {
      $("mode").textContent = `error: ${error.message}`;
    }
  }

  $("create-topic").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await json("/api/topics", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name: $("new-topic").value, partitions: Number($("new-partitions").value), replication_factor: $("new-replication").value ? Number($("new-replication").value) : null }) });
      $("topic-message").textContent = `Created ${$("new-topic").value}`;
      $("new-topic").value = "";
      refresh();
    } catch (error) {
      $("topic-message").textContent = error.message;
    }
  });
  $("browse-form").addEventListener("submit", (event) => { event.preventDefault(); browse().catch((error) => { $("browse-range").textContent = error.message; }); });
  for (const link of document.querySelectorAll("nav a")) link.addEventListener("click", () => show(link.dataset.tab));
  show((location.hash || "#cluster").slice(1));
  setInterval(refresh, 2000);
})();
