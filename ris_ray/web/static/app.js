// ris serve: the map page. Plain JS over Leaflet; every element that shows a
// tile carries data-tile-id. The API is documented at /docs.
//
// Text from the data (file names, source paths, error messages) is hostile:
// it reaches the page only through textContent, attributes set one by one,
// or DOM nodes handed to Leaflet (a string given to bindTooltip or divIcon
// would be parsed as HTML). Nothing here assigns innerHTML. The server's
// Content-Security-Policy allows no inline script besides.
"use strict";

// ?token= has set the HttpOnly cookie by now: drop it from the address bar
// and the history (bookmarks, screen shares, Referer are then token-free).
(() => {
  const u = new URL(location.href);
  if (u.searchParams.has("token")) {
    u.searchParams.delete("token");
    history.replaceState(null, "", u.pathname + (u.search || "") + u.hash);
  }
})();

const $ = (id) => document.getElementById(id);
const state = { pos: [], neg: [], tiles: new Map(), lastUrl: null, tag: "", cap: 2000 };
const map = L.map("map", { maxZoom: 24, zoomSnap: 0.25, attributionControl: false });
// Footprints above the tile images (their outlines and markers stay visible
// and hoverable); only their strokes and markers take the mouse.
map.createPane("footprints").style.zIndex = "450";
const footprints = L.layerGroup().addTo(map);
const tileLayer = L.layerGroup().addTo(map);
const resultLayer = L.layerGroup().addTo(map);
const queryLayer = L.layerGroup().addTo(map);
let diffLayer = null;

// The version tag makes the URL name these bytes for good: the server sends
// Cache-Control: immutable, and the browser asks once per tile and version.
const thumb = (id) => `/api/thumbnail/${encodeURIComponent(id)}?v=${state.tag}`;
const baseName = (source) => String(source).split("/").pop();

// An element with text (never parsed as HTML) and a class.
function el(tagName, text, className) {
  const e = document.createElement(tagName);
  if (text !== undefined) e.textContent = String(text);
  if (className) e.className = className;
  return e;
}

function note(text) {
  $("map-note").textContent = text || "";
  $("map-note").hidden = !text;
}

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
    const fc = await getJSON(`/api/tiles?bbox=${w},${s},${e},${n}&limit=${state.cap}`);
    fc.features.forEach(addTile);
    note(fc.truncated
      ? `${fc.total} tiles in this view: drawn are the first ${fc.features.length} in tile order. Zoom in to see the rest.`
      : "");
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
    const meta = el("span", undefined, "meta");
    meta.append(el("div", Number(p.distance).toPrecision(4), "distance"));
    const name = el("div", baseName(p.source), "source-name");
    name.title = String(p.source);
    meta.append(name, el("div", `row ${p.row}, col ${p.col}`));
    li.append(el("span", p.rank, "rank"), img(p.tile_id), meta);
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
        icon: L.divIcon({ className: "rank-label", html: el("span", p.rank), iconSize: [18, 16] }),
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
    const placed = fc.features.filter((f) => f.geometry);
    if (diffLayer) map.removeLayer(diffLayer);
    diffLayer = null;
    if (!placed.length) {
      $("diff-status").textContent = `${fc.features.length} locations compared, none drawn: `
        + "neither source has a CRS, so their tiles have no place on the map.";
      return;
    }
    const d = placed.map((f) => f.properties.distance);
    const lo = Math.min(...d), hi = Math.max(...d);
    diffLayer = L.geoJSON({ type: "FeatureCollection", features: placed }, {
      style: (f) => ({
        color: "#000", weight: 0.5, fillOpacity: 0.65,
        fillColor: ramp((f.properties.distance - lo) / (hi - lo || 1)),
      }),
      onEachFeature: (f, layer) => {
        layer.bindTooltip(el("span", `#${f.properties.rank}: ${f.properties.distance.toPrecision(4)}`));
        layer.on("add", () => tag(layer.getElement(), f.properties.before_tile_id));
        layer.on("click", (ev) => onTileClick(f.properties.before_tile_id, ev.originalEvent));
      },
    }).addTo(map);
    $("diff-status").textContent =
      `${fc.features.length} locations (${placed.length} on the map); `
      + `distance ${lo.toPrecision(3)} (blue) to ${hi.toPrecision(3)} (red)`;
  } catch (err) {
    $("diff-status").textContent = err.message;
  }
}

// ---------------------------------------------------------------- start

