// One job at `/jobs/<id>`: header, actions, the task graph (SVG, pan/zoom), the step panel.
import {
  $, api, badge, debounce, esc, fmtDuration, labelChips, liveDuration, loadConfig, mountCluster,
  openEvents, progressBar, serialized, showNamespace, STEP_STATES, timeCell,
} from '/static/common.js';

const jobId = decodeURIComponent(location.pathname.split('/').filter(Boolean)[1] || '') ||
  new URLSearchParams(location.search).get('job') || '';
const base = `/api/jobs/${encodeURIComponent(jobId)}`;
const TOKEN_KEY = 'theodolite-dashboard-token';
const POLL_MS = 5000; // an active job is read again this often, events or not
const svg = $('#graph');
const panel = $('#step-panel');

let job = null;
let graph = null;
let signature = '';
let nodesById = new Map();
let nodeOfStep = new Map();
let elements = new Map(); // node id -> <g>
let rendered = new Map(); // node id -> what its <g> shows (state + counts)
let selected = null; // {node: id} or {step: name}
let groupFilter = '';
let scale = 1;
const view = { x: 0, y: 0 };

// ---------------------------------------------------------------------------------- header
function renderHead(data) {
  const j = data.job;
  document.title = `theodolite · ${j.name || j.job_id}`;
  $('#crumb-job').textContent = j.job_id;
  const running = j.state === 'running' && !j.finished_at;
  const err = j.error ? `<div class="job-error"><b>${esc(j.error.type)}</b>` +
    (j.error.step ? ` in <a href="#" data-open-step="${esc(j.error.step)}">${esc(j.error.step)}</a>` : '') +
    `: ${esc(j.error.message)}</div>` : '';
  const problems = (j.problems || []).length
    ? `<ul class="problems">${j.problems.map((p) => `<li>${esc(p)}</li>`).join('')}</ul>` : '';
  $('#job-head').innerHTML =
    `<h1><span class="mono">${esc(j.job_id)}</span>${j.name ? ` <span class="jname">${esc(j.name)}</span>` : ''} ` +
    `${badge(j.state)}</h1>` +
    `<div class="meta">${progressBar(j.steps_done, j.steps_total, j.steps_failed)}` +
    `<span>duration <b>${liveDuration(j.duration_s, running)}</b></span>` +
    `<span>run <b id="run">${esc(data.run ?? 1)}</b></span>` +
    `<span>submitted ${timeCell(j.submitted_at)}</span><span>started ${timeCell(j.started_at)}</span>` +
    `<span>finished ${timeCell(j.finished_at)}</span><span class="chips">${labelChips(j.labels)}</span></div>` +
    err + problems;
  const active = j.state === 'pending' || j.state === 'running';
  $('#cancel').disabled = !active;
  $('#resume').disabled = active || j.state === 'rejected';
}

// ----------------------------------------------------------------------------------- graph
const SEG_ORDER = ['succeeded', 'failed', 'running', 'waiting', 'queued', 'cancelled', 'skipped', 'pending'];
const nodeW = () => graph.node_width || 168;
const nodeH = () => graph.node_height || 36;
const isGroup = (node) => node.steps.length > 1;
const shownKey = (node) => `${node.state}|${JSON.stringify(node.counts)}`;
const clip = (s, n) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

function nodeClass(node) {
  const sel = selected && (selected.node === node.id || (selected.step && nodeOfStep.get(selected.step) === node.id));
  return `node st-${node.state}${isGroup(node) ? ' group' : ''}${sel ? ' selected' : ''}`;
}

function nodeInner(node) {
  const w = nodeW(), h = nodeH();
  const counts = Object.entries(node.counts || {}).map(([s, n]) => `${s} ${n}`).join(', ');
  const title = `${node.label}${node.task ? ` (task ${node.task})` : ''}\n${counts}`;
  let bar = '';
  if (isGroup(node)) {
    const total = node.steps.length;
    let x = 6;
    const inner = w - 12;
    for (const s of SEG_ORDER) {
      const n = node.counts[s] || 0;
      if (!n) continue;
      const width = (inner * n) / total;
      bar += `<rect class="seg st-${s}" x="${x.toFixed(2)}" y="${h - 7}" width="${width.toFixed(2)}" height="3"/>`;
      x += width;
    }
  }
  return `<title>${esc(title)}</title><rect class="box" width="${w}" height="${h}" rx="7"/>` +
    `<text x="${w / 2}" y="${isGroup(node) ? h / 2 - 2 : h / 2}">${esc(clip(node.label, 24))}</text>${bar}`;
}

