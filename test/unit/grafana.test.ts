// contrib/grafana-dashboard.json must stay true to the code: every metric a panel or a variable queries is one the
// daemon's registry exports (asked of the registry itself, as src/daemon/main.ts builds it), and the panels cover
// what operators look at first.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/daemon/metrics.js';

interface Target {
  expr?: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  type: string;
  title: string;
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
  panels?: Panel[];
}
interface Dashboard {
  panels: Panel[];
  templating: { list: { name: string; type: string; query?: unknown; definition?: string; datasource?: { uid?: string } }[] };
}

const dashboard = JSON.parse(readFileSync(new URL('../../contrib/grafana-dashboard.json', import.meta.url), 'utf8')) as Dashboard;
// Rows may hold their panels (collapsed rows do).
const allPanels = (ps: Panel[]): Panel[] => ps.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
const panels = allPanels(dashboard.panels).filter((p) => p.type !== 'row');

/** Exported metric names, with the series names Prometheus derives from histograms and summaries. */
async function exportedSeries(): Promise<Set<string>> {
  // As /metrics serves it: scrape() adds the process metrics, which join the registry after start-up.
  const exported = createMetrics({ url: 'http://x:1', prefix: '/p' });
  await exported.scrape();
  const metrics = await exported.registry.getMetricsAsJSON();
  const names = new Set<string>();
  for (const m of metrics) {
    names.add(m.name);
    const type = String(m.type);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(m.name + s);
    if (type === 'summary') for (const s of ['_sum', '_count']) names.add(m.name + s);
  }
  return names;
}

const metricNames = (expr: string): string[] => expr.match(/\betcdmirror_[a-z0-9_]+/g) ?? [];

describe('contrib/grafana-dashboard.json', () => {
  it('queries only series the daemon exports, in every panel target and every variable', async () => {
    const exported = await exportedSeries();
    const exprs = [
      ...panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr ?? '')),
      ...dashboard.templating.list.map((v) => v.definition ?? ''),
      ...dashboard.templating.list.map((v) => (typeof v.query === 'object' && v.query !== null ? String((v.query as { query?: string }).query ?? '') : String(v.query ?? ''))),
    ];
    const used = new Set(exprs.flatMap(metricNames));
    expect(used.size).toBeGreaterThanOrEqual(20);
    expect([...used].filter((name) => !exported.has(name))).toEqual([]);
  });

  it('every panel has targets with an expression, on the ${datasource} variable, filtered by $instance', () => {
    expect(panels.length).toBeGreaterThanOrEqual(10);
    for (const p of panels) {
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      expect(p.datasource?.uid, p.title).toBe('${datasource}');
      for (const t of p.targets ?? []) {
        expect(t.datasource?.uid, p.title).toBe('${datasource}');
        expect(t.expr, p.title).toMatch(/etcdmirror_/);
        for (const selector of t.expr!.match(/etcdmirror_[a-z0-9_]+(\{[^}]*\})?/g) ?? []) expect(selector, p.title).toContain('instance=~"$instance"');
      }
    }
  });

  it('has the datasource and instance variables', () => {
    const byName = new Map(dashboard.templating.list.map((v) => [v.name, v]));
    expect(byName.get('datasource')).toMatchObject({ type: 'datasource', query: 'prometheus' });
    expect(byName.get('instance')).toMatchObject({ type: 'query', datasource: { uid: '${datasource}' } });
  });

  it('shows lag, headroom, throughput, state, faults, heals, reconciles and the HA role', () => {
    const used = new Set(panels.flatMap((p) => (p.targets ?? []).flatMap((t) => metricNames(t.expr ?? ''))));
    for (const name of [
      'etcdmirror_lag_events',
      'etcdmirror_lag_seconds',
      'etcdmirror_window_headroom_events',
      'etcdmirror_events_applied_total',
      'etcdmirror_state',
      'etcdmirror_faults_total',
      'etcdmirror_healed_total',
      'etcdmirror_reconcile_keys_written_total',
      'etcdmirror_ha_role',
    ]) {
      expect(used, name).toContain(name);
    }
  });
});