// Lines every 30 degrees: some bearing on a map without a basemap.
function graticule() {
  const style = { color: "#567", weight: 1, opacity: 0.5, interactive: false, className: "graticule" };
  for (let x = -180; x <= 180; x += 30) L.polyline([[-85, x], [85, x]], style).addTo(map);
  for (let y = -60; y <= 60; y += 30) L.polyline([[y, -180], [y, 180]], style).addTo(map);
}

// Each georeferenced source: its outline, and a marker of fixed pixel size at
// its centre (an outline is a speck at low zoom); the file name on hover.
function drawFootprints(fc) {
  L.geoJSON(fc, {
    pane: "footprints",
    filter: (f) => f.geometry !== null,
    style: { color: "#39f", weight: 2, dashArray: "6 4", fill: false, className: "footprint" },
    onEachFeature: (f, layer) => layer.bindTooltip(el("span", baseName(f.properties.source))),
  }).addTo(footprints);
  const few = fc.features.filter((f) => f.geometry).length <= 12;
  for (const f of fc.features) {
    if (!f.geometry) continue;
    const marker = L.circleMarker(ringBounds(f.geometry).getCenter(), {
      radius: 7, color: "#fff", weight: 2, fillColor: "#f60", fillOpacity: 0.9,
      className: "footprint-marker", pane: "footprints",
    }).addTo(footprints);
    marker.getElement().setAttribute("data-source", f.properties.source);
    const label = el("span", `${baseName(f.properties.source)} (${f.properties.tiles} tiles)`);
    // a few sources: their names stay on the map (which capture is which, at a glance)
    marker.bindTooltip(label, { direction: "auto", className: "footprint-label", permanent: few });
    marker.on("click", () => map.fitBounds(ringBounds(f.geometry)));
  }
}

function listSources(order) {
  for (const sel of [$("diff-before"), $("diff-after")]) {
    for (const f of order) sel.add(new Option(baseName(f.properties.source), f.properties.source));
  }
  if (order.length > 1) $("diff-after").selectedIndex = 1;
  for (const f of order) {
    const li = el("li", `${baseName(f.properties.source)} (${f.properties.tiles} tiles${f.geometry ? "" : ", no CRS"})`);
    li.setAttribute("data-source", f.properties.source);
    li.title = f.properties.source;
    if (f.geometry) li.onclick = () => map.fitBounds(ringBounds(f.geometry));
    $("sources-list").appendChild(li);
  }
}

// No map to show: the gallery takes the page, and the page says why.
function galleryOnly(why) {
  document.body.classList.add("no-map");
  $("side-note").textContent = why;
  $("side-note").hidden = false;
  $("nogeo-panel").open = true;
}

async function showGallery() {
  const nogeo = await getJSON("/api/tiles?ungeoreferenced=true&limit=500");
  $("nogeo-count").textContent = String(nogeo.total);
  for (const f of nogeo.features) {
    const i = img(f.properties.tile_id);
    i.title = `${baseName(f.properties.source)} row ${f.properties.row}, col ${f.properties.col}`;
    i.onclick = (ev) => onTileClick(f.properties.tile_id, ev);
    $("nogeo").appendChild(i);
  }
}

function wireControls() {
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
}

async function start() {
  const info = await getJSON("/api/info");
  state.tag = info.tag;
  state.cap = info.tile_cap || 2000;
  $("info").textContent = `${info.rows} tiles, ${info.sources.length} sources, v${info.version}`;
  wireControls();
  if (info.basemap) {
    L.tileLayer(info.basemap, { maxZoom: 24, maxNativeZoom: 19, className: "basemap" }).addTo(map);
  } else {
    graticule();
  }
  if (!info.rows) {
    galleryOnly("This dataset has no tiles (an ingest of images all smaller than a tile "
      + "writes none): ingest more files into it, or serve another --db.");
    map.setView([0, 0], 1);
    document.body.setAttribute("data-ready", "true");
    return;
  }
  const fc = await getJSON("/api/sources");
  // georeferenced sources first: the likely captures to compare
  const order = [...fc.features].sort((a, b) => (a.geometry === null) - (b.geometry === null));
  listSources(order);
  const b = info.bounds_wgs84;
  if (b) {
    // the view first: Leaflet adds layers to a map only once it has one
    map.fitBounds([[b[1], b[0]], [b[3], b[2]]], { padding: [40, 40], maxZoom: 22 });
    drawFootprints(fc);
    map.on("moveend", loadTiles);
    await loadTiles();
  } else {
    map.setView([0, 0], 1);
    galleryOnly("No source of this dataset has a CRS, so no tile has a place on a map: "
      + "the tiles are shown in the gallery below. Click one to search with it.");
  }
  await showGallery();
  document.body.setAttribute("data-ready", "true");
}

start().catch((err) => status(err.message, true));
