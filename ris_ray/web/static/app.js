// ris serve: the map page. Plain JS over Leaflet; every element that shows a
// tile carries data-tile-id. The API is documented at /docs.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { pos: [], neg: [], tiles: new Map(), lastUrl: null };
const map = L.map("map", { maxZoom: 24, zoomSnap: 0.25, attributionControl: false });
const footprints = L.layerGroup().addTo(map);
const tileLayer = L.layerGroup().addTo(map);
const resultLayer = L.layerGroup().addTo(map);
const queryLayer = L.layerGroup().addTo(map);
let diffLayer = null;

const thumb = (id) => `/api/thumbnail/${id}`;

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  const body = await r.json();
  if (!r.ok) throw new Error(body.detail || r.statusText);
  return body;
}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function tag(el, id) {
  if (el) el.setAttribute("data-tile-id", id);
  return el;
}

function img(id) {
  const i = document.createElement("img");
  i.src = thumb(id);
  i.alt = id;
  i.loading = "lazy";
  return tag(i, id);
}

function ringBounds(geometry) {
  const pts = geometry.coordinates[0].map(([x, y]) => [y, x]);
  return L.latLngBounds(pts);
}

// ---------------------------------------------------------------- tiles on the map

function addTile(f) {
  const id = f.properties.tile_id;
  if (state.tiles.has(id) || !f.geometry) return;
  state.tiles.set(id, f);
  const overlay = L.imageOverlay(thumb(id), ringBounds(f.geometry), {
    interactive: true,
    className: "tile",
    alt: id,
  });
  overlay.on("add", () => tag(overlay.getElement(), id));
  overlay.on("click", (e) => onTileClick(id, e.originalEvent));
  overlay.addTo(tileLayer);
}

async function loadTiles() {
  const b = map.getBounds();
  const w = Math.max(-180, b.getWest()), e = Math.min(180, b.getEast());
  const s = Math.max(-90, b.getSouth()), n = Math.min(90, b.getNorth());
  if (!(w < e && s < n)) return;
  try {
    const fc = await getJSON(`/api/tiles?bbox=${w},${s},${e},${n}&limit=2000`);
    fc.features.forEach(addTile);
  } catch (err) {
    status(err.message, true);
  }
}

function onTileClick(id, ev) {
  if (ev && ev.shiftKey) addRole(id, "pos");
  else if (ev && (ev.altKey || ev.ctrlKey || ev.metaKey)) addRole(id, "neg");
  else {
    state.pos = [id];
    state.neg = [];
  }
  runQuery();
}

function addRole(id, role) {
  state.pos = state.pos.filter((t) => t !== id);
  state.neg = state.neg.filter((t) => t !== id);
  (role === "pos" ? state.pos : state.neg).push(id);
}

// ---------------------------------------------------------------- queries

function queryUrl(format) {
  const p = new URLSearchParams();
  state.pos.forEach((t) => p.append("tile_id", t));
  state.neg.forEach((t) => p.append("not", t));
  p.set("k", $("k").value || "10");
  p.set("metric", $("metric").value);
  p.set("alpha", $("alpha").value || "0.5");
  if ($("max-distance").value) p.set("max_distance", $("max-distance").value);
  if ($("source").value.trim()) p.append("source", $("source").value.trim());
  if ($("exclude-same-source").checked) p.set("exclude_same_source", "true");
  if ($("exact").checked) p.set("exact", "true");
  if ($("visible-only").checked) {
    const b = map.getBounds();
    const box = [
      Math.max(-180, b.getWest()), Math.max(-90, b.getSouth()),
      Math.min(180, b.getEast()), Math.min(90, b.getNorth()),
    ];
    p.set("bbox_wgs84", box.map((v) => v.toFixed(8)).join(","));
  }
  p.set("format", format);
  return `/api/query?${p}`;
}