function nodeMarkup(node) {
  const step = isGroup(node) ? node.label : node.steps[0];
  return `<g class="${nodeClass(node)}" data-id="${esc(node.id)}" data-step="${esc(step)}" ` +
    `data-state="${esc(node.state)}" transform="translate(${node.x},${node.y})">${nodeInner(node)}</g>`;
}

function edgePath(from, to) {
  const x1 = from.x + nodeW(), y1 = from.y + nodeH() / 2, x2 = to.x - 2, y2 = to.y + nodeH() / 2;
  const mx = (x1 + x2) / 2;
  return `M${x1},${y1}C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
}

function indexGraph(g) {
  nodesById = new Map(g.nodes.map((n) => [n.id, n]));
  nodeOfStep = new Map();
  for (const n of g.nodes) for (const s of n.steps) nodeOfStep.set(s, n.id);
}

function drawGraph() {
  const parts = ['<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" markerHeight="7" ' +
    'orient="auto"><path d="M0,0L8,4L0,8z"/></marker></defs><g class="edges">'];
  for (const [a, b] of graph.edges) {
    const from = nodesById.get(a), to = nodesById.get(b);
    if (from && to) parts.push(`<path d="${edgePath(from, to)}" marker-end="url(#arrow)"/>`);
  }
  parts.push('</g><g class="nodes">');
  for (const node of graph.nodes) parts.push(nodeMarkup(node));
  parts.push('</g>');
  svg.innerHTML = parts.join('');
  elements = new Map();
  rendered = new Map();
  for (const el of svg.querySelectorAll('g.node')) elements.set(el.dataset.id, el);
  for (const node of graph.nodes) rendered.set(node.id, shownKey(node));
}

function updateNodes() {
  for (const node of graph.nodes) {
    const el = elements.get(node.id);
    const key = shownKey(node);
    if (!el || rendered.get(node.id) === key) continue;
    el.setAttribute('class', nodeClass(node));
    el.dataset.state = node.state;
    el.innerHTML = nodeInner(node);
    rendered.set(node.id, key);
  }
}

function markSelected() {
  for (const [id, el] of elements) el.setAttribute('class', nodeClass(nodesById.get(id)));
}

function showGraph(g) {
  const sig = `${g.width}x${g.height}|${g.edges.length}|${g.nodes.map((n) => n.id).join('\n')}`;
  const first = !graph || graph.nodes.length === 0;
  graph = g;
  indexGraph(g);
  if (sig === signature) {
    updateNodes();
  } else {
    signature = sig;
    drawGraph();
    if (first) initialView();
  }
  const steps = g.nodes.reduce((n, node) => n + node.steps.length, 0);
  $('#graph-info').textContent = `${steps} step(s) · ${g.nodes.length} node(s)${g.grouped ? ' · repeated steps grouped' : ''}`;
}

function legend() {
  $('#legend').innerHTML = ['pending', 'queued', 'waiting', 'running', 'succeeded', 'failed', 'skipped', 'cancelled']
    .map((s) => `<span class="legend-item"><span class="swatch st-${s}"></span>${s}</span>`).join('') +
    '<span class="legend-item muted">a node “name ×N” groups N equivalent steps; wheel: zoom, drag: pan</span>';
}

// ---------------------------------------------------------------------- pan and zoom (viewBox)
let viewport = { w: 0, h: 0 };
function applyView() {
  const cw = Math.max(1, svg.clientWidth), ch = Math.max(1, svg.clientHeight);
  if (viewport.w) { // resized: keep the centre where it was
    view.x += (viewport.w - cw) / 2 / scale;
    view.y += (viewport.h - ch) / 2 / scale;
  }
  viewport = { w: cw, h: ch };
  const w = cw / scale, h = ch / scale;
  svg.setAttribute('viewBox', `${view.x.toFixed(2)} ${view.y.toFixed(2)} ${w.toFixed(2)} ${h.toFixed(2)}`);
}

function fitScale() {
  const cw = Math.max(1, svg.clientWidth), ch = Math.max(1, svg.clientHeight);
  return Math.min(cw / Math.max(1, graph.width), ch / Math.max(1, graph.height));
}

function placeView(s, alignLeft) {
  scale = s;
  viewport = { w: 0, h: 0 };
  const w = svg.clientWidth / scale, h = svg.clientHeight / scale;
  view.x = graph.width <= w || !alignLeft ? (graph.width - w) / 2 : 0;
  view.y = graph.height <= h || !alignLeft ? (graph.height - h) / 2 : 0;
  applyView();
}

// The whole graph if it fits at a readable scale; else, at 3/4 size, the most important
// node (the first failed, else running, waiting or queued one) or the graph's start.
function initialView() {
  const fits = fitScale();
  if (fits >= 0.6) { placeView(Math.min(1, fits), false); return; }
  const focus = ['failed', 'running', 'waiting', 'queued'].map((st) => graph.nodes.find((n) => n.state === st)).find(Boolean);
  if (!focus) { placeView(0.75, true); return; }
  scale = 0.75;
  viewport = { w: 0, h: 0 };
  view.x = focus.x + nodeW() / 2 - svg.clientWidth / scale / 2;
  view.y = focus.y + nodeH() / 2 - svg.clientHeight / scale / 2;
  applyView();
}

function zoomAt(px, py, factor) {
  const next = Math.min(4, Math.max(0.01, scale * factor));
  view.x += px / scale - px / next;
  view.y += py / scale - py / next;
  scale = next;
  applyView();
}

function setupPanZoom() {
  svg.addEventListener('wheel', (ev) => {
    ev.preventDefault();
    const r = svg.getBoundingClientRect();
    const unit = ev.deltaMode === 1 ? 40 : ev.deltaMode === 2 ? 400 : 1;
    zoomAt(ev.clientX - r.left, ev.clientY - r.top, Math.exp(-ev.deltaY * unit * 0.0015));
  }, { passive: false });
  let drag = null;
  let dragged = false;
  svg.addEventListener('pointerdown', (ev) => {
    if (ev.button !== 0) return;
    drag = { x: ev.clientX, y: ev.clientY, vx: view.x, vy: view.y, moved: false, id: ev.pointerId };
  });
  svg.addEventListener('pointermove', (ev) => {
    if (!drag) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (!drag.moved && Math.hypot(dx, dy) < 4) return;
    if (!drag.moved) { drag.moved = true; svg.setPointerCapture(drag.id); svg.classList.add('dragging'); }
    view.x = drag.vx - dx / scale;
    view.y = drag.vy - dy / scale;
    applyView();
  });
  const end = () => {
    if (drag?.moved) { dragged = true; setTimeout(() => { dragged = false; }, 0); }
    drag = null;
    svg.classList.remove('dragging');
  };
  svg.addEventListener('pointerup', end);
  svg.addEventListener('pointercancel', end);
  svg.addEventListener('click', (ev) => {
    if (dragged) return;
    const el = ev.target.closest('g.node');
    if (el) openNode(el.dataset.id);
  });
  const center = (f) => zoomAt(svg.clientWidth / 2, svg.clientHeight / 2, f);
  $('#zoom-in').addEventListener('click', () => center(1.25));
  $('#zoom-out').addEventListener('click', () => center(0.8));
  $('#fit').addEventListener('click', () => graph && placeView(Math.min(1, fitScale()), false));
  $('#actual').addEventListener('click', () => graph && placeView(1, true));
  // The panel opening or closing resizes the drawing: keep the scale, not the viewBox.
  if (typeof ResizeObserver !== 'undefined') new ResizeObserver(() => graph && applyView()).observe(svg);
  else window.addEventListener('resize', () => graph && applyView());
}

// ------------------------------------------------------------------------------ step panel
const num = (v) => (typeof v !== 'number' ? esc(v) : Number.isInteger(v) ? String(v)
  : Math.abs(v) >= 1e5 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(3) : String(+v.toPrecision(5)));

function chart(name, points) {
  const W = 300, H = 130, L = 52, R = 10, T = 10, B = 22;
  const xs = points.map((p) => Number(p[0])), ys = points.map((p) => Number(p[1]));
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x) => L + ((x - x0) / (x1 - x0 || 1)) * (W - L - R);
  const sy = (y) => (y1 === y0 ? (T + H - B) / 2 : T + (1 - (y - y0) / (y1 - y0)) * (H - T - B));
  const line = points.map((p, i) => `${sx(xs[i]).toFixed(1)},${sy(ys[i]).toFixed(1)}`).join(' ');
  const last = points.length - 1;
  return `<figure class="metric"><figcaption>${esc(name)} <span class="muted">last ${num(ys[last])}, ` +
    `${points.length} points</span></figcaption>` +
    `<svg class="metric-chart" data-metric="${esc(name)}" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}">` +
    `<line class="axis" x1="${L}" y1="${T}" x2="${L}" y2="${H - B}"/>` +
    `<line class="axis" x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}"/>` +
    `<text class="ylabel ymax" x="${L - 4}" y="${T + 4}">${num(y1)}</text>` +
    `<text class="ylabel ymin" x="${L - 4}" y="${H - B}">${num(y0)}</text>` +
    `<text class="xlabel xmin" x="${L}" y="${H - 6}">${num(x0)}</text>` +
    `<text class="xlabel xmax" x="${W - R}" y="${H - 6}">${num(x1)}</text>` +
    `<polyline points="${line}"/><circle cx="${sx(xs[last]).toFixed(1)}" cy="${sy(ys[last]).toFixed(1)}" r="2.5"/></svg></figure>`;
}

