// Atelier playground: plain JS against the service's own HTTP API (same origin, no libraries).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { presets: [], chosen: new Set(), content: null, styles: [], info: null, walkTimer: null };

// --- errors: the API's {"error", "detail": [{"loc": [field], "msg"}]} shown next to the field --------

function clearErrors(scope) {
  scope.querySelectorAll(".error").forEach((el) => { el.textContent = ""; });
}

function showError(scope, field, message) {
  const el = scope.querySelector(`.error[data-field="${field}"]`) || scope.querySelector('.error[data-field="service"]');
  el.textContent = el.dataset.field === field ? message : `${field}: ${message}`;
}

// --- the API key: asked for once (on the first 401), kept in this tab's session storage -------------

const KEY_STORAGE = "atelier-api-key";

function withKey(options) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { ...options, headers: { ...(options.headers || {}), Authorization: `Bearer ${key}` } } : options;
}

let asking = null;  // one dialog for every call that meets a 401 at once

function askForKey(reason) {
  if (!asking) {
    asking = new Promise((resolve) => {
      const dialog = $("key-dialog");
      $("key-reason").textContent = reason;
      $("api-key").value = "";
      dialog.addEventListener("close", () => {
        const key = dialog.returnValue === "ok" ? $("api-key").value.trim() : "";
        if (key) sessionStorage.setItem(KEY_STORAGE, key);
        asking = null;
        resolve(Boolean(key));
      }, { once: true });
      dialog.showModal();
    });
  }
  return asking;
}

async function call(endpoint, options, scope, retried = false) {
  let response;
  try {
    response = await fetch(`../${endpoint}`, { method: "POST", ...withKey(options) });
  } catch (err) {
    showError(scope, "service", `the service did not answer (${err.message})`);
    return null;
  }
  if (response.ok) return response;
  if (response.status === 401 && !retried) {
    const body = await response.json().catch(() => ({}));
    const reason = ((body.detail || [])[0] || {}).msg || "This service needs an API key.";
    if (await askForKey(reason)) return call(endpoint, options, scope, true);
  }
  let field = "service", message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    const detail = (body.detail || [])[0] || {};
    const loc = (detail.loc || []).filter((part) => part !== "body");
    if (loc.length) field = String(loc[loc.length - 1]);
    message = detail.msg || body.error || message;
  } catch (_) { /* not JSON: keep the status line */ }
  if (response.status === 429 || response.status === 503) {
    message += ` (busy: try again in ${response.headers.get("Retry-After") || "a few"} s)`;
  }
  showError(scope, field, message);
  return null;
}

function callJson(endpoint, fields, scope) {
  return call(endpoint, { headers: { "Content-Type": "application/json" }, body: JSON.stringify(fields) }, scope);
}

function busy(button, progress, on) {
  button.disabled = on;
  progress.hidden = !on;
}

// --- tabs and shareable state (the query string) ------------------------------------------------

const TABS = ["style", "gan", "info"];

function selectTab(name, push = true) {
  for (const tab of TABS) {
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(`panel-${tab}`).hidden = tab !== name;
  }
  if (push) setQuery({ tab: name });
}

function setQuery(values) {
  const params = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(values)) {
    if (v === null || v === "" || v === undefined) params.delete(k); else params.set(k, v);
  }
  history.replaceState(null, "", `${location.pathname}?${params}`);
}

document.querySelector("nav").addEventListener("click", (e) => {
  const tab = e.target.closest("button[role=tab]");
  if (tab) selectTab(tab.id.replace("tab-", ""));
});
document.querySelector("nav").addEventListener("keydown", (e) => {  // arrow keys move between tabs
  if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
  const current = TABS.findIndex((t) => $(`tab-${t}`).getAttribute("aria-selected") === "true");
  const next = TABS[(current + (e.key === "ArrowRight" ? 1 : TABS.length - 1)) % TABS.length];
  selectTab(next);
  $(`tab-${next}`).focus();
});

// --- style tab ------------------------------------------------------------------------------

function dropZone(zone, input, onFiles) {
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    onFiles([...e.dataTransfer.files]);
  });
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  input.addEventListener("change", () => onFiles([...input.files]));
}

dropZone($("content-drop"), $("content"), (files) => {
  state.content = files[0] || null;
  $("content-drop").querySelector("span").textContent = state.content ? state.content.name : "Drop a photo here, or choose one";
});
dropZone($("style-drop"), $("style"), (files) => {
  state.styles = files;
  $("style-drop").querySelector("span").textContent =
    files.length ? files.map((f) => f.name).join(", ") : "…or drop your own style image(s); several are blended";
});

