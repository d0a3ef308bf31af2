// The playground page: it draws the frames the server sends over /events and posts the
// controls back. It computes nothing about the network itself: every number comes from the server.
'use strict';

// Class colours, as in chainrule/plots.py; weights use the first two for their sign.
const CLASS_COLORS = ['#e8743b', '#1f77b4', '#2ca02c', '#9467bd', '#d62728',
  '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
const POSITIVE = '#1f77b4';
const NEGATIVE = '#e8743b';
const SVG = 'http://www.w3.org/2000/svg';

// Everything the page knows, readable from the console (and from the browser tests).
const state = {
  options: null, // GET /api/options: choices, bounds, current settings
  data: null, // the run's points, split, standardisation and layer sizes
  history: { epoch: [], loss: [], val_loss: [] },
  last: null, // the newest frame
  inspect: null, // the newest chain-rule explanation
  frames: 0,
  pinned: null, // a clicked weight stays selected until clicked again
};
window.playground = state;

const $ = (id) => document.getElementById(id);

// ---- talking to the server ----
async function post(path, body) {
  const response = await fetch(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body || {}),
  });
  const answer = await response.json();
  if (!response.ok) {
    showError(answer.error || `${response.status} ${response.statusText}`);
    throw new Error(answer.error);
  }
  showError(null);
  return answer;
}

function showError(message) {
  $('error').hidden = !message;
  $('error').textContent = message || '';
}

function connect() {
  const events = new EventSource('/events');
  events.onmessage = (event) => onFrame(JSON.parse(event.data));
  events.onerror = () => setStatus('disconnected: retrying…', 'error');
}

// ---- the settings form ----
function fillSelect(select, values) {
  select.replaceChildren(...values.map((value) => new Option(value, value)));
}

function buildForm(options) {
  const form = $('config');
  fillSelect(form.dataset, options.datasets);
  fillSelect(form.activation, options.activations);
  fillSelect(form.optimizer, options.optimizers);
  for (const name of ['n_samples', 'noise', 'lr', 'batch_size', 'seed']) {
    [form[name].min, form[name].max] = options.bounds[name];
  }
  showConfig(options.config);
  form.addEventListener('change', () => post('/api/reset', readConfig()).catch(() => {}));
}

function showConfig(config) {
  const form = $('config');
  for (const [name, value] of Object.entries(config)) {
    if (document.activeElement === form[name]) continue; // do not fight the user's typing
    form[name].value = name === 'hidden' ? value.join(', ') : value;
  }
  const fromFile = config.dataset === state.options.csv;
  form.n_samples.disabled = form.noise.disabled = fromFile;
}

function readConfig() {
  const form = $('config');
  const hidden = form.hidden.value.split(/[,\s]+/).filter((part) => part !== '');
  return {
    dataset: form.dataset.value,
    n_samples: Number(form.n_samples.value),
    noise: Number(form.noise.value),
    hidden: hidden.map(Number),
    activation: form.activation.value,
    optimizer: form.optimizer.value,
    lr: Number(form.lr.value),
    batch_size: Number(form.batch_size.value),
    seed: Number(form.seed.value),
  };
}

// ---- one frame ----
function onFrame(frame) {
  if (frame.data) { // a new run, or a fresh connection: the history comes whole
    state.data = frame.data;
    state.history = { epoch: [], loss: [], val_loss: [] };
    buildNetwork(frame.data.layers);
    showConfig(frame.config);
  }
  for (const key of Object.keys(state.history)) state.history[key].push(...frame.history[key]);
  state.last = frame;
  state.frames += 1;
  if (frame.inspect) state.inspect = frame.inspect;
  if (frame.error) setStatus(frame.error, 'error');
  else setStatus(frame.running ? 'training' : 'paused', frame.running ? 'running' : 'paused');
  showStats(frame);
  drawBoundary(frame.grid);
  drawLoss();
  showWeights(frame.parameters);
  if (frame.inspect) showInspect(frame.inspect);
  if (frame.inspect_error) $('inspect-check').textContent = frame.inspect_error;
}

function setStatus(text, kind) {
  $('status').textContent = text;
  $('status').className = `status ${kind}`;
}

