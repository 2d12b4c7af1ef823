// The admin dashboard in a real headless Chromium, against the real `vestibule` binary
// serving a fixture configuration with a real backend: the page loads with no console
// error, shows the fixture's routes in the order they are tried, follows a manifest change,
// renders every view, shows hostile text as text, and leaves a screenshot in
// target/artifacts/.
//
// Usage: node dashboard.test.mjs   (VESTIBULE=path/to/vestibule, CHROMIUM=path/to/chromium)

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const binary = process.env.VESTIBULE || path.join(root, 'target/debug/vestibule');
const browserPath = process.env.CHROMIUM || '/usr/bin/chromium';
const artifacts = path.join(root, 'target/artifacts');
const DEADLINE_MS = 20000;

function step(text) {
  process.stdout.write(`- ${text}\n`);
}

// A real backend: answers every request with its path.
function startBackend() {
  const server = http.createServer((request, response) => {
    response.setHeader('content-type', 'text/plain');
    response.end(`backend saw ${request.url}\n`);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function service(name, port) {
  return `apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: shop}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ${name}-1
  namespace: shop
  labels: {kubernetes.io/service-name: ${name}}
addressType: IPv4
ports: [{name: http, port: ${port}}]
endpoints: [{addresses: ["127.0.0.1"], conditions: {ready: true}}]
`;
}

function ingress(name, host, paths) {
  const rules = paths.map(([p, type, svc]) => `          - path: ${JSON.stringify(p)}
            pathType: ${type}
            backend: {service: {name: ${svc}, port: {number: 80}}}`).join('\n');
  return `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ${name}, namespace: shop}
spec:
  ingressClassName: vestibule
  rules:
    - host: ${host}
      http:
        paths:
${rules}
`;
}

const CLASS = `apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: vestibule}
spec: {controller: vestibule.dev/ingress-controller}
`;

// Starts `vestibule run` and resolves with its listeners' addresses, read from its JSON log.
function startVestibule(manifests) {
  const child = spawn(binary, ['run', '--log-format', 'json', '--manifests', manifests,
    '--http-addr', '127.0.0.1:0', '--https-addr', '127.0.0.1:0', '--admin-addr', '127.0.0.1:0',
    '--dashboard', '--access-log', 'off'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const addresses = {};
  const log = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`vestibule did not start:\n${log.join('\n')}`)), DEADLINE_MS);
    child.on('exit', (code) => reject(new Error(`vestibule exited with ${code}:\n${log.join('\n')}`)));
    readline.createInterface({ input: child.stderr }).on('line', (line) => {
      log.push(line);
      let entry;
      try { entry = JSON.parse(line); } catch { return; }
      if (entry.message === 'listening') addresses[entry.listener] = entry.address;
      if (addresses.http && addresses.admin && !addresses.resolved) {
        addresses.resolved = true;
        clearTimeout(timer);
        resolve({ child, http: addresses.http, admin: addresses.admin, log });
      }
    });
  });
}

