// Shared by the dashboard's pages: fetch helpers, formatting, state colours, the live event
// stream, and the cluster panel with its alarm banner.

export const STATE_COLORS = {
  // state: [fill, stroke, text]
  pending: ['#ffffff', '#9aa1ab', '#4b5563'],
  queued: ['#fff4d6', '#d99a06', '#7a5200'],
  waiting: ['#ffe3b3', '#c2410c', '#7c2d12'],
  running: ['#dbeafe', '#2563eb', '#1e3a8a'],
  succeeded: ['#dcfce7', '#16a34a', '#14532d'],
  failed: ['#fee2e2', '#dc2626', '#7f1d1d'],
  skipped: ['#f3f4f6', '#c8ccd2', '#6b7280'],
  cancelled: ['#d1d5db', '#4b5563', '#1f2937'],
  rejected: ['#fce7f3', '#be185d', '#831843'],
};
export const STEP_STATES = ['failed', 'running', 'waiting', 'queued', 'cancelled', 'pending', 'skipped', 'succeeded'];
export const JOB_STATES = ['pending', 'running', 'succeeded', 'failed', 'cancelled', 'rejected'];

// The colours as CSS rules (one source for badges, legend swatches and graph nodes).
(function injectStateStyles() {
  const rules = Object.entries(STATE_COLORS).map(([s, [fill, stroke, text]]) =>
    `.badge.st-${s},.swatch.st-${s}{background:${fill};border-color:${stroke};color:${text}}` +
    `.node.st-${s} rect.box{fill:${fill};stroke:${stroke}}.node.st-${s} text{fill:${text}}` +
    `.seg.st-${s}{fill:${stroke};background:${stroke}}`);
  const style = document.createElement('style');
  style.textContent = rules.join('\n');
  document.head.appendChild(style);
})();

export const $ = (sel, root = document) => root.querySelector(sel);

