// The operator's view: the /ui page in a real browser (Debian's Chromium driven by playwright-core, no browser
// download) against the real binary mirroring between two real etcd processes, plus /readyz, /state against
// /metrics, and `etcd-mirror viz`. One etcd pair and one browser for the whole file: the machine has 2 cores.
import path from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lifecycle } from '../../machines/lifecycle.js';
import { allStates, machineGraph } from '../../src/daemon/viz/graph.js';
import { ARTIFACTS, launchBrowser } from '../helpers/browser.js';
import { runMirror, spawnMirror, startPair, waitForIndex, type MirrorProcess, type Pair } from '../helpers/mirror.js';
import { ok, sleep, storeIndex } from '../helpers/raw.js';

const PASSWORD = 'pa55-never-shown';

let pair: Pair;
let m: MirrorProcess;
let base: string;
let browser: BrowserContext;
let closeBrowser: (() => Promise<void>) | undefined;

beforeAll(async () => {
  pair = await startPair();
  await ok(pair.src.clientUrl, 'PUT', '/u/a', { value: '0' });
  // etcd without auth ignores credentials; they are here to prove that no page, stream or endpoint shows them.
  const dstWithCredentials = pair.dst.clientUrl.replace('http://', `http://mirror:${PASSWORD}@`);
  m = await spawnMirror(['--reload', '--src-prefix', '/u', '--dst-prefix', '/u', '--strip', pair.src.clientUrl, dstWithCredentials]);
  base = `http://127.0.0.1:${m.port}`;
  await m.waitForState('tailing');
  ({ browser, close: closeBrowser } = await launchBrowser());
});

afterAll(async () => {
  await closeBrowser?.();
  await m?.kill('SIGTERM');
  await pair?.stop();
});

const get = async (url: string) => {
  const res = await request(url);
  return { status: res.statusCode, body: await res.body.text() };
};

/** Value of one sample in Prometheus text format. */
function sample(text: string, name: string, labels = ''): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** The state id the page highlights, and what its status line says. */
async function shown(page: Page): Promise<{ current: string | undefined; marked: string; status: string }> {
  return page.evaluate(() => {
    const current = document.querySelector<SVGGElement>('.sc-state.current');
    return {
      current: current?.dataset.state,
      marked: current?.querySelector('.sc-name')?.textContent ?? '',
      status: document.getElementById('state')?.textContent ?? '',
    };
  });
}

const showsState = (page: Page, id: string, timeout: number) =>
  page.waitForFunction((want) => document.querySelector<SVGGElement>('.sc-state.current')?.dataset.state === want, id, { timeout });

describe('/state and /metrics', () => {
  it('agree on indexes, lag, headroom, queue and state; /readyz is 200 while tailing', async () => {
    for (let i = 0; i < 20; i++) await ok(pair.src.clientUrl, 'PUT', `/u/k${i}`, { value: String(i) });
    await waitForIndex(pair.dstClient, '/__replication/u', await storeIndex(pair.src.clientUrl));
    // Gauges are sampled every 500 ms: wait until both sides show the same quiet state.
    const deadline = Date.now() + 10_000;
    let pairs: [unknown, number | undefined][] = [];
    while (Date.now() < deadline) {
      const state = await m.state();
      const metrics = await m.metrics();
      pairs = [
        [state.sourceIndex, sample(metrics, 'etcdmirror_source_index')],
        [state.appliedIndex, sample(metrics, 'etcdmirror_applied_index')],
        [state.lagEvents, sample(metrics, 'etcdmirror_lag_events')],
        [state.headroomEvents, sample(metrics, 'etcdmirror_window_headroom_events')],
        [state.queue, sample(metrics, 'etcdmirror_write_queue_events')],
        [state.inFlight, sample(metrics, 'etcdmirror_writes_in_flight')],
        [1, sample(metrics, 'etcdmirror_state', `{state="${String(state.state)}"}`)],
      ];
      if (state.state === 'tailing' && pairs.every(([a, b]) => a === b)) break;
      await sleep(200);
    }
    expect(pairs.map(([a]) => a)).toEqual(pairs.map(([, b]) => b));
    const state = await m.state();
    expect(state).toMatchObject({ state: 'tailing', statePath: 'running.tailing', ready: true, poller: 'watching', historyWindowEvents: 1000 });
    expect(state.headroomEvents).toBe(1000 - (state.lagEvents as number));
    expect((state.timeline as { to: string }[]).map((t) => t.to)).toEqual(['starting', 'reloading', 'tailing']);
    expect(await get(`${base}/readyz`)).toEqual({ status: 200, body: 'ready\n' });
    expect((await get(`${base}/healthz`)).status).toBe(200);
  });

  it('serves the statechart drawn from the machine definition', async () => {
    const json = JSON.parse((await get(`${base}/ui/machine.json`)).body) as ReturnType<typeof machineGraph>;
    expect(json).toEqual(machineGraph(lifecycle));
    const svg = (await get(`${base}/ui/machine.svg`)).body;
    for (const s of allStates(json)) expect(svg).toContain(`data-state="${s.id}"`);
  });
});