async function runQuery() {
  renderQueryTiles();
  if (!state.pos.length) {
    status("mark at least one positive");
    return;
  }
  const url = queryUrl("geojson");
  const t0 = performance.now();
  status("searching…");
  try {
    const fc = await getJSON(url);
    state.lastUrl = url;
    renderResults(fc.features);
    const ms = (performance.now() - t0).toFixed(0);
    status(`${fc.features.length} results in ${ms} ms`);
    $("export-geojson").href = url;
    $("export-csv").href = queryUrl("csv");
    $("export-geojson").className = $("export-csv").className = "";
  } catch (err) {
    status(err.message, true);
  }
}

function renderQueryTiles() {
  queryLayer.clearLayers();
  for (const [role, ids] of [["pos", state.pos], ["neg", state.neg]]) {
    const box = $(role === "pos" ? "positives" : "negatives");
    box.replaceChildren();
    for (const id of ids) {
      const chip = tag(document.createElement("span"), id);
      chip.className = role === "pos" ? "chip" : "chip neg";
      chip.title = `${id} (click to remove)`;
      chip.appendChild(img(id));
      chip.onclick = () => {
        state.pos = state.pos.filter((t) => t !== id);
        state.neg = state.neg.filter((t) => t !== id);
        runQuery();
      };
      box.appendChild(chip);
      const f = state.tiles.get(id);
      if (f) {
        const style = role === "pos"
          ? { color: "#e00", weight: 3, fill: false, className: "positive-outline" }
          : { color: "#000", weight: 3, dashArray: "4 4", fill: false, className: "negative-outline" };
        const outline = L.geoJSON(f.geometry, { style, interactive: false }).addTo(queryLayer);
        outline.eachLayer((l) => tag(l.getElement(), id));
      }
    }
  }
  $("requery").disabled = !state.pos.length;
}

function renderResults(features) {
  resultLayer.clearLayers();
  const list = $("results");
  list.replaceChildren();
  for (const f of features) {
    const p = f.properties;
    const li = tag(document.createElement("li"), p.tile_id);
    li.className = "result";
    const name = p.source.split("/").pop();
    li.innerHTML = `<span class="rank">${p.rank}</span><span class="meta">
      <div class="distance">${Number(p.distance).toPrecision(4)}</div>
      <div title="${p.source}">${name}</div><div>row ${p.row}, col ${p.col}</div></span>`;
    li.insertBefore(img(p.tile_id), li.children[1]);
    for (const [label, role, title] of [["+", "pos", "mark positive"], ["−", "neg", "mark negative"]]) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = label;
      b.title = title;
      b.className = role === "pos" ? "mark-pos" : "mark-neg";
      b.onclick = (ev) => {
        ev.stopPropagation();
        addRole(p.tile_id, role);
        runQuery();
      };
      li.appendChild(b);
    }
    li.onclick = () => flyTo(f);
    list.appendChild(li);
    if (f.geometry) {
      const outline = L.geoJSON(f.geometry, {
        style: { color: "#ffd400", weight: 2, fill: false, className: "result-outline" },
        interactive: false,
      }).addTo(resultLayer);
      outline.eachLayer((l) => tag(l.getElement(), p.tile_id));
      const label = L.marker(ringBounds(f.geometry).getCenter(), {
        icon: L.divIcon({ className: "rank-label", html: String(p.rank), iconSize: [18, 16] }),
        interactive: false,
      }).addTo(resultLayer);
      tag(label.getElement(), p.tile_id);
    }
  }
}

function flyTo(f) {
  if (f.geometry) map.flyToBounds(ringBounds(f.geometry).pad(1.5));
}

// ---------------------------------------------------------------- diff heat map

function ramp(t) {
  // blue (little change) -> yellow -> red (most change)
  const stops = [[49, 54, 149], [254, 224, 144], [215, 48, 39]];
  const x = Math.min(1, Math.max(0, t)) * 2, i = Math.min(1, Math.floor(x)), u = x - i;
  const c = stops[i].map((v, j) => Math.round(v + (stops[i + 1][j] - v) * u));
  return `rgb(${c.join(",")})`;
}