function summaryText(summary) {
  return Object.entries(summary || {}).filter(([k]) => k !== 'type')
    .map(([k, v]) => `${esc(k)}=${esc(typeof v === 'object' && v !== null ? JSON.stringify(v) : v)}`).join(' ');
}

function logsText(logs) {
  const attempts = new Set(logs.map((l) => l.attempt));
  let last = null;
  return logs.map((l) => {
    let head = '';
    if (attempts.size > 1 && l.attempt !== last) head = `<span class="log-attempt">── attempt ${esc(l.attempt)} ──</span>\n`;
    last = l.attempt;
    const text = String(l.text ?? '');
    return `${head}<span class="log-${esc(l.stream)}">${esc(text)}${text.endsWith('\n') ? '' : '\n'}</span>`;
  }).join('');
}

function stepHtml(name, data) {
  const s = data.step;
  const groupId = nodeOfStep.get(name);
  const back = groupId && isGroup(nodesById.get(groupId) || { steps: [] })
    ? `<a href="#" class="back" data-open-node="${esc(groupId)}">← ${esc(nodesById.get(groupId).label)}</a>` : '';
  const row = (k, v) => `<dt>${k}</dt><dd>${v}</dd>`;
  const err = s.error ? `<div class="step-error" id="step-error"><b>${esc(s.error.type)}</b> ` +
    `<span class="kind">(${esc(s.error.kind)})</span>: ${esc(s.error.message)}</div>` : '';
  const outputs = Object.entries(s.outputs || {});
  const attempts = s.attempts || [];
  const summaries = Object.entries(s.metrics || {});
  const series = Object.entries(data.metrics || {}).filter(([, pts]) => Array.isArray(pts) && pts.length >= 2);
  const logs = data.logs || [];
  return `${back}<div class="panel-head"><h2 class="mono">${esc(name)}</h2>${badge(s.state)}` +
    `<button type="button" class="close" title="close">×</button></div>` +
    `<dl class="facts">${row('task', esc(s.task ?? '—'))}${row('attempt', esc(s.attempt ?? '—'))}` +
    `${row('worker', `<span class="mono">${esc(s.worker ?? '—')}</span>`)}${row('device', esc(s.device ?? '—'))}` +
    `${row('started', timeCell(s.started_at))}${row('finished', timeCell(s.finished_at))}` +
    `${row('duration', liveDuration(s.duration_s, s.state === 'running'))}` +
    `${s.retry_at ? row('retry at', timeCell(s.retry_at)) : ''}</dl>${err}` +
    (data.traceback ? `<h3>Traceback</h3><pre id="traceback">${esc(data.traceback)}</pre>` : '') +
    `<h3>Logs</h3><pre id="logs">${logsText(logs)}</pre>${logs.length ? '' : '<p class="muted">No output.</p>'}` +
    (outputs.length ? `<h3>Outputs</h3><table class="compact outputs"><thead><tr><th>output</th><th>type</th>` +
      `<th>summary</th></tr></thead><tbody>${outputs.map(([k, v]) => `<tr><td class="mono">${esc(k)}</td>` +
      `<td>${esc(v?.type ?? '')}</td><td class="mono">${summaryText(v)}</td></tr>`).join('')}</tbody></table>` : '') +
    (attempts.length ? `<h3>Earlier attempts</h3><table class="compact attempts"><thead><tr><th>#</th><th>worker</th>` +
      `<th>finished</th><th>duration</th><th>error</th></tr></thead><tbody>${attempts.map((a) =>
      `<tr><td class="num">${esc(a.attempt)}</td><td class="mono">${esc(a.worker ?? '—')}</td>` +
      `<td>${timeCell(a.finished_at)}</td><td class="num">${fmtDuration(a.duration_s)}</td>` +
      `<td>${a.error ? esc(typeof a.error === 'object' ? `${a.error.type ?? ''}${a.error.kind ? ` (${a.error.kind})` : ''}: ${a.error.message ?? ''}` : a.error) : '—'}</td></tr>`).join('')}` +
      '</tbody></table>' : '') +
    (summaries.length ? `<h3>Metrics</h3><table class="compact metrics"><thead><tr><th>metric</th><th>last</th>` +
      `<th>step</th><th>points</th><th>min</th><th>max</th></tr></thead><tbody>${summaries.map(([k, m]) =>
      `<tr><td class="mono">${esc(k)}</td><td class="num">${num(m.last)}</td><td class="num">${esc(m.step ?? '—')}</td>` +
      `<td class="num">${esc(m.points)}</td><td class="num">${num(m.min)}</td><td class="num">${num(m.max)}</td></tr>`).join('')}` +
      '</tbody></table>' : '') +
    series.map(([k, pts]) => chart(k, pts)).join('');
}