const fixed = (value, digits) => (value === null ? '–' : value.toFixed(digits));
const percent = (value) => (value === null ? '–' : `${(100 * value).toFixed(1)} %`);
const number = (value) => (value === null ? '–' : Number(value.toPrecision(6)).toString());
const factor = (value) => (value < 0 ? `(${number(value)})` : number(value));

function showStats(frame) {
  $('stat-epoch').textContent = frame.epoch;
  $('stat-loss').textContent = fixed(frame.loss, 4);
  $('stat-val-loss').textContent = fixed(frame.val_loss, 4);
  $('stat-acc').textContent = percent(frame.accuracy);
  $('stat-val-acc').textContent = percent(frame.val_accuracy);
}

// ---- the decision boundary: the server's grid of predictions, then the points ----
function hexToRgb(hex) {
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

function toCanvas(canvas, x, y) {
  const [x0, x1, y0, y1] = state.data.extent;
  return [(x - x0) / (x1 - x0) * canvas.width, (1 - (y - y0) / (y1 - y0)) * canvas.height];
}

function drawBoundary(grid) {
  const canvas = $('boundary');
  const context = canvas.getContext('2d');
  const size = grid.size;
  const classes = state.data.n_classes;
  const image = new ImageData(size, size);
  for (let i = 0; i < size * size; i += 1) {
    const row = size - 1 - Math.floor(i / size); // grid rows run upwards, image rows downwards
    const at = 4 * (row * size + (i % size));
    const rgb = hexToRgb(CLASS_COLORS[grid.labels[i] % CLASS_COLORS.length]);
    // A coin toss (confidence 1/C) is white; certainty is a light tint of the class colour.
    const strength = 0.45 * Math.max(0, (grid.confidence[i] - 1 / classes) / (1 - 1 / classes));
    for (let c = 0; c < 3; c += 1) image.data[at + c] = 255 - strength * (255 - rgb[c]);
    image.data[at + 3] = 255;
  }
  const small = document.createElement('canvas');
  small.width = small.height = size;
  small.getContext('2d').putImageData(image, 0, 0);
  context.imageSmoothingEnabled = true;
  context.drawImage(small, 0, 0, canvas.width, canvas.height);

  const validation = new Set(state.data.val);
  state.data.X.forEach(([x, y], n) => {
    const [px, py] = toCanvas(canvas, x, y);
    context.beginPath();
    context.arc(px, py, 3.5, 0, 2 * Math.PI);
    const color = CLASS_COLORS[state.data.y[n] % CLASS_COLORS.length];
    context.fillStyle = validation.has(n) ? '#ffffff' : color;
    context.strokeStyle = validation.has(n) ? color : '#ffffff';
    context.lineWidth = validation.has(n) ? 1.8 : 1;
    context.fill();
    context.stroke();
  });
  if (state.inspect) {
    const [x, y] = state.data.X[state.inspect.sample];
    const [px, py] = toCanvas(canvas, x, y);
    context.beginPath();
    context.arc(px, py, 8, 0, 2 * Math.PI);
    context.strokeStyle = '#111827';
    context.lineWidth = 2;
    context.stroke();
  }
}

function pickSample(event) {
  const canvas = $('boundary');
  const box = canvas.getBoundingClientRect();
  const cx = (event.clientX - box.left) * canvas.width / box.width;
  const cy = (event.clientY - box.top) * canvas.height / box.height;
  let best = -1;
  let bestDistance = 12 * 12;
  state.data.X.forEach(([x, y], n) => {
    const [px, py] = toCanvas(canvas, x, y);
    const distance = (px - cx) ** 2 + (py - cy) ** 2;
    if (distance < bestDistance) [best, bestDistance] = [n, distance];
  });
  if (best >= 0) post('/api/select', { sample: best }).catch(() => {});
}

// ---- the loss curves ----
function polyline(epochs, values, xmax, ymax) {
  const stride = Math.max(1, Math.ceil(epochs.length / 800)); // at most ~800 points drawn
  const points = [];
  for (let i = 0; i < epochs.length; i += stride) {
    if (values[i] === null) continue;
    const x = 40 + (epochs[i] / xmax) * 352;
    const y = 150 - (Math.min(values[i], ymax) / ymax) * 140;
    points.push(`${x.toFixed(1)},${y.toFixed(1)}`);
  }
  return points.join(' ');
}

function drawLoss() {
  const { epoch, loss, val_loss: val } = state.history;
  const finite = [...loss, ...val].filter((v) => v !== null && Number.isFinite(v));
  const ymax = Math.max(1e-9, ...finite);
  const xmax = Math.max(10, epoch[epoch.length - 1] || 0);
  $('loss-train').setAttribute('points', polyline(epoch, loss, xmax, ymax));
  $('loss-val').setAttribute('points', polyline(epoch, val, xmax, ymax));
  $('loss-ymax').textContent = ymax.toPrecision(3);
  $('loss-xmax').textContent = `epoch ${xmax}`;
}

// ---- the network diagram ----
// Linear layers sit at even positions of the Sequential (Linear, activation, Linear, ...), so the
// l-th weight matrix is named `${2 * l}.weight`, and its element [j, i] joins unit i to unit j.
function nodePosition(layer, unit, sizes) {
  const x = 40 + (layer * 440) / (sizes.length - 1);
  const gap = Math.min(36, 290 / Math.max(...sizes));
  const y = 165 + (unit - (sizes[layer] - 1) / 2) * gap;
  return [x, y];
}

function svg(tag, attributes, parent) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  parent.appendChild(element);
  return element;
}

