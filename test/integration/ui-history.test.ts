// The history charts on /ui in a real browser: the real binary mirrors between two etcd processes, the
// destination dies while the source runs more than etcd's 1000-event window past the stored index, then comes
// back behind a slow link, so that the mirror goes stalled → outOfWindow → recovering → tailing. The page must show
// the stalled and recovering bands, named, and a lag curve that rose during the stall, both in GET /history and
// in what the page drew. Only conditions are awaited, never a fixed time. Screenshots: test-artifacts/history-*.png.
import path from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HistoryJson } from '../../src/ui/wire.js';
import { ARTIFACTS, launchBrowser } from '../helpers/browser.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { spawnMirror, startPair, waitForIndex, type MirrorProcess, type Pair } from '../helpers/mirror.js';
import { ok, storeIndex, writeMany } from '../helpers/raw.js';

let pair: Pair;
let link: FaultProxy;
let m: MirrorProcess;
let base: string;
let browser: BrowserContext;
let closeBrowser: (() => Promise<void>) | undefined;

beforeAll(async () => {
  pair = await startPair();
  const dst = new URL(pair.dst.clientUrl);
  link = await startFaultProxy({ host: dst.hostname, port: Number(dst.port) });
  for (let i = 0; i < 20; i++) await ok(pair.src.clientUrl, 'PUT', `/h/seed/k${i}`, { value: String(i) });
  m = await spawnMirror(['--reload', '--src-prefix', '/h', '--dst-prefix', '/h', '--strip', pair.src.clientUrl, link.url]);
  base = `http://127.0.0.1:${m.port}`;
  await m.waitForState('tailing');
  ({ browser, close: closeBrowser } = await launchBrowser());
});

afterAll(async () => {
  await closeBrowser?.();
  await m?.kill('SIGTERM');
  await link?.close();
  await pair?.stop();
});

const history = async (): Promise<HistoryJson> => (await (await request(`${base}/history`)).body.json()) as HistoryJson;

/** Waits until /history satisfies `pred`; returns that answer. */
async function historyWhere(pred: (h: HistoryJson) => boolean, timeout = 30_000): Promise<HistoryJson> {
  let h = await history();
  await expect.poll(async () => pred((h = await history())), { timeout, interval: 250 }).toBe(true);
  return h;
}

/** What the page drew: states in the strip, their labels, and each curve's highest drawn value and point count. */
function drawn(page: Page) {
  return page.evaluate(() => {
    const svg = document.getElementById('historyChart')!;
    const bands = [...svg.querySelectorAll<SVGGElement>('.band')].map((g) => ({ state: g.dataset.state ?? '', label: g.querySelector('.band-label')?.textContent ?? null }));
    const curves = Object.fromEntries(
      [...svg.querySelectorAll<SVGPathElement>('path[data-series]')].map((p) => [p.dataset.series, { max: Number(p.dataset.max || NaN), points: Number(p.dataset.points) }]),
    );
    return { bands, curves, title: document.querySelector('#history h2')?.textContent ?? '' };
  });
}

const showsState = (page: Page, id: string, timeout: number) =>
  page.waitForFunction((want) => document.querySelector<SVGGElement>('.sc-state.current')?.dataset.state === want, id, { timeout, polling: 'raf' });

/** The chart has a band of `state` (the page fetches /history on every transition it is told of). */
const charted = (page: Page, state: string, timeout: number) =>
  page.waitForFunction((want) => document.querySelector(`#historyChart .band[data-state="${want}"]`) !== null, state, { timeout });

const curve = (page: Page, series: string, field: 'max' | 'last') =>
  page.evaluate(([s, f]) => Number(document.querySelector<SVGPathElement>(`path[data-series="${s}"]`)?.dataset[f!] || NaN), [series, field]);