function renderPresets() {
  const gallery = $("presets");
  gallery.replaceChildren();
  for (const preset of state.presets) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.name = preset.name;
    button.setAttribute("aria-pressed", String(state.chosen.has(preset.name)));
    button.title = preset.credit ? `${preset.name}: ${preset.credit}` : `${preset.name} (${preset.source})`;
    const img = document.createElement("img");
    img.src = `data:image/${preset.thumbnail_format};base64,${preset.thumbnail}`;
    img.alt = "";
    const name = document.createElement("span");
    name.textContent = preset.name;
    button.append(img, name);
    button.addEventListener("click", () => {
      if (state.chosen.has(preset.name)) state.chosen.delete(preset.name); else state.chosen.add(preset.name);
      button.setAttribute("aria-pressed", String(state.chosen.has(preset.name)));
    });
    gallery.append(button);
  }
}

$("strength").addEventListener("input", () => { $("strength-value").textContent = Number($("strength").value).toFixed(2); });

$("style-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = $("style-form");
  clearErrors(form);
  if (!state.content) { showError(form, "content", "choose or drop a photo first"); return; }
  const data = new FormData();
  data.append("content", state.content, state.content.name);
  for (const file of state.styles) data.append("style", file, file.name);
  if (state.chosen.size) data.append("style_name", [...state.chosen].join(","));
  if ($("weights").value.trim()) data.append("weights", $("weights").value.trim());
  data.append("strength", $("strength").value);
  data.append("preserve_color", String($("preserve_color").checked));
  data.append("max_side", $("max_side").value);
  if ($("style-format").value) data.append("format", $("style-format").value);  // empty: the service's default
  busy($("stylize"), $("style-progress"), true);
  const started = performance.now();
  const response = await call("stylize", { body: data }, form);
  busy($("stylize"), $("style-progress"), false);
  if (!response) return;
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  $("result-image").src = url;
  $("before-image").src = URL.createObjectURL(state.content);
  $("download").href = url;
  const kind = (response.headers.get("content-type") || "image/png").split("/")[1];
  $("download").download = `atelier.${kind === "jpeg" ? "jpg" : kind}`;
  const frames = response.headers.get("X-Atelier-Frames");
  $("result-caption").textContent = `${response.headers.get("X-Atelier-Size")} px${frames ? `, ${frames} frames` : ""}, ` +
    `${response.headers.get("X-Atelier-Style")}, ` +
    `${((performance.now() - started) / 1000).toFixed(2)} s`;
  $("style-result").hidden = false;
});

function fitBefore() {  // the original, drawn at the result's displayed size, clipped by the slider
  const result = $("result-image");
  $("before-image").style.width = `${result.clientWidth}px`;
  $("before-image").style.height = `${result.clientHeight}px`;
  $("before").style.width = `${$("compare-slider").value}%`;
}
$("result-image").addEventListener("load", fitBefore);
$("compare-slider").addEventListener("input", fitBefore);
window.addEventListener("resize", fitBefore);

// --- GAN tab --------------------------------------------------------------------------------

function ganFields() {
  const fields = { seed: Number($("seed").value), truncation: Number($("truncation").value), n: Number($("n").value) };
  if ($("label").value !== "") fields.label = Number($("label").value);
  return fields;
}

function tiles(container, images, format, seeds) {
  container.replaceChildren(...images.map((b64, i) => {
    const img = document.createElement("img");
    img.src = `data:image/${format};base64,${b64}`;
    img.alt = seeds ? `sample, seed ${seeds[i]}` : `step ${i + 1}`;
    if (seeds) img.title = `seed ${seeds[i]}`;
    return img;
  }));
}

$("gan-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = $("gan-form");
  clearErrors(form);
  const fields = ganFields();
  const styleImage = $("sample-style-image").files[0];
  if ($("sample-style").value) fields.style_name = $("sample-style").value;
  if (fields.style_name || styleImage) {  // painted on the way out, enlarged to 256 px (the service's rule)
    fields.strength = Number($("sample-strength").value);
  }
  busy($("sample"), $("gan-progress"), true);
  let response;
  if (styleImage) {  // an uploaded style: the same endpoint, as a multipart form
    const data = new FormData();
    for (const [key, value] of Object.entries(fields)) data.append(key, String(value));
    data.append("style", styleImage, styleImage.name);
    response = await call("sample", { body: data }, form);
  } else {
    response = await callJson("sample", fields, form);
  }
  busy($("sample"), $("gan-progress"), false);
  if (!response) return;
  const body = await response.json();
  $("walk").hidden = true;
  tiles($("samples"), body.images, body.format, body.seeds);
  $("gan-caption").textContent = `seed ${body.seed} (image i: seed + i), ${body.images.length} images, ${body.model}` +
    (body.style ? `, painted in ${body.style}` : "");
  setQuery({ tab: "gan", seed: body.seed, n: fields.n, truncation: fields.truncation, label: fields.label ?? null });
});