async function runDiff() {
  const before = $("diff-before").value, after = $("diff-after").value;
  const p = new URLSearchParams({ before, after, top: "1000000", format: "geojson" });
  p.set("metric", $("metric").value);
  $("diff-status").textContent = "comparing…";
  try {
    const fc = await getJSON(`/api/diff?${p}`);
    const d = fc.features.map((f) => f.properties.distance);
    const lo = Math.min(...d), hi = Math.max(...d);
    if (diffLayer) map.removeLayer(diffLayer);
    diffLayer = L.geoJSON(fc, {
      style: (f) => ({
        color: "#000", weight: 0.5, fillOpacity: 0.65,
        fillColor: ramp((f.properties.distance - lo) / (hi - lo || 1)),
      }),
      onEachFeature: (f, layer) => {
        layer.bindTooltip(`#${f.properties.rank}: ${f.properties.distance.toPrecision(4)}`);
        layer.on("add", () => tag(layer.getElement(), f.properties.before_tile_id));
        layer.on("click", (ev) => onTileClick(f.properties.before_tile_id, ev.originalEvent));
      },
    }).addTo(map);
    $("diff-status").textContent =
      `${fc.features.length} locations; distance ${lo.toPrecision(3)} (blue) to ${hi.toPrecision(3)} (red)`;
  } catch (err) {
    $("diff-status").textContent = err.message;
  }
}

// ---------------------------------------------------------------- start

async function start() {
  const info = await getJSON("/api/info");
  $("info").textContent = `${info.rows} tiles, ${info.sources.length} sources, v${info.version}`;
  const fc = await getJSON("/api/sources");
  // georeferenced sources first: the likely captures to compare
  const order = [...fc.features].sort((a, b) => (a.geometry === null) - (b.geometry === null));
  for (const sel of [$("diff-before"), $("diff-after")]) {
    for (const f of order) sel.add(new Option(f.properties.source.split("/").pop(), f.properties.source));
  }
  if (order.length > 1) $("diff-after").selectedIndex = 1;
  L.geoJSON(fc, {
    filter: (f) => f.geometry !== null,
    style: { color: "#39f", weight: 2, dashArray: "6 4", fill: false },
    onEachFeature: (f, layer) => layer.bindTooltip(f.properties.source.split("/").pop()),
  }).addTo(footprints);
  for (const f of order) {
    const li = document.createElement("li");
    li.setAttribute("data-source", f.properties.source);
    li.textContent = `${f.properties.source.split("/").pop()} (${f.properties.tiles} tiles${f.geometry ? "" : ", no CRS"})`;
    li.title = f.properties.source;
    if (f.geometry) li.onclick = () => map.fitBounds(ringBounds(f.geometry));
    $("sources-list").appendChild(li);
  }
  const b = info.bounds_wgs84;
  if (b) map.fitBounds([[b[1], b[0]], [b[3], b[2]]]);
  else map.setView([0, 0], 2);
  map.on("moveend", loadTiles);
  await loadTiles();
  const nogeo = await getJSON("/api/tiles?ungeoreferenced=true&limit=500");
  $("nogeo-count").textContent = String(nogeo.total);
  for (const f of nogeo.features) {
    const i = img(f.properties.tile_id);
    i.title = `${f.properties.source.split("/").pop()} row ${f.properties.row}, col ${f.properties.col}`;
    i.onclick = (ev) => onTileClick(f.properties.tile_id, ev);
    $("nogeo").appendChild(i);
  }
  $("requery").onclick = runQuery;
  $("clear").onclick = () => {
    state.pos = [];
    state.neg = [];
    resultLayer.clearLayers();
    $("results").replaceChildren();
    renderQueryTiles();
    status("");
  };
  $("controls").onchange = () => state.pos.length && runQuery();
  $("controls").onsubmit = (ev) => ev.preventDefault();
  $("diff-run").onclick = runDiff;
  $("diff-clear").onclick = () => diffLayer && map.removeLayer(diffLayer);
  document.body.setAttribute("data-ready", "true");
}

start().catch((err) => status(err.message, true));