function groupHtml(node) {
  const stateOf = (s) => job?.steps?.[s]?.state || 'pending';
  const rank = Object.fromEntries(STEP_STATES.map((s, i) => [s, i]));
  const members = node.steps.map((s, i) => [s, stateOf(s), i])
    .filter(([, st]) => !groupFilter || st === groupFilter)
    .sort((a, b) => (rank[a[1]] ?? 99) - (rank[b[1]] ?? 99) || a[2] - b[2]);
  const LIMIT = 1000;
  const chips = Object.entries(node.counts).sort((a, b) => (rank[a[0]] ?? 99) - (rank[b[0]] ?? 99))
    .map(([s, n]) => `<button type="button" class="badge st-${esc(s)}${groupFilter === s ? ' on' : ''}" ` +
      `data-filter="${esc(s)}">${esc(s)} ${n}</button>`).join(' ');
  return `<div class="panel-head"><h2>${esc(node.label)}</h2>${badge(node.state)}` +
    `<button type="button" class="close" title="close">×</button></div>` +
    `<p class="muted">${node.steps.length} equivalent steps${node.task ? ` of task <b>${esc(node.task)}</b>` : ''}, ` +
    `layer ${node.layer}. Filter: ${chips}${groupFilter ? ' <a href="#" data-filter="">all</a>' : ''}</p>` +
    `<ul class="members" id="members">${members.slice(0, LIMIT).map(([s, st]) =>
      `<li data-member="${esc(s)}" data-state="${esc(st)}"><a href="#" data-open-step="${esc(s)}" class="mono">${esc(s)}</a> ` +
      `${badge(st)}</li>`).join('')}</ul>` +
    (members.length > LIMIT ? `<p class="muted">… and ${members.length - LIMIT} more (filter by state)</p>` : '');
}

