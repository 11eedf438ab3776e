// The jobs list at `/`: filters in the query string, live via /api/events, the cluster panel.
import {
  $, api, badge, debounce, esc, JOB_STATES, labelChips, liveDuration, loadConfig, mountCluster,
  openEvents, progressBar, showNamespace, timeCell,
} from '/static/common.js';

const form = $('#filters');
const FIELDS = ['state', 'label', 'limit'];

function readQuery() {
  const q = new URLSearchParams(location.search);
  for (const f of FIELDS) if (q.has(f)) form.elements[f].value = q.get(f);
}

function filters() {
  const q = new URLSearchParams();
  for (const f of FIELDS) {
    const v = form.elements[f].value.trim();
    if (v && !(f === 'limit' && v === '50')) q.set(f, v);
  }
  return q;
}

function row(job) {
  const id = encodeURIComponent(job.job_id);
  const failed = job.failed_step ? ` title="first failed step: ${esc(job.failed_step)}"` : '';
  return `<tr data-job="${esc(job.job_id)}" data-state="${esc(job.state)}">` +
    `<td class="mono"><a href="/jobs/${id}">${esc(job.job_id)}</a></td>` +
    `<td>${esc(job.name || '')}</td><td${failed}>${badge(job.state)}</td>` +
    `<td>${progressBar(job.steps_done, job.steps_total, job.steps_failed)}</td>` +
    `<td>${timeCell(job.submitted_at)}</td>` +
    `<td class="num">${liveDuration(job.duration_s, job.state === 'running' && !job.finished_at)}</td>` +
    `<td>${labelChips(job.labels)}</td></tr>`;
}

let loading = null;
async function load() {
  const q = filters();
  const shown = q.toString();
  history.replaceState(null, '', shown ? `?${shown}` : location.pathname);
  const params = new URLSearchParams(q);
  if (!params.has('limit')) params.set('limit', form.elements.limit.value || '50');
  const ticket = {};
  loading = ticket;
  const status = $('#jobs-status');
  try {
    const data = await api(`/api/jobs?${params}`);
    if (loading !== ticket) return; // a newer request is under way
    const jobs = data.jobs || [];
    $('#jobs tbody').innerHTML = jobs.length ? jobs.map(row).join('')
      : '<tr><td colspan="7" class="muted">No jobs match.</td></tr>';
    status.textContent = `${jobs.length} job(s)`;
    status.className = 'muted';
  } catch (e) {
    if (loading !== ticket) return;
    status.textContent = e.message;
    status.className = 'error';
  }
}

function init() {
  const select = $('#f-state');
  select.insertAdjacentHTML('beforeend', JOB_STATES.map((s) => `<option value="${s}">${s}</option>`).join(''));
  readQuery();
  const typed = debounce(load, 400);
  form.addEventListener('change', load);
  form.addEventListener('input', (ev) => { if (ev.target.tagName === 'INPUT') typed(); });
  form.addEventListener('submit', (ev) => { ev.preventDefault(); load(); });
  $('#jobs').addEventListener('click', (ev) => {
    const chip = ev.target.closest('.chip');
    if (!chip) return;
    form.elements.label.value = chip.dataset.label;
    load();
  });
  window.addEventListener('popstate', () => { readQuery(); load(); });

  load();
  const cluster = mountCluster($('#cluster'), $('#alarms'));
  const jobsChanged = debounce(load, 500);
  openEvents('/api/events', {
    job: jobsChanged,
    worker: cluster.onEvent,
    cluster: cluster.onEvent,
    reopen: () => { load(); cluster.refresh(); },
  }, $('#live'));
  loadConfig().then(showNamespace);
}

init();