function buildNetwork(sizes) {
  const root = $('network');
  root.replaceChildren();
  const edges = svg('g', { class: 'edges' }, root);
  const hits = svg('g', { class: 'hits' }, root);
  const nodes = svg('g', { class: 'nodes' }, root);
  for (let l = 0; l + 1 < sizes.length; l += 1) {
    for (let j = 0; j < sizes[l + 1]; j += 1) {
      for (let i = 0; i < sizes[l]; i += 1) {
        const [x1, y1] = nodePosition(l, i, sizes);
        const [x2, y2] = nodePosition(l + 1, j, sizes);
        const weight = `${2 * l}.weight[${j},${i}]`;
        svg('line', { x1, y1, x2, y2, class: 'edge', 'data-weight': weight }, edges);
        // A wide transparent twin makes thin lines easy to hover.
        svg('line', { x1, y1, x2, y2, class: 'hit', 'data-weight': weight }, hits);
      }
    }
  }
  sizes.forEach((size, l) => {
    for (let j = 0; j < size; j += 1) {
      const [cx, cy] = nodePosition(l, j, sizes);
      const attributes = { cx, cy, r: 9, class: l === 0 ? 'node input' : 'node' };
      if (l > 0) attributes['data-weight'] = `${2 * (l - 1)}.bias[${j}]`;
      const node = svg('circle', attributes, nodes);
      if (l === sizes.length - 1) node.style.fill = CLASS_COLORS[j % CLASS_COLORS.length];
      if (l === 0) {
        svg('text', { x: cx - 14, y: cy + 4, 'text-anchor': 'end' }, nodes).textContent = `x${j + 1}`;
      }
    }
  });
  const names = ['input', ...sizes.slice(1, -1).map((_, l) => `hidden ${l + 1}`), 'output'];
  names.forEach((name, l) => {
    const [x] = nodePosition(l, 0, sizes);
    svg('text', { x, y: 322, 'text-anchor': 'middle', class: 'layer-name' }, root).textContent = name;
  });
  for (const element of root.querySelectorAll('[data-weight]')) {
    element.addEventListener('mouseenter', () => hoverWeight(element.dataset.weight));
    element.addEventListener('click', () => pinWeight(element.dataset.weight));
  }
}

function element(parameters, weight) {
  const [, name, indices] = weight.match(/^(\d+\.\w+)\[([\d,]+)\]$/);
  return indices.split(',').map(Number).reduce((array, i) => array[i], parameters[name]);
}

function showWeights(parameters) {
  for (const line of $('network').querySelectorAll('line.edge')) {
    const w = element(parameters, line.dataset.weight);
    line.setAttribute('stroke', w >= 0 ? POSITIVE : NEGATIVE);
    line.setAttribute('stroke-width', Math.min(7, 0.4 + 2.5 * Math.abs(w)).toFixed(2));
  }
  for (const node of $('network').querySelectorAll('circle.node[data-weight]')) {
    const b = element(parameters, node.dataset.weight);
    node.style.stroke = b >= 0 ? POSITIVE : NEGATIVE;
    node.style.strokeWidth = Math.min(5, 1 + 2 * Math.abs(b)).toFixed(2);
  }
  markSelected();
}