function keepScroll(render) {
  const logs = $('#logs', panel);
  const atBottom = logs && logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
  const logsTop = logs?.scrollTop ?? 0, panelTop = panel.scrollTop;
  render();
  const now = $('#logs', panel);
  if (now) now.scrollTop = atBottom ? now.scrollHeight : logsTop;
  panel.scrollTop = panelTop;
}

let stepTicket = 0;
async function showStep(name, keep = false) {
  const ticket = ++stepTicket;
  if (!keep) { panel.hidden = false; panel.innerHTML = `<p class="muted">Loading ${esc(name)}…</p>`; }
  try {
    const data = await api(`${base}/steps/${encodeURIComponent(name)}`);
    if (ticket !== stepTicket || selected?.step !== name) return;
    const render = () => { panel.innerHTML = stepHtml(name, data); };
    if (keep) keepScroll(render); else render();
  } catch (e) {
    if (ticket !== stepTicket) return;
    panel.innerHTML = `<div class="panel-head"><h2 class="mono">${esc(name)}</h2>` +
      `<button type="button" class="close">×</button></div><p class="error">${esc(e.message)}</p>`;
  }
}

function openNode(id) {
  const node = nodesById.get(id);
  if (!node) return;
  if (isGroup(node)) {
    selected = { node: id };
    groupFilter = '';
    panel.hidden = false;
    panel.innerHTML = groupHtml(node);
    panel.scrollTop = 0;
  } else {
    openStep(node.steps[0]);
  }
  markSelected();
}