async function until(what, check) {
  const deadline = Date.now() + DEADLINE_MS;
  for (;;) {
    try { if (await check()) return; } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function get(address, host, target) {
  const [hostname, port] = address.split(':');
  return new Promise((resolve, reject) => {
    http.get({ hostname, port, path: target, headers: { host } }, (response) => {
      let body = '';
      response.on('data', (chunk) => { body += chunk; });
      response.on('end', () => resolve({ status: response.statusCode, body }));
    }).on('error', reject);
  });
}

async function main() {
  const dir = mkdtempSync(path.join(tmpdir(), 'vestibule-dashboard-'));
  const backend = await startBackend();
  const port = backend.address().port;
  writeFileSync(path.join(dir, 'class.yaml'), CLASS);
  writeFileSync(path.join(dir, 'services.yaml'), `${service('web', port)}---\n${service('api', port)}`);
  writeFileSync(path.join(dir, 'shop.yaml'), ingress('shop', 'shop.test',
    [['/', 'Prefix', 'web'], ['/api', 'Prefix', 'api'], ['/api/health', 'Exact', 'api']]));
  // An annotation value Vestibule refuses, carrying markup: the diagnostics view quotes it
  // and must show it as text, as the routes view must show the path.
  const hostile = ingress('hostile', 'bad.test', [['/x<img src=x id=injected>', 'Exact', 'web']])
    .replace('metadata: {name: hostile, namespace: shop}', `metadata:
  name: hostile
  namespace: shop
  annotations: {nginx.ingress.kubernetes.io/proxy-body-size: "<img src=x id=injected>"}`);
  writeFileSync(path.join(dir, 'hostile.yaml'), hostile);

  const vestibule = await startVestibule(dir);
  let browser;
  const problems = [];
  try {
    const admin = `http://${vestibule.admin}`;
    await until('readiness', async () => (await fetch(`${admin}/readyz`)).ok);
    step(`vestibule ready; admin on ${admin}`);
    for (const target of ['/', '/api/orders', '/api/health', '/api/orders']) {
      const answer = await get(vestibule.http, 'shop.test', target);
      assert.equal(answer.status, 200, `GET shop.test${target}`);
    }

    browser = await chromium.launch({
      executablePath: browserPath,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('console', (message) => {
      if (message.type() === 'error' || message.type() === 'warning') problems.push(`console ${message.type()}: ${message.text()}`);
    });
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('requestfailed', (request) => problems.push(`request failed: ${request.url()}`));
    page.on('response', (response) => {
      if (response.status() >= 400) problems.push(`HTTP ${response.status()}: ${response.url()}`);
    });

    await page.goto(`${admin}/dashboard/`);
    await page.waitForSelector('h2[data-host="shop.test"]', { timeout: DEADLINE_MS });
    const shopRows = page.locator('h2[data-host="shop.test"] + table tr.route td:first-child');
    assert.deepEqual(await shopRows.allTextContents(), ['/api/health', '/api', '/'],
      'routes of shop.test, in the order they are tried');
    assert.equal(await page.locator('h2[data-host="bad.test"] + table tr.route td:first-child').textContent(),
      '/x<img src=x id=injected>', 'a path with markup is shown as text');
    assert.equal(await page.locator('#injected').count(), 0, 'no markup from the API reaches the page');
    const firstRow = await page.locator('h2[data-host="shop.test"] + table tr.route').first().textContent();
    assert.match(firstRow, /Exact/);
    assert.match(firstRow, /shop\/api:80/);
    assert.match(firstRow, /shop\/shop/);
    step('routes view shows the fixture');

    writeFileSync(path.join(dir, 'blog.yaml'), ingress('blog', 'blog.test', [['/posts', 'Prefix', 'web']]));
    await page.waitForSelector('h2[data-host="blog.test"]', { timeout: DEADLINE_MS });
    assert.match(await page.locator('#status').textContent(), /generation 2/);
    step('the page followed a manifest change');

    await page.goto(`${admin}/dashboard/#services`);
    await page.waitForSelector('tr.service', { timeout: DEADLINE_MS });
    const services = (await page.locator('tr.service').allTextContents()).join('\n');
    assert.match(services, new RegExp(`shop/web:80.*127\\.0\\.0\\.1:${port}`));
    step('services view shows endpoints');

    await page.goto(`${admin}/dashboard/#certificates`);
    await page.waitForSelector('text=Default certificate', { timeout: DEADLINE_MS });

    await page.goto(`${admin}/dashboard/#diagnostics`);
    await page.waitForSelector('tr.diagnostic', { timeout: DEADLINE_MS });
    const diagnostics = (await page.locator('tr.diagnostic').allTextContents()).join('\n');
    assert.match(diagnostics, /shop\/hostile/);
    assert.match(diagnostics, /<img src=x id=injected>/, 'the refused value is quoted as text');
    assert.equal(await page.locator('#injected').count(), 0, 'no markup from the API reaches the page');
    step('diagnostics view shows the invalid Ingress, as text');

    await page.goto(`${admin}/dashboard/#traffic`);
    await page.waitForSelector('tr.traffic', { timeout: DEADLINE_MS });
    const traffic = (await page.locator('tr.traffic').allTextContents()).join('\n');
    assert.match(traffic, /shop\/shop/);
    // Rates need two readings: keep requests coming until a refresh shows a rate.
    await until('a request rate', async () => {
      await get(vestibule.http, 'shop.test', '/');
      const rows = await page.locator('tr.traffic').allTextContents();
      return rows.some((row) => /shop\/shop/.test(row) && /\d+\.\d/.test(row));
    });
    step('traffic view shows rates');

    await page.goto(`${admin}/dashboard/#routes`);
    await page.waitForSelector('h2[data-host="blog.test"]', { timeout: DEADLINE_MS });
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: path.join(artifacts, 'dashboard.png'), fullPage: true });
    step(`screenshot: ${path.join(artifacts, 'dashboard.png')}`);

    assert.deepEqual(problems, [], 'no console errors, failed requests or error responses');
    const policy = (await fetch(`${admin}/dashboard/`)).headers.get('content-security-policy');
    assert.match(policy, /default-src 'none'/);
    step('no console errors; strict Content-Security-Policy');
  } catch (error) {
    process.stderr.write(`seen by the browser:\n${problems.join('\n') || '(nothing)'}\n`);
    throw error;
  } finally {
    if (browser) await browser.close();
    vestibule.child.kill('SIGTERM');
    backend.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(() => {
  process.stdout.write('dashboard browser test: ok\n');
}, (error) => {
  process.stderr.write(`dashboard browser test FAILED: ${error.stack || error}\n`);
  process.exit(1);
});