let hoverTimer = null;
function hoverWeight(weight) {
  if (state.pinned) return;
  clearTimeout(hoverTimer); // sweeping the mouse across many lines sends only the last
  hoverTimer = setTimeout(() => post('/api/select', { weight }).catch(() => {}), 60);
}

function pinWeight(weight) {
  state.pinned = state.pinned === weight ? null : weight;
  post('/api/select', { weight }).catch(() => {});
}

function markSelected() {
  const selected = state.inspect && state.inspect.weight;
  $('network').classList.toggle('has-selection', Boolean(selected));
  for (const item of $('network').querySelectorAll('.edge, .node')) {
    item.classList.toggle('selected', item.dataset.weight === selected);
  }
}

// ---- the chain rule for the selected weight, as chainrule.explain computed it ----
function describeWeight(inspect) {
  const sizes = state.data.layers;
  const [layerIndex, kind] = inspect.parameter.split('.');
  const l = Number(layerIndex) / 2;
  const name = (layer, unit) => {
    if (layer === 0) return `input x${unit + 1}`;
    if (layer === sizes.length - 1) return `output ${unit} (${className(unit)})`;
    return `hidden ${layer}, unit ${unit + 1}`;
  };
  const [j, i] = inspect.index;
  if (kind === 'bias') return `bias of ${name(l + 1, j)}`;
  return `from ${name(l, i)} to ${name(l + 1, j)}`;
}

function className(k) {
  const names = state.data && state.data.class_names;
  return names && names[k] !== undefined ? names[k] : `class ${k}`;
}

function showInspect(inspect) {
  const chain = inspect.chain;
  $('inspect-title').textContent = `${inspect.weight}: ${describeWeight(inspect)}`;
  $('inspect-value').textContent = number(inspect.value);
  $('inspect-grad').textContent = number(inspect.grad);
  const x = inspect.x.map((v) => v.toFixed(3)).join(', ');
  $('inspect-sample').textContent = `#${inspect.sample} (${inspect.split}), x = (${x}), `
    + `${className(inspect.target)}, its loss ${number(inspect.sample_loss)}`;
  const factors = chain.dL_da === null
    ? [chain.dL_dz[0], chain.dz_dw[0]] // softmax layers sum over outputs; not the case here
    : [chain.dL_da[0], chain.da_dz[0], chain.dz_dw[0]];
  $('inspect-chain').textContent = `${factors.map(factor).join(' × ')} = ${number(chain.terms[0])}`;
  $('inspect-sample-grad').textContent = number(chain.value);
  $('inspect-backprop-row').hidden = !chain.backprop;
  if (chain.backprop) {
    const terms = chain.backprop.map(([g, w]) => `${factor(g)}·${factor(w)}`);
    const shown = terms.length > 4 ? [...terms.slice(0, 3), '…'] : terms;
    $('inspect-backprop').textContent = `${shown.join(' + ')} = ${number(chain.dL_da[0])}`;
  }
  const verdict = {
    agrees: 'agrees ✓', mismatch: 'MISMATCH', kink: 'at a ReLU kink', unchecked: 'not computed',
    tiny: 'too small to check',
  };
  $('inspect-check').textContent = `${number(chain.numeric)}: ${verdict[chain.status] || chain.status}`;
  $('inspect-text').textContent = inspect.text;
}

// ---- start ----
async function main() {
  state.options = await (await fetch('/api/options')).json();
  buildForm(state.options);
  $('start').addEventListener('click', () => post('/api/start').catch(() => {}));
  $('pause').addEventListener('click', () => post('/api/pause').catch(() => {}));
  $('step').addEventListener('click', () => post('/api/step', { epochs: 1 }).catch(() => {}));
  $('reset').addEventListener('click', () => post('/api/reset', readConfig()).catch(() => {}));
  $('boundary').addEventListener('click', pickSample);
  connect();
}

main();