function openStep(name) {
  selected = { step: name };
  markSelected();
  showStep(name);
}

function closePanel() {
  selected = null;
  panel.hidden = true;
  panel.innerHTML = '';
  markSelected();
}

const refreshStep = debounce(() => { if (selected?.step) showStep(selected.step, true); }, 300, 1500);

function refreshPanel() {
  if (!selected) return;
  if (selected.node) {
    const node = nodesById.get(selected.node);
    if (node) keepScroll(() => { panel.innerHTML = groupHtml(node); });
    else closePanel();
  }
}

function setupPanel() {
  const handle = (ev) => {
    const t = ev.target.closest('[data-open-step],[data-open-node],[data-filter],.close');
    if (!t) return;
    ev.preventDefault();
    if (t.classList.contains('close')) closePanel();
    else if (t.dataset.openStep !== undefined) openStep(t.dataset.openStep);
    else if (t.dataset.openNode !== undefined) openNode(t.dataset.openNode);
    else if (t.dataset.filter !== undefined && selected?.node) {
      groupFilter = groupFilter === t.dataset.filter ? '' : t.dataset.filter;
      refreshPanel();
    }
  };
  panel.addEventListener('click', handle);
  $('#job-head').addEventListener('click', handle);
  document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape' && selected) closePanel(); });
}

// --------------------------------------------------------------------------------- actions
function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

function status(text, cls) {
  const el = $('#action-status');
  el.textContent = text;
  el.className = `action-status ${cls || ''}`;
}

async function act(what, body) {
  status(`${what}…`, 'muted');
  const headers = { 'Content-Type': 'application/json' };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  try {
    const data = await api(`${base}/${what}`, { method: 'POST', headers, body: JSON.stringify(body) });
    status(data.message || (data.ok ? 'done' : 'nothing done'), data.ok ? 'ok' : 'warn');
    loadJob();
  } catch (e) {
    const hint = e.status === 403 && !token() && !$('#token-box').hidden ? ' (enter the token above)' : '';
    status(e.message + hint, 'error');
  }
}

function setupToken(config) {
  if (!config.token_required) return;
  $('#token-box').hidden = false;
  $('#token-notice').textContent =
    `This dashboard listens on ${config.host || location.host}: actions need the token (THEODOLITE_DASHBOARD_TOKEN)`;
  const input = $('#token');
  input.value = token();
  input.addEventListener('input', () => sessionStorage.setItem(TOKEN_KEY, input.value));
}

function setupActions() {
  $('#token-box').addEventListener('submit', (ev) => ev.preventDefault());
  $('#cancel-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const grace = Number($('#grace').value);
    act('cancel', { grace_s: Number.isFinite(grace) && grace >= 0 ? grace : 10 });
  });
  $('#resume-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const from = $('#from-steps').value.split(',').map((s) => s.trim()).filter(Boolean);
    act('resume', { from_steps: from, parameters: {} });
  });
}

// ------------------------------------------------------------------------------------ data
const loadJob = serialized(async () => {
  try {
    const data = await api(base);
    job = data.job;
    renderHead(data);
    showGraph(data.graph);
    refreshPanel();
  } catch (e) {
    if (!job) {
      $('#job-head').innerHTML = `<h1 class="mono">${esc(jobId)}</h1><p class="error">${esc(e.message)}</p>`;
      $('#cancel').disabled = $('#resume').disabled = true;
    } else {
      status(`refresh failed: ${e.message}`, 'error');
    }
  }
});

function init() {
  legend();
  setupPanZoom();
  setupPanel();
  setupActions();
  loadConfig().then((config) => { showNamespace(config); setupToken(config); });
  loadJob();
  const cluster = mountCluster($('#cluster'), $('#alarms'));
  const changed = debounce(loadJob, 300, 1500);
  openEvents(`/api/events?job=${encodeURIComponent(jobId)}`, {
    job: (ev) => {
      changed();
      if (selected?.step && (!ev?.step || ev.step === selected.step)) refreshStep();
    },
    worker: cluster.onEvent,
    cluster: cluster.onEvent,
    reopen: () => { loadJob(); cluster.refresh(); refreshStep(); },
  }, $('#live'));
  // Events say when something changed; a step stored as running some time after its
  // step.running (a worker records a long step only after a moment) says so only in MongoDB.
  setInterval(() => {
    if (!document.hidden && job && ['pending', 'running'].includes(job.state)) { changed(); refreshStep(); }
  }, POLL_MS);
}

init();