const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
export const esc = (v) => String(v ?? '').replace(/[&<>"']/g, (c) => ESC[c]);

export class ApiError extends Error {
  constructor(message, status, body) { super(message); this.status = status; this.body = body; }
}

// fetch + JSON; throws ApiError with the server's `error` text on a non-2xx answer.
export async function api(path, options = {}) {
  let res;
  try {
    res = await fetch(path, { ...options, headers: { Accept: 'application/json', ...(options.headers || {}) } });
  } catch (e) {
    throw new ApiError(`the dashboard is out of reach (${e.message})`, 0, null);
  }
  let body = null;
  try { body = await res.json(); } catch { body = null; }
  if (!res.ok) throw new ApiError(body?.error || `${res.status} ${res.statusText}`, res.status, body);
  return body;
}

// Calls fn once calls stop for `ms`, or at the latest `maxWait` ms after the first one (so a
// steady stream of events still refreshes the page).
export function debounce(fn, ms, maxWait = 4 * ms) {
  let timer = null, first = 0;
  return (...args) => {
    const now = Date.now();
    if (!timer) first = now;
    clearTimeout(timer);
    const wait = Math.max(0, Math.min(ms, first + maxWait - now));
    timer = setTimeout(() => { timer = null; fn(...args); }, wait);
  };
}

// Runs the async fn, never twice at once: a call while it runs makes it run once more after.
export function serialized(fn) {
  let running = null, again = false;
  const run = async () => {
    if (running) { again = true; return running; }
    running = (async () => {
      try { do { again = false; await fn(); } while (again); } finally { running = null; }
    })();
    return running;
  };
  return run;
}

export function fmtDuration(s) {
  if (s == null || !Number.isFinite(s)) return '—';
  if (s < 0) s = 0;
  if (s < 10) return `${s.toFixed(1)}s`;
  if (s < 60) return `${Math.floor(s)}s`;
  const m = Math.floor(s / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  if (h < 24) return `${h}h ${String(m % 60).padStart(2, '0')}m`;
  return `${d}d ${String(h % 24).padStart(2, '0')}h`;
}

export const fmtAge = (s) => (s == null ? '—' : `${fmtDuration(s)} ago`);

export function fmtTime(iso) {
  if (!iso) return '—';
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return esc(iso);
  const pad = (n) => String(n).padStart(2, '0');
  const clock = `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
  const today = new Date();
  if (t.toDateString() === today.toDateString()) return clock;
  return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ${clock}`;
}

export const timeCell = (iso) => `<time datetime="${esc(iso || '')}" title="${esc(iso || '')}">${fmtTime(iso)}</time>`;

export const badge = (state) => `<span class="badge st-${esc(state)}">${esc(state || '?')}</span>`;

export function labelChips(labels) {
  return Object.entries(labels || {}).map(([k, v]) =>
    `<span class="chip" data-label="${esc(k)}=${esc(v)}">${esc(k)}=${esc(v)}</span>`).join('');
}

// A running duration: the server's value plus the time since it was read, ticking each second.
export function liveDuration(seconds, running) {
  if (!running || seconds == null) return `<span>${fmtDuration(seconds)}</span>`;
  return `<span data-live-base="${seconds}" data-live-at="${Date.now()}">${fmtDuration(seconds)}</span>`;
}
setInterval(() => {
  for (const el of document.querySelectorAll('[data-live-base]')) {
    const base = Number(el.dataset.liveBase), at = Number(el.dataset.liveAt);
    el.textContent = fmtDuration(base + (Date.now() - at) / 1000);
  }
}, 1000);

export function progressBar(done, total, failed) {
  total = total || 0; done = done || 0; failed = failed || 0;
  const pct = (n) => (total ? Math.min(100, (100 * n) / total) : 0);
  const ok = Math.max(0, done - failed);
  const text = `${done}/${total}` + (failed ? ` · <span class="failed-count">${failed} failed</span>` : '');
  return `<div class="progress" title="${done} of ${total} steps finished, ${failed} failed">` +
    `<div class="bar"><span class="seg st-succeeded" style="width:${pct(ok)}%"></span>` +
    `<span class="seg st-failed" style="width:${pct(failed)}%"></span></div><span class="ptext">${text}</span></div>`;
}

// The live event stream: handlers by event name (job, worker, cluster); `reopen` after a
// reconnection (events may have been missed). Shows the connection in `statusEl`.
export function openEvents(url, handlers, statusEl) {
  const show = (cls, text) => { if (statusEl) { statusEl.className = `live ${cls}`; statusEl.textContent = text; } };
  if (typeof EventSource === 'undefined') { show('off', 'no live updates'); return null; }
  const source = new EventSource(url);
  let broken = false;
  source.onopen = () => { show('on', 'live'); if (broken) handlers.reopen?.(); broken = false; };
  source.onerror = () => { broken = true; show('off', 'reconnecting…'); };
  for (const name of ['job', 'worker', 'cluster']) {
    source.addEventListener(name, (ev) => {
      let data = null;
      try { data = JSON.parse(ev.data); } catch { data = null; }
      handlers[name]?.(data);
    });
  }
  return source;
}

// The cluster panel (workers per device, queues, workers) and the alarm banner.
const alarmSteps = (a) => (a.steps || []).map((s) => (typeof s === 'string' ? s : s?.step ?? JSON.stringify(s)));
const alarmJobs = (a) => (a.jobs || []).map((j) => (typeof j === 'string' ? j : j?.job_id ?? JSON.stringify(j)));

// "device gpu: no worker serves it (its queue does not exist) — 3 step(s) wait (job X: a, b)", as HTML
// (job ids linked) or text: the words of `theodolite monitor`'s alarm.
export function alarmHtml(alarm, link = true) {
  const steps = alarmSteps(alarm), jobs = alarmJobs(alarm);
  const text = (v) => (link ? esc(v) : v);
  const shown = steps.slice(0, 6).map(text).join(', ') + (steps.length > 6 ? `, … (${steps.length - 6} more)` : '');
  const ids = jobs.map((j) => (link ? `<a href="/jobs/${encodeURIComponent(j)}">${esc(j)}</a>` : j)).join(', ');
  const which = [jobs.length ? `${jobs.length > 1 ? 'jobs' : 'job'} ${ids}` : '', shown].filter(Boolean).join(': ');
  const because = alarm.reason ? ` (${text(alarm.reason)})` : '';
  return `device ${text(alarm.device)}: no worker serves it${because} — ${steps.length} step(s) wait` +
    (which ? ` (${which})` : '');
}
export const alarmText = (alarm) => alarmHtml(alarm, false);

export function renderAlarms(el, alarms) {
  if (!el) return;
  el.innerHTML = (alarms || []).map((a) =>
    `<div class="alarm" role="alert" data-device="${esc(a.device)}"><strong>⚠ ${alarmHtml(a)}</strong></div>`).join('');
}

export function renderCluster(el, data) {
  const opened = el.querySelector('details')?.open;
  const devices = data.devices || [], workers = data.workers || [];
  const deviceRows = devices.map((d) => {
    const q = d.queue;
    const cls = (d.online || 0) === 0 && ((d.ready || 0) > 0 || (q?.messages || 0) > 0) ? ' class="warn"' : '';
    const queue = q ? `${q.messages} <span class="muted">/ ${q.consumers}</span>` : (d.probed ? '—' : '?');
    const ready = `${d.ready ?? 0}` + (d.oldest_ready_s == null ? '' : ` <span class="muted">· ${fmtDuration(d.oldest_ready_s)}</span>`);
    return `<tr${cls} data-device="${esc(d.device)}"><td><b>${esc(d.device)}</b></td>` +
      `<td class="num">${d.online ?? 0}${d.silent ? ` <span class="muted">+${d.silent} silent</span>` : ''}</td>` +
      `<td class="num">${d.busy ?? 0}/${d.slots ?? 0}${d.held ? ` <span class="muted">+${d.held} held</span>` : ''}</td>` +
      `<td class="num">${fmtAge(d.last_beat_s)}</td><td class="num">${queue}</td><td class="num">${ready}</td></tr>`;
  }).join('');
  const workerRows = workers.map((w) =>
    `<tr data-worker="${esc(w.worker_id)}"><td class="mono">${esc(w.worker_id)}</td><td>${esc(w.device)}</td>` +
    `<td><span class="wstatus ws-${esc(w.status)}">${esc(w.status)}</span></td>` +
    `<td class="num">${w.busy ?? 0}/${w.slots ?? 0}</td><td class="num">${w.completed ?? 0}</td>` +
    `<td class="num">${fmtAge(w.last_seen_s)}</td></tr>`).join('');
  el.innerHTML = `<h2>Cluster</h2>` +
    (devices.length ? `<div class="scroll"><table class="compact"><thead><tr><th>device</th><th>workers</th>` +
      `<th>busy/slots</th><th>heartbeat</th><th title="ready messages in the device's queue / its consumers">queue</th>` +
      `<th title="dispatched steps not started · the oldest one's wait">ready</th></tr></thead>` +
      `<tbody>${deviceRows}</tbody></table></div>` : '<p class="muted">No devices seen yet.</p>') +
    (workers.length ? `<details${(opened ?? workers.length <= 8) ? ' open' : ''}><summary>${workers.length} worker(s)</summary>` +
      `<div class="scroll"><table class="compact"><thead><tr><th>worker</th><th>device</th><th>status</th><th>busy</th>` +
      `<th>done</th><th>seen</th></tr></thead><tbody>${workerRows}</tbody></table></div></details>` : '');
}

// Mounts the cluster panel: refreshed every 5 s and (debounced) on worker/cluster events.
export function mountCluster(panelEl, bannerEl) {
  const refresh = serialized(async () => {
    try {
      const data = await api('/api/cluster');
      if (panelEl) renderCluster(panelEl, data);
      renderAlarms(bannerEl, data.alarms);
    } catch (e) {
      if (panelEl) panelEl.innerHTML = `<h2>Cluster</h2><p class="error">${esc(e.message)}</p>`;
    }
  });
  refresh();
  setInterval(refresh, 5000);
  return { refresh, onEvent: debounce(refresh, 500) };
}

export async function loadConfig() {
  try { return await api('/api/config'); } catch { return { namespace: '', token_required: false, host: '' }; }
}

export function showNamespace(config) {
  const el = $('#namespace');
  if (el && config.namespace) el.textContent = config.namespace;
}
