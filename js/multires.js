// Front end of Multiresolution Textual Inversion: the schedule strip on the prompt node, tag completion in
// its text box, and the live loss / g(t) curves on the trainer. Host hooks are chained, never replaced.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { parsePrompt, resolveTags, stateSpans, NUM_TIMESTEPS } from "./schedule_rules.js";

const SCHEDULER = "TimestepConditioningScheduler";
const LOADER = "MultiResEmbeddingLoader";
const TRAINER = "MultiResEmbeddingTrainer";
const DEFAULT_SCALES = 10;

// ---- concept facts from the server (file -> N), refreshed when the graph is loaded or a dropdown opens --
const conceptInfo = new Map();
// The server answers "checking" for files it has not read yet rather than hold the answer: ask again, less
// often as it goes on (many new files can take the server a while), and stop after a minute or so.
const RECHECK_FIRST_MS = 250;
const RECHECK_MAX_MS = 4000;
const RECHECK_TRIES = 20;
let recheckTimer = null;
async function refreshConcepts(attempt = 0) {
  clearTimeout(recheckTimer);
  recheckTimer = null;
  try {
    const response = await api.fetchApi("/mrti/concepts");
    const body = await response.json();
    conceptInfo.clear();
    for (const c of body.concepts) conceptInfo.set(c.entry, c);
    app.graph?.setDirtyCanvas(true, false);
    if (body.concepts.some((c) => c.status === "checking") && attempt < RECHECK_TRIES) {
      const delay = Math.min(RECHECK_FIRST_MS * 2 ** attempt, RECHECK_MAX_MS);
      recheckTimer = setTimeout(() => refreshConcepts(attempt + 1), delay);
    }
  } catch (err) {
    console.warn("[mrti] could not read /mrti/concepts:", err);
  }
}

const widget = (node, name) => node.widgets?.find((w) => w.name === name);
// The loader's default concept name: the file's or folder's stem, also of an "embedding: <file>" option.
const stem = (entry) =>
  entry.replace(/^embedding: /, "").replace(/\/$/, "").split("/").pop().replace(/\.(safetensors|pt|bin)$/i, "");

// name -> N for the concepts wired into `node`'s "concepts" input (loaders chain through theirs).
export function upstreamScales(node) {
  return Object.fromEntries(Object.entries(upstreamConcepts(node)).map(([name, c]) => [name, c.numScales]));
}

// name -> {numScales, untrained: Set of scales the file says never trained} for the same concepts.
function upstreamConcepts(node) {
  const out = {};
  const seen = new Set();
  let current = node;
  while (current && !seen.has(current.id)) {
    seen.add(current.id);
    const slot = current.findInputSlot?.("concepts") ?? -1;
    const source = slot >= 0 ? current.getInputNode(slot) : null;
    if (!source) break;
    if (source.comfyClass === LOADER) {
      const entry = widget(source, "concept")?.value ?? "";
      const name = (widget(source, "name")?.value ?? "").trim() || stem(entry);
      const info = conceptInfo.get(entry);
      // A file the server says the loader refuses is shown as broken, never drawn with a guessed N; one it is
      // still checking ("status": "checking") has no facts yet and is drawn like an unknown one.
      out[name] ??= info?.error
        ? { numScales: DEFAULT_SCALES, untrained: new Set(), broken: info.error }
        : { numScales: info?.num_scales ?? DEFAULT_SCALES, untrained: new Set(info?.untrained ?? []) };
    } else if (source.comfyClass === TRAINER) {
      const name = widget(source, "name")?.value ?? "concept";
      out[name] = { numScales: widget(source, "num_scales")?.value ?? DEFAULT_SCALES, untrained: new Set() };
    }
    current = source;
  }
  return out;
}

// ---- colours: fine (bucket 0) blue ... coarse (bucket N-1) red; the zero vector is dark ---------------
const hue = (index, n) => 230 - (230 * index) / Math.max(1, n - 1);
export function stateColour(state, n) {
  if (state.kind === "zero") return "#202020";
  if (state.kind === "blend") return `hsl(${hue(state.lower + state.weight, n)}, 70%, 48%)`;
  return `hsl(${hue(state.index, n)}, 70%, 48%)`;
}
const stateLabel = (s) => (s.kind === "zero" ? "0" : s.kind === "blend" ? `${s.lower}~${s.upper}` : `e${s.index}`);

// ---- the schedule strip -------------------------------------------------------------------------
const ROW = 16;
const HEAD = 16;
const LABEL = 92;