$("random-seed").addEventListener("click", () => {
  $("seed").value = String(crypto.getRandomValues(new Uint32Array(1))[0]);
  $("gan-form").requestSubmit();
});

$("interpolate").addEventListener("click", async () => {
  const form = $("gan-form");
  clearErrors(form);
  const fields = { seed_a: Number($("seed").value), seed_b: Number($("seed_b").value), steps: Number($("steps").value),
                   truncation: Number($("truncation").value) };
  if ($("label").value !== "") fields.label = Number($("label").value);
  busy($("interpolate"), $("gan-progress"), true);
  const response = await callJson("interpolate", fields, form);
  busy($("interpolate"), $("gan-progress"), false);
  if (!response) return;
  const body = await response.json();
  tiles($("walk-strip"), body.images, body.format, null);
  $("walk").hidden = false;
  $("samples").replaceChildren();
  clearInterval(state.walkTimer);
  const frames = body.images.concat(body.images.slice(1, -1).reverse());
  let i = 0;
  const show = () => { $("walk-animation").src = `data:image/${body.format};base64,${frames[i++ % frames.length]}`; };
  show();
  state.walkTimer = setInterval(show, 120);
  $("gan-caption").textContent = `from seed ${body.seed_a} to seed ${body.seed_b}, ${body.steps} steps (${body.method})`;
  setQuery({ tab: "gan", seed: body.seed_a, seed_b: body.seed_b, steps: body.steps });
});

// --- info tab -------------------------------------------------------------------------------

function renderInfo(info) {
  const rows = Object.entries(info.models).map(([role, m]) => {
    const quality = role === "generator" ? JSON.stringify(m.metrics) : role === "stylizer" ? JSON.stringify(m.quality) : "";
    return `<tr><td>${role}</td><td>${m.provider}</td><td>${m.precision}</td><td><code>${m.sha256.slice(0, 12)}</code></td>` +
           `<td><small>${escapeHtml(quality || "")}</small></td></tr>`;
  }).join("");
  $("info").innerHTML =
    `<p>Atelier ${escapeHtml(info.version)}, exported ${escapeHtml(info.exported)}, on <b>${escapeHtml(info.device)}</b>` +
    (info.providers.fallback ? ` — <span class="error">${escapeHtml(info.providers.fallback)}</span>` : "") + `</p>` +
    `<table><thead><tr><th>model</th><th>provider</th><th>precision</th><th>sha256</th><th>measured quality</th></tr></thead>` +
    `<tbody>${rows}</tbody></table>`;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

// --- start ----------------------------------------------------------------------------------

async function start() {
  const params = new URLSearchParams(location.search);
  for (const key of ["seed", "seed_b", "n", "truncation", "steps"]) if (params.has(key)) $(key).value = params.get(key);
  selectTab(TABS.includes(params.get("tab")) ? params.get("tab") : "style", false);

  const stylesResponse = await callJson("styles", {}, $("style-form"));
  if (stylesResponse) {
    state.presets = (await stylesResponse.json()).styles;
    if (state.presets.length) state.chosen.add(state.presets[0].name);
    renderPresets();
    for (const preset of state.presets) $("sample-style").append(new Option(preset.name, preset.name));
  }
  const infoResponse = await callJson("info", {}, $("panel-info"));
  if (infoResponse) {
    state.info = await infoResponse.json();
    renderInfo(state.info);
    const labels = (state.info.models.generator || {}).class_labels || [];
    for (const [i, name] of labels.entries()) $("label").append(new Option(`${i}: ${name}`, String(i)));
    if (params.has("label")) $("label").value = params.get("label");
    const strength = (state.info.models.stylizer || {}).default_strength;  // the export's default
    if (strength !== undefined) {
      $("strength").value = $("sample-strength").value = String(strength);
      $("strength-value").textContent = Number(strength).toFixed(2);
    }
  }
  if (params.get("tab") === "gan" && params.has("seed")) {
    if (params.has("seed_b")) $("interpolate").click(); else $("gan-form").requestSubmit();
  }
  document.body.dataset.ready = "true";  // for tests and for people: everything above has loaded
}

start();