async function shot(page: Page, name: string): Promise<string> {
  const file = path.join(ARTIFACTS, name);
  // The whole page: the history charts are below the statechart.
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot: ${file}`);
  return file;
}

/** Highest value of a series over the samples taken while in `state`. */
function maxDuring(h: HistoryJson, state: string, series: keyof HistoryJson['series']): number {
  let max = -Infinity;
  h.t.forEach((t, i) => {
    const v = h.series[series][i];
    const inState = h.bands.some((b) => b.state === state && b.from <= t && t <= (b.to ?? h.now));
    if (inState && v !== null && v !== undefined) max = Math.max(max, v);
  });
  return max;
}

describe('/ui history charts', () => {
  it('show a stall and a recovery as named bands, and the lag rising during the stall', async () => {
    const S = pair.src.clientUrl;
    const page = await browser.newPage();
    const requested: string[] = [];
    const problems: string[] = [];
    page.on('request', (r) => requested.push(r.url()));
    page.on('console', (msg) => msg.type() === 'error' && problems.push(msg.text()));
    page.on('pageerror', (err) => problems.push(err.message));
    await page.goto(`${base}/ui`);
    await showsState(page, 'running.tailing', 10_000);

    // Some traffic while tailing, for the rate and latency curves.
    for (let i = 0; i < 60; i++) await ok(S, 'PUT', `/h/live/k${i}`, { value: String(i) });
    const calm = await historyWhere((h) => h.series.writeP99Ms.some((v) => v !== null) && h.series.eventsPerSecond.some((v) => (v ?? 0) > 0));
    expect(calm.bands.at(-1)).toMatchObject({ state: 'tailing', to: null });
    await expect.poll(() => page.evaluate(() => Number(document.querySelector<SVGPathElement>('path[data-series="writeP99Ms"]')?.dataset.points)), { timeout: 10_000 }).toBeGreaterThan(0);
    await shot(page, 'history-tailing.png');

    // The stall: the destination dies; the writer meets it with the next event.
    await pair.dst.kill('SIGKILL');
    for (let i = 0; i < 5; i++) await ok(S, 'PUT', `/h/during/k${i}`, { value: String(i) });
    await showsState(page, 'stalled', 15_000);
    const lagBefore = maxDuring(await history(), 'tailing', 'lagEvents');
    // outOfWindow lasts 250 ms: caught if we can, not required (its band is checked below, from /history).
    const outOfWindowShot = showsState(page, 'outOfWindow', 60_000)
      .then(() => charted(page, 'outOfWindow', 2_000))
      .then(
        () => shot(page, 'history-outOfWindow.png'),
        () => null,
      );

    // While stalled, the source runs more than the 1000-event window past the stored index.
    await writeMany(1_200, (i) => ok(S, 'PUT', `/h/churn/k${i % 100}`, { value: `v${i}` }));
    const stalled = await historyWhere((h) => maxDuring(h, 'stalled', 'lagEvents') > 1_000);
    expect(lagBefore).toBeLessThan(100);
    await expect.poll(() => curve(page, 'lagEvents', 'max'), { timeout: 10_000 }).toBeGreaterThan(1_000);
    await showsState(page, 'stalled', 30_000);
    await shot(page, 'history-stalled.png');
    expect(maxDuring(stalled, 'stalled', 'lagEvents')).toBeGreaterThan(1_000);

    // The recovery: the destination comes back behind a slow link, so that the reconcile lasts long enough to see.
    link.setDelay(40);
    await pair.dst.restart();
    await showsState(page, 'running.recovering', 60_000);
    // The recovering band of this attempt, if the reconcile is still running when it is drawn.
    await page
      .waitForFunction(() => document.querySelector('#historyChart .band:last-of-type')?.getAttribute('data-state') === 'recovering', undefined, { timeout: 2_000 })
      .catch(() => undefined);
    await shot(page, 'history-recovering.png');
    await waitForIndex(pair.dstClient, '/__replication/h', await storeIndex(S), 60_000);
    link.setDelay(0);
    await m.waitForState('tailing', 20_000);
    const after = await historyWhere((h) => h.bands.at(-1)?.state === 'tailing' && (h.series.lagEvents.at(-1) ?? Infinity) < 100);
    console.log(`outOfWindow screenshot: ${(await outOfWindowShot) ?? 'not caught (the state lasts 250 ms)'}`);

    // /history: the states in order, each band ending where the next begins, and the lag back down.
    const states = after.bands.map((b) => b.state);
    expect(states).toEqual(expect.arrayContaining(['stalled', 'outOfWindow', 'recovering']));
    expect(states.indexOf('outOfWindow')).toBeGreaterThan(states.indexOf('stalled'));
    expect(states.lastIndexOf('recovering')).toBeGreaterThan(states.indexOf('outOfWindow'));
    for (let i = 1; i < after.bands.length; i++) expect(after.bands[i - 1]!.to).toBe(after.bands[i]!.from);

    // The page's copy (whole once, then what is new every second) holds the same states as the daemon's.
    await expect
      .poll(async () => {
        const drawnFroms = await page.evaluate(() => [...document.querySelectorAll<SVGGElement>('#historyChart .band')].map((g) => Number(g.dataset.from)));
        return JSON.stringify(drawnFroms) === JSON.stringify((await history()).bands.map((b) => b.from));
      }, { timeout: 10_000 })
      .toBe(true);

    // The page: named stalled and recovering bands, the outOfWindow band present, the lag curve above 1000.
    await page.waitForFunction(() => document.querySelector('#historyChart .band:last-of-type')?.getAttribute('data-state') === 'tailing');
    await expect.poll(() => curve(page, 'lagEvents', 'last'), { timeout: 10_000 }).toBeLessThan(100);
    const view = await drawn(page);
    const labels = view.bands.filter((b) => b.label !== null).map((b) => b.label);
    expect(labels).toEqual(expect.arrayContaining(['tailing', 'stalled', 'recovering']));
    expect(view.bands.map((b) => b.state)).toContain('outOfWindow');
    expect(view.curves.lagEvents!.max).toBeGreaterThan(1_000);
    expect(view.curves.headroomEvents!.points).toBeGreaterThan(0);
    expect(view.curves.eventsPerSecond!.max).toBeGreaterThan(0);
    expect(view.curves.writeP99Ms!.points).toBeGreaterThan(0);
    // The daemon is younger than 15 minutes: the axis covers its life.
    expect(view.title).toMatch(/^History since \d\d:\d\d:\d\d$/);
    await shot(page, 'history-recovered.png');
    await page.getByRole('button', { name: '1 min' }).click();
    expect(await page.getByRole('button', { name: '1 min' }).getAttribute('aria-pressed')).toBe('true');
    await shot(page, 'history-recovered-1min.png');

    // Offline, and within the content security policy.
    expect(requested.filter((u) => !u.startsWith(`${base}/`))).toEqual([]);
    expect(problems).toEqual([]);
    await page.close();
  });
});