function scheduleOf(node) {
  const text = widget(node, "text")?.value ?? "";
  const mode = widget(node, "mode")?.value ?? "fully";
  const resolution = widget(node, "resolution")?.value ?? "0";
  const interpolate = !!widget(node, "interpolate")?.value;
  const concepts = upstreamConcepts(node);
  const scales = Object.fromEntries(Object.entries(concepts).map(([name, c]) => [name, c.numScales]));
  const untrained = Object.fromEntries(Object.entries(concepts).map(([name, c]) => [name, [...c.untrained]]));
  const broken = Object.entries(concepts).find(([, c]) => c.broken);
  const key = JSON.stringify([text, mode, resolution, interpolate, scales, untrained, broken?.[1].broken]);
  if (node.mrtiSchedule?.key === key) return node.mrtiSchedule;
  let schedule;
  if (broken) {
    schedule = { key, tags: [], spans: [], untrained, error: `concept ${broken[0]} is broken: ${broken[1].broken}` };
    node.mrtiSchedule = schedule;
    return schedule;
  }
  try {
    const tags = resolveTags(parsePrompt(text), scales, mode, resolution);
    schedule = { key, tags, spans: stateSpans(tags, interpolate), untrained };
  } catch (err) {
    schedule = { key, tags: [], spans: [], untrained, error: err.message };
  }
  node.mrtiSchedule = schedule;
  return schedule;
}

// One tag's runs: the prompt's spans, with neighbours that differ only in other tags merged.
function rowSpans(spans, row) {
  const out = [];
  for (const span of spans) {
    const state = span.states[row];
    const last = out.at(-1);
    if (last && JSON.stringify(last.state) === JSON.stringify(state)) last.tMin = span.tMin;
    else out.push({ tMin: span.tMin, tMax: span.tMax, state });
  }
  return out;
}

// A state built from an embedding that never received a training example (still the init word's).
export function usesUntrained(state, untrained) {
  if (state.kind === "e") return untrained.includes(state.index);
  if (state.kind === "blend") return untrained.includes(state.lower) || untrained.includes(state.upper);
  return false;
}

function hatch(ctx, x, y, w, h) {
  ctx.save();
  ctx.beginPath();
  ctx.rect(x, y, w, h);
  ctx.clip();
  ctx.fillStyle = "rgba(40, 40, 40, 0.55)";
  ctx.fillRect(x, y, w, h);
  ctx.strokeStyle = "rgba(255, 255, 255, 0.6)";
  ctx.lineWidth = 1.5;
  for (let d = -h; d < w; d += 6) {
    ctx.beginPath();
    ctx.moveTo(x + d, y + h);
    ctx.lineTo(x + d + h, y);
    ctx.stroke();
  }
  ctx.restore();
}

function drawStrip(ctx, node, width, y, strip) {
  const schedule = scheduleOf(node);
  const rows = Math.max(1, schedule.tags.length);
  if (rows !== strip.rows) {
    const grow = (rows - strip.rows) * ROW;
    strip.rows = rows;
    requestAnimationFrame(() => {
      node.setSize([node.size[0], node.size[1] + grow]);
      node.setDirtyCanvas(true, true);
    });
  }
  const x0 = 15 + LABEL;
  const barWidth = Math.max(20, width - x0 - 15);
  ctx.save();
  ctx.font = "10px sans-serif";
  ctx.fillStyle = "#999";
  ctx.textBaseline = "middle";
  ctx.textAlign = "left";
  ctx.fillText("schedule", 15, y + HEAD / 2);
  ctx.fillText("noise  t=999", x0, y + HEAD / 2);
  ctx.textAlign = "right";
  ctx.fillText("t=0  clean", x0 + barWidth, y + HEAD / 2);
  if (schedule.error) {
    ctx.textAlign = "left";
    ctx.fillStyle = "#f66";
    ctx.fillText(schedule.error.slice(0, 90), 15, y + HEAD + ROW / 2);
  } else if (!schedule.tags.length) {
    ctx.textAlign = "left";
    ctx.fillText("no concept tags in the prompt", 15, y + HEAD + ROW / 2);
  }
  schedule.tags.forEach((tag, row) => {
    const top = y + HEAD + row * ROW;
    ctx.textAlign = "left";
    ctx.fillStyle = "#ccc";
    ctx.fillText(tag.text.length > 15 ? tag.text.slice(0, 14) + "…" : tag.text, 15, top + ROW / 2);
    for (const span of rowSpans(schedule.spans, row)) {
      const state = span.state;
      const left = x0 + ((NUM_TIMESTEPS - 1 - span.tMax) / NUM_TIMESTEPS) * barWidth;
      const right = x0 + ((NUM_TIMESTEPS - span.tMin) / NUM_TIMESTEPS) * barWidth;
      ctx.fillStyle = stateColour(state, tag.numScales);
      ctx.fillRect(left, top + 1, right - left, ROW - 2);
      const untrained = usesUntrained(state, schedule.untrained[tag.name] ?? []);
      if (untrained) hatch(ctx, left, top + 1, right - left, ROW - 2);
      const label = stateLabel(state) + (untrained ? " untrained" : "");
      if (right - left > label.length * 6 + 4) {
        ctx.fillStyle = state.kind === "zero" ? "#888" : "#fff";
        ctx.textAlign = "center";
        ctx.fillText(label, (left + right) / 2, top + ROW / 2);
      }
    }
  });
  ctx.restore();
}

