// Vestibule's dashboard: reads the admin server's /api/v1/ and draws it. Plain DOM calls
// only; every value from the API goes in as text, never as markup, because Ingress names,
// paths and diagnostics are written by cluster users.
'use strict';

const REFRESH_MS = 2000;
const VIEWS = ['routes', 'services', 'certificates', 'diagnostics', 'traffic'];

const state = {
  view: 'routes',
  generation: null,
  filter: '',
  // The previous traffic reading, by label set, to turn totals into rates.
  lastTraffic: null,
};

function h(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const tag = (text, kind) => h('span', { class: kind ? `tag ${kind}` : 'tag' }, text);

function table(headers, rows, empty, cls) {
  if (rows.length === 0) return h('p', { class: 'note' }, empty);
  return h('table', { class: cls },
    h('thead', {}, h('tr', {}, headers.map(([label, cls]) => h('th', { class: cls }, label)))),
    h('tbody', {}, rows));
}

async function api(endpoint, params) {
  const query = new URLSearchParams(params || {});
  const response = await fetch(`/api/v1/${endpoint}?${query}`, { headers: { accept: 'application/json' } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `${endpoint}: HTTP ${response.status}`);
  return body;
}

function listParams() {
  return state.filter ? { q: state.filter, limit: 200 } : { limit: 200 };
}

function ago(iso) {
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

function daysUntil(iso) {
  return Math.floor((Date.parse(iso) - Date.now()) / 86400000);
}

function backendText(backend) {
  if (!backend) return '';
  if (backend.unavailable !== undefined) return h('span', { class: 'bad' }, `unavailable: ${backend.unavailable}`);
  return h('span', {}, h('code', {}, `${backend.namespace}/${backend.service}:${backend.port}`),
    ' ', tag(`${backend.endpoints} endpoint${backend.endpoints === 1 ? '' : 's'}`, backend.endpoints ? '' : 'bad'));
}

function drawOverview(o) {
  const cards = [
    [o.generation, 'generation'],
    [o.virtual_hosts, 'hosts'],
    [o.routes, 'routes'],
    [o.services, 'services'],
    [`${o.endpoints - o.ejected_endpoints}/${o.endpoints}`, 'endpoints in use'],
    [o.certificates, 'certificates'],
    [o.ingresses.served, 'Ingresses served'],
    [o.diagnostics.error, 'errors', o.diagnostics.error ? 'bad' : ''],
    [o.diagnostics.warning, 'warnings', o.diagnostics.warning ? 'warn' : ''],
  ];
  document.getElementById('overview').replaceChildren(...cards.map(([n, label, cls]) =>
    h('div', { class: 'card' }, h('div', { class: `n ${cls || ''}` }, n), h('div', { class: 'l' }, label))));
  const status = document.getElementById('status');
  status.replaceChildren(`generation ${o.generation}, changed ${ago(o.published_at)}`,
    o.installed_generation !== o.generation ? ` (serving ${o.installed_generation})` : '',
    o.draining ? ' — shutting down' : '');
  status.dataset.generation = o.generation;
}

function routeRow(route) {
  const canary = route.canary && h('div', {}, tag('canary', 'warn'), ' ', backendText(route.canary.backend),
    ` ${route.canary.weight}/${route.canary.weight_total} from ${route.canary.ingress}`);
  return h('tr', { class: 'route' },
    h('td', {}, h('code', {}, route.path)),
    h('td', {}, route.kind),
    h('td', {}, backendText(route.backend), canary),
    h('td', {}, route.ingress, h('div', { class: 'muted' }, route.field)),
    h('td', {}, route.redirects_http ? tag('HTTP→HTTPS') : null, route.features.map((f) => tag(f))));
}

async function drawRoutes() {
  const r = await api('routes', listParams());
  const parts = [h('p', { class: 'note' },
    `${r.total} host${r.total === 1 ? '' : 's'}${r.hosts.length < r.total ? `, first ${r.hosts.length} shown` : ''}. `,
    'Within a host, routes are listed in the order they are tried: the first whose path matches a request serves it.')];
  for (const host of r.hosts) {
    parts.push(h('h2', { 'data-host': host.host }, host.host, ' ',
      host.tls ? tag('TLS', 'good') : tag('HTTP only'),
      host.passthrough ? tag(`TLS passthrough: ${host.passthrough}`, 'warn') : null,
      host.aliases.map((a) => tag(`alias ${a}`))));
    parts.push(table([['Path'], ['Match'], ['Backend'], ['Ingress'], ['Settings']],
      host.routes.map(routeRow), 'No routes.', 'routes'));
  }
  if (r.shadowed.length) {
    parts.push(h('h2', {}, 'Rules not served'));
    parts.push(table([['Host'], ['Path'], ['Ingress'], ['Held by']],
      r.shadowed.map((s) => h('tr', {}, h('td', {}, s.host), h('td', {}, h('code', {}, s.path), ` ${s.kind}`),
        h('td', {}, s.ingress, h('div', { class: 'muted' }, s.field)), h('td', {}, s.held_by))), ''));
  }
  if (r.default_backend) {
    parts.push(h('h2', {}, 'Default backend'), h('p', {}, backendText(r.default_backend.backend),
      r.default_backend.ingress ? ` from ${r.default_backend.ingress}` : ' (flag)'));
  }
  return parts;
}

async function drawServices() {
  const r = await api('services', listParams());
  return [h('p', { class: 'note' }, `${r.total} Service port${r.total === 1 ? '' : 's'}. `,
    'An ejected endpoint failed to accept connections and is left out for a while; it comes back by itself.'),
  table([['Service'], ['Routes', 'num'], ['Endpoints']], r.services.map((s) => h('tr', { class: 'service' },
    h('td', {}, h('code', {}, `${s.namespace}/${s.service}:${s.port}`)),
    h('td', { class: 'num' }, s.routes),
    h('td', {}, s.endpoints.length === 0 ? tag('no ready endpoints', 'bad') : s.endpoints.map((e) =>
      tag(`${e.address}${e.ejected ? ' ejected' : ''}${e.in_flight ? ` (${e.in_flight} in flight)` : ''}`,
        e.ejected ? 'bad' : 'good'))))), 'No Services.')];
}

function expiry(certificate) {
  const days = daysUntil(certificate.not_after);
  const cls = days < 0 ? 'bad' : days < 14 ? 'warn' : 'good';
  return tag(days < 0 ? `expired ${certificate.not_after}` : `${days} days (${certificate.not_after})`, cls);
}

async function drawCertificates() {
  const r = await api('certificates');
  return [
    h('h2', {}, 'Default certificate'),
    h('p', {}, r.default_certificate.subject, ' ', h('span', { class: 'muted' }, r.default_certificate.source), ' ',
      expiry(r.default_certificate)),
    h('h2', {}, 'TLS hosts'),
    table([['Host'], ['Certificate'], ['Names'], ['Expires in']], r.hosts.map((host) => h('tr', { class: 'certificate' },
      h('td', {}, host.host, host.default ? h('div', {}, tag('default certificate', 'warn')) : null),
      h('td', {}, host.certificate.subject, h('div', { class: 'muted' }, host.certificate.source)),
      h('td', {}, host.certificate.dns_names.join(', ')),
      h('td', {}, expiry(host.certificate)))), 'No host has a TLS section.'),
    r.hosts_without_tls.length ? h('p', { class: 'note' }, `Hosts without TLS: ${r.hosts_without_tls.join(', ')}`) : null,
  ];
}

async function drawDiagnostics() {
  const r = await api('diagnostics', listParams());
  const level = { error: 'bad', warning: 'warn', info: '' };
  return [
    h('p', { class: 'note' }, `${r.total} finding${r.total === 1 ? '' : 's'} from the last compile. An object with an error was skipped, whole or in the part the field names.`),
    table([['Severity'], ['Object'], ['Field'], ['Message']], r.diagnostics.map((d) => h('tr', { class: 'diagnostic' },
      h('td', {}, tag(d.severity, level[d.severity])),
      h('td', {}, `${d.object.kind || ''} ${d.object.namespace ? `${d.object.namespace}/` : ''}${d.object.name}`),
      h('td', {}, h('code', {}, d.field)),
      h('td', {}, d.message))), 'Nothing to report.'),
    r.source_problems.length ? h('h2', {}, 'Source problems') : null,
    r.source_problems.length ? table([['Source'], ['Problem']], r.source_problems.map((p) =>
      h('tr', {}, h('td', {}, h('code', {}, p.source)), h('td', {}, p.message))), '') : null,
    r.ignored_ingresses.length ? h('h2', {}, 'Ingresses of other controllers') : null,
    r.ignored_ingresses.length ? table([['Ingress'], ['Why not ours']], r.ignored_ingresses.map((i) =>
      h('tr', {}, h('td', {}, `${i.namespace}/${i.name}`), h('td', {}, i.reason))), '') : null,
  ];
}

// The duration below which `share` of the requests between two readings finished, from the
// histogram buckets: the upper bound of the bucket where that share is reached.
function quantile(buckets, previous, share) {
  const counts = buckets.map((b, i) => b.count - (previous ? previous[i].count : 0));
  const total = counts.reduce((a, b) => a + b, 0);
  if (total <= 0) return null;
  let seen = 0;
  for (let i = 0; i < counts.length; i += 1) {
    seen += counts[i];
    if (seen >= share * total) return buckets[i].le;
  }
  return '+Inf';
}

function ms(seconds) {
  if (seconds === null) return '–';
  if (seconds === '+Inf') return '> 10 s';
  return seconds < 1 ? `${Math.round(seconds * 1000)} ms` : `${seconds.toFixed(2)} s`;
}

async function drawTraffic() {
  const r = await api('traffic', listParams());
  if (!r.enabled) return [h('p', { class: 'note' }, 'Request metrics are off (--metrics false).')];
  const previous = state.lastTraffic;
  const seconds = previous ? (r.at_ms - previous.at_ms) / 1000 : 0;
  const key = (t) => `${t.namespace}/${t.ingress}/${t.service}/${t.host || ''}`;
  const before = new Map(previous ? previous.routes.map((t) => [key(t), t]) : []);
  state.lastTraffic = r;
  const rows = r.routes.map((t) => {
    const p = before.get(key(t));
    const requests = p ? t.requests - p.requests : 0;
    const errors = p ? t.server_errors - p.server_errors : 0;
    const rate = p && seconds > 0 ? requests / seconds : null;
    const mean = p && requests > 0 ? (t.duration_sum_seconds - p.duration_sum_seconds) / requests : null;
    return h('tr', { class: 'traffic' },
      h('td', {}, t.ingress ? `${t.namespace}/${t.ingress}` : h('span', { class: 'muted' }, 'no route matched')),
      h('td', {}, t.service, t.host ? h('div', { class: 'muted' }, t.host) : null),
      h('td', { class: 'num' }, rate === null ? '–' : rate.toFixed(1)),
      h('td', { class: `num ${errors > 0 ? 'bad' : ''}` }, p && requests > 0 ? `${((100 * errors) / requests).toFixed(1)} %` : '–'),
      h('td', { class: 'num' }, ms(mean)),
      h('td', { class: 'num' }, p ? ms(quantile(t.duration_buckets, p.duration_buckets, 0.99)) : '–'),
      h('td', { class: 'num' }, t.requests),
      h('td', { class: 'num' }, t.server_errors));
  });
  return [h('p', { class: 'note' }, 'Rates over the last refresh; totals since start. Latency buckets start at 5 ms.'),
    table([['Ingress'], ['Service'], ['req/s', 'num'], ['5xx', 'num'], ['mean', 'num'], ['p99 ≤', 'num'],
      ['requests', 'num'], ['5xx total', 'num']], rows, 'No requests yet.')];
}

const DRAW = {
  routes: drawRoutes, services: drawServices, certificates: drawCertificates,
  diagnostics: drawDiagnostics, traffic: drawTraffic,
};

let drawing = false;
async function drawView() {
  if (drawing) return;
  drawing = true;
  try {
    const parts = await DRAW[state.view]();
    const view = document.getElementById('view');
    view.replaceChildren(...parts.filter(Boolean));
    view.dataset.view = state.view;
    view.dataset.generation = state.generation;
  } catch (error) {
    document.getElementById('view').replaceChildren(h('p', { class: 'note bad' }, String(error.message || error)));
  } finally {
    drawing = false;
  }
}

async function tick() {
  try {
    const overview = await api('overview');
    drawOverview(overview);
    const changed = overview.generation !== state.generation;
    state.generation = overview.generation;
    if (changed || state.view === 'traffic' || state.view === 'services') await drawView();
  } catch (error) {
    document.getElementById('status').textContent = `admin API unreachable: ${error.message || error}`;
  }
}

function selectView() {
  const wanted = location.hash.replace('#', '');
  state.view = VIEWS.includes(wanted) ? wanted : 'routes';
  for (const link of document.querySelectorAll('nav a')) {
    link.classList.toggle('active', link.dataset.view === state.view);
  }
  drawView();
}

document.addEventListener('DOMContentLoaded', () => {
  window.addEventListener('hashchange', selectView);
  let typing;
  document.getElementById('filter').addEventListener('input', (event) => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.filter = event.target.value.trim(); drawView(); }, 250);
  });
  selectView();
  tick();
  setInterval(tick, REFRESH_MS);
});