describe('/ui in a browser', () => {
  it('highlights tailing, shows stalled within seconds of losing the destination, tailing again after it returns', async () => {
    const page = await browser.newPage();
    const requested: string[] = [];
    const problems: string[] = [];
    page.on('request', (r) => requested.push(r.url()));
    page.on('console', (msg) => msg.type() === 'error' && problems.push(msg.text()));
    page.on('pageerror', (err) => problems.push(err.message));
    await page.goto(`${base}/ui`);

    await showsState(page, 'running.tailing', 10_000);
    expect(await shown(page)).toEqual({ current: 'running.tailing', marked: '▶ tailing', status: '▶ tailing' });
    expect(await page.locator('#ready').textContent()).toMatch(/^READY: /);
    expect(await page.locator('.sc-state.active').getAttribute('data-state')).toBe('running');

    const killedAt = Date.now();
    await pair.dst.kill('SIGKILL');
    // The writer meets the dead destination with the next source event.
    for (let i = 0; i < 5; i++) await ok(pair.src.clientUrl, 'PUT', `/u/during-outage/${i}`, { value: String(i) });
    await showsState(page, 'stalled', 10_000);
    const stalledAfterMs = Date.now() - killedAt;
    expect(stalledAfterMs).toBeLessThan(10_000);
    expect(await shown(page)).toMatchObject({ marked: '▶ stalled', status: '▶ stalled' });
    expect(await page.locator('#ready').textContent()).toBe('NOT READY: not tailing');
    expect(await page.locator('#reason').textContent()).toMatch(/^Why: .*ECONNREFUSED/);
    expect(await page.locator('#timeline li').first().textContent()).toContain('→ stalled');
    await page.screenshot({ path: path.join(ARTIFACTS, 'ui-stalled.png') });
    // While retrying, the machine may be tailing for a moment between stalls: wait for the stalled answer.
    await expect.poll(async () => get(`${base}/readyz`), { timeout: 10_000, interval: 100 }).toMatchObject({
      status: 503,
      body: expect.stringMatching(/^not ready: state stalled: /),
    });

    await sleep(1_000);
    await pair.dst.restart();
    await waitForIndex(pair.dstClient, '/__replication/u', await storeIndex(pair.src.clientUrl), 40_000);
    await m.waitForState('tailing', 10_000);
    await showsState(page, 'running.tailing', 5_000);
    expect(await shown(page)).toEqual({ current: 'running.tailing', marked: '▶ tailing', status: '▶ tailing' });
    await expect.poll(async () => (await get(`${base}/readyz`)).status, { timeout: 5_000 }).toBe(200);
    await page.screenshot({ path: path.join(ARTIFACTS, 'ui-tailing.png') });

    // Offline: the page loaded nothing from anywhere else, and broke no rule of its content security policy.
    expect(requested.filter((u) => !u.startsWith(`${base}/`))).toEqual([]);
    expect(problems).toEqual([]);
    const html = await page.content();
    expect(html).not.toContain(PASSWORD);
    await page.close();
  });

  it('never shows credentials on any endpoint', async () => {
    for (const endpoint of ['/', '/state', '/history', '/metrics', '/ui', '/ui/app.js', '/ui/chart.js', '/ui/machine.json', '/lag', '/readyz']) {
      expect((await get(`${base}${endpoint}`)).body).not.toContain(PASSWORD);
    }
    const res = await request(`${base}/events`);
    expect(res.headers['content-type']).toBe('text/event-stream');
    let streamed = '';
    for await (const chunk of res.body) {
      streamed += String(chunk);
      if (streamed.includes('\n\ndata: ') && streamed.endsWith('\n\n')) break;
    }
    res.body.destroy();
    expect(streamed).toContain('"state":"tailing"');
    expect(streamed).not.toContain(PASSWORD);
  });
});

describe('etcd-mirror viz', () => {
  it('prints every state of the machine in each format', async () => {
    const ids = allStates(machineGraph(lifecycle)).map((s) => s.id);
    const [mermaid, svg, json] = await Promise.all(['mermaid', 'svg', 'json'].map((f) => runMirror(['viz', '--format', f])));
    expect([mermaid!.code, svg!.code, json!.code]).toEqual([0, 0, 0]);
    for (const id of ids) {
      expect(mermaid!.stdout).toContain(id.replaceAll('.', '_'));
      expect(svg!.stdout).toContain(`data-state="${id}"`);
    }
    expect(JSON.parse(json!.stdout)).toEqual(machineGraph(lifecycle));
    expect((await runMirror(['viz'])).stdout).toBe(mermaid!.stdout);
    const bad = await runMirror(['viz', '--format', 'png']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--format must be one of json, mermaid, svg/);
  });
});