function addScheduleStrip(nodeType) {
  const onNodeCreated = nodeType.prototype.onNodeCreated;
  nodeType.prototype.onNodeCreated = function () {
    const result = onNodeCreated?.apply(this, arguments);
    // State lives in this closure: the frontend may copy the widget object, so `this` is not reliable.
    const layout = { rows: 1 };
    const height = () => HEAD + Math.max(1, layout.rows) * ROW + 4;
    this.addCustomWidget({
      name: "mrti_schedule",
      type: "mrti_schedule",
      value: "",
      serialize: false,
      options: { serialize: false },
      computeSize: (width) => [width ?? 0, height()],
      draw: (ctx, node, width, y) => drawStrip(ctx, node, width, y, layout),
    });
    attachCompletion(this);
    return result;
  };
}

// ---- completion of concept names and tag forms in the prompt box ---------------------------------
let popup = null;
function closePopup() {
  popup?.remove();
  popup = null;
}

function completionItems(node, prefix) {
  const names = Object.keys(upstreamScales(node));
  const known = names.length ? names : [...conceptInfo.values()].filter((c) => !c.error && c.name).map((c) => c.name);
  const items = [];
  for (const name of known.filter((n) => n.startsWith(prefix)).sort()) {
    items.push({ text: `<${name}[0]>`, hint: "fully", select: name.length + 2 });
    items.push({ text: `<${name}(0)>`, hint: "semi", select: name.length + 2 });
    items.push({ text: `<${name}|0|>`, hint: "fixed", select: name.length + 2 });
    items.push({ text: `<${name}>`, hint: "node default", select: null });
  }
  return items.slice(0, 16);
}

function attachCompletion(node) {
  const textWidget = widget(node, "text");
  const el = textWidget?.inputEl ?? textWidget?.element;
  if (!el || el.mrtiCompletion) return;
  el.mrtiCompletion = true;
  let items = [];
  let active = 0;
  let start = 0;

  const accept = (item) => {
    const caret = el.selectionStart;
    el.value = el.value.slice(0, start) + item.text + el.value.slice(caret);
    const at = start + (item.select ?? item.text.length);
    el.setSelectionRange(at, item.select === null ? at : at + 1);
    el.dispatchEvent(new Event("input", { bubbles: true }));
    closePopup();
  };
  const render = () => {
    closePopup();
    if (!items.length) return;
    popup = document.createElement("div");
    popup.className = "mrti-completion";
    const rect = el.getBoundingClientRect();
    // A manual popover sits in the top layer above the canvas while staying inside the widget's own DOM.
    popup.popover = "manual";
    Object.assign(popup.style, {
      position: "fixed", inset: "auto", margin: "0", left: `${rect.left}px`, top: `${rect.bottom + 2}px`,
      background: "#222", color: "#ddd", border: "1px solid #555", font: "12px monospace", padding: "2px 0",
    });
    items.forEach((item, i) => {
      const row = document.createElement("div");
      row.textContent = `${item.text}   ${item.hint}`;
      Object.assign(row.style, { padding: "1px 8px", cursor: "pointer", background: i === active ? "#446" : "" });
      row.addEventListener("mousedown", (event) => {
        event.preventDefault();
        accept(item);
      });
      popup.appendChild(row);
    });
    (el.parentElement ?? el).appendChild(popup);
    popup.showPopover();
  };
  el.addEventListener("input", () => {
    const before = el.value.slice(0, el.selectionStart);
    const match = /(^|[^\\])<([A-Za-z0-9_][A-Za-z0-9_.-]*)?$/.exec(before);
    if (!match) return closePopup();
    const prefix = match[2] ?? "";
    start = before.length - prefix.length - 1;
    items = completionItems(node, prefix);
    active = 0;
    render();
  });
  el.addEventListener("keydown", (event) => {
    if (!popup) return;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      active = (active + (event.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
      render();
    } else if (event.key === "Enter" || event.key === "Tab") {
      accept(items[active]);
    } else if (event.key === "Escape") {
      closePopup();
    } else {
      return;
    }
    event.preventDefault();
    event.stopPropagation();
  });
  el.addEventListener("blur", () => setTimeout(closePopup, 150));
}

// ---- the trainer's live loss and g(t) curves ------------------------------------------------------
const CURVE_HEIGHT = 110;

function drawSeries(ctx, values, left, top, width, height, colour) {
  const finite = values.filter(Number.isFinite);
  if (finite.length < 1) return;
  const lo = Math.min(...finite);
  const hi = Math.max(...finite);
  ctx.save();
  ctx.strokeStyle = colour;
  ctx.fillStyle = colour;
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  // Bands not measured yet arrive as null: they break the line instead of being drawn as zero.
  let drawing = false;
  values.forEach((v, i) => {
    if (!Number.isFinite(v)) {
      drawing = false;
      return;
    }
    const x = left + (values.length === 1 ? width / 2 : (i / (values.length - 1)) * width);
    const yy = top + height - ((v - lo) / (hi - lo || 1)) * height;
    drawing ? ctx.lineTo(x, yy) : ctx.moveTo(x, yy);
    if (!drawing) ctx.fillRect(x - 1, yy - 1, 2, 2);
    drawing = true;
  });
  ctx.stroke();
  ctx.restore();
}

function drawTraining(ctx, node, width, y) {
  const run = node.mrtiTraining;
  ctx.save();
  ctx.fillStyle = "#181818";
  ctx.fillRect(15, y, width - 30, CURVE_HEIGHT);
  ctx.font = "10px sans-serif";
  ctx.fillStyle = "#999";
  ctx.textBaseline = "top";
  if (!run?.losses.length) {
    ctx.fillText("loss curve appears here while training", 20, y + 4);
    ctx.restore();
    return;
  }
  const half = (width - 40) / 2;
  ctx.fillText(`loss  step ${run.step}/${run.total}  ${run.losses.at(-1).toFixed(4)}`, 20, y + 3);
  drawSeries(ctx, run.losses, 20, y + 16, half - 10, CURVE_HEIGHT - 22, "#5ad");
  ctx.fillText("g(t) per band, noise → clean", 30 + half, y + 3);
  drawSeries(ctx, [...run.g].reverse(), 30 + half, y + 16, half - 10, CURVE_HEIGHT - 22, "#e94");
  ctx.restore();
}

function addLossCurve(nodeType) {
  const onNodeCreated = nodeType.prototype.onNodeCreated;
  nodeType.prototype.onNodeCreated = function () {
    const result = onNodeCreated?.apply(this, arguments);
    this.addCustomWidget({
      name: "mrti_training_curve",
      type: "mrti_training_curve",
      value: "",
      serialize: false,
      options: { serialize: false },
      computeSize: (width) => [width, CURVE_HEIGHT + 4],
      draw: (ctx, node, width, y) => drawTraining(ctx, node, width, y),
    });
    return result;
  };
}

function onTrainingProgress(event) {
  const detail = event.detail;
  const node = app.graph?.getNodeById(Number(detail.node)) ?? app.graph?.getNodeById(detail.node);
  if (!node) return;
  if (!node.mrtiTraining || detail.step <= 1 || detail.step < node.mrtiTraining.step) {
    node.mrtiTraining = { losses: [], g: [], step: 0, total: detail.total };
  }
  const run = node.mrtiTraining;
  run.losses.push(detail.loss);
  run.g = detail.g ?? run.g;
  run.step = detail.step;
  run.total = detail.total;
  node.setDirtyCanvas(true, false);
}

app.registerExtension({
  name: "multiresolutiontextualinversion.editor",
  async setup() {
    api.addEventListener("mrti.train.progress", onTrainingProgress);
    await refreshConcepts();
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === SCHEDULER) addScheduleStrip(nodeType);
    if (nodeData.name === TRAINER) addLossCurve(nodeType);
  },
  async afterConfigureGraph() {
    await refreshConcepts();
  },
});
