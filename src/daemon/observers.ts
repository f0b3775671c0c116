// What watches the running mirror from outside the machine: the log lines and metrics of its state changes, the
// gauges set from /state every half second, the /history sampler, and the log/metric side of the ordering policy
// and the source request budget.
import type { Actor } from 'xstate';
import type { lifecycle } from '../../machines/index.js';
import type { Config } from '../cli/config.js';
import type { Backend } from '../replication/backend.js';
import { describeChange, OrderingPolicy, STRICT_ABOVE_HEADROOM } from '../replication/v2/ordering.js';
import { SourceBudget } from '../replication/v2/source-budget.js';
import type { HaController } from './ha.js';
import type { RateMeter } from './health.js';
import { bucketsOf, History, HISTORY_SAMPLE_MS, IntervalQuantile } from './history.js';
import type { StateView } from './http.js';
import type { Logger } from './log.js';
import { STATES, type Metrics } from './metrics.js';
import type { RequestCosts } from './request-cost.js';
import { stateName, type TimelineEntry } from './state-view.js';
import { approachMessage, OrderedCeiling } from './ceiling.js';

/** Transitions kept for /state and the /ui timeline. */
const TIMELINE_LENGTH = 50;
const PROGRESS_LOG_MS = 3_000;
const GAUGES_MS = 500;

/** --ordering, reported: a metric while writes may overlap, a log line on entering and on leaving. */
export function orderingPolicy(config: Config, log: Logger, metrics: Metrics): OrderingPolicy {
  const ordering = new OrderingPolicy(config.ordering, (change) => {
    metrics.reorderingActive.set(change.reordering ? 1 : 0);
    if (change.reordering) {
      metrics.reorderingEpisodes.inc();
      log.warn({ ...change, restoredAbove: STRICT_ABOVE_HEADROOM }, describeChange(change));
    } else {
      log.info({ ...change, reorderingSeconds: ordering.reorderingMs() / 1000 }, describeChange(change));
    }
  });
  metrics.reorderingActive.set(ordering.reordering ? 1 : 0);
  return ordering;
}

/** A v2 source's request budget, counted in metrics; the first over-budget proof of an episode is logged. */
export function sourceBudget(config: Config, costs: RequestCosts, log: Logger, metrics: Metrics): SourceBudget | undefined {
  if (config.srcApi !== 'v2') return undefined;
  const budget: SourceBudget = new SourceBudget(config.srcRequestBudget, () => costs.source.expensive, {
    counted: (purpose) => metrics.sourceBudgetRequests.labels({ purpose }).inc(),
    exceeded: (storePerSecond, starts) => {
      metrics.sourceBudgetExceeded.inc();
      if (starts) log.warn({ storeIndexesPerSecond: storePerSecond, budget: config.srcRequestBudget }, budget.exceededMessage(storePerSecond));
    },
  });
  return budget;
}

/** Sets the gauges from the state view, feeds the rates and logs a long reconcile's progress; returns the stop. */
/** The ordered ceiling of a v2 destination: said once per episode when the source approaches it. */
export function orderedCeiling(log: Logger): OrderedCeiling {
  return new OrderedCeiling((approaching, v) => {
    if (approaching) log.warn({ ...v }, approachMessage(v));
    else log.info({ ...v }, `the source (~${v.sourcePerSecond} events/s) is well below the ordered ceiling (~${v.ceilingPerSecond}/s) again`);
  });
}

export function startGauges(parts: {
  view: () => StateView;
  metrics: Metrics;
  log: Logger;
  host: Backend<HaController>['host'];
  ordering: OrderingPolicy;
  costs: RequestCosts;
  rates: { applied: RateMeter; reconcile: RateMeter };
  ceiling: OrderedCeiling;
}): () => void {
  const { view, metrics, log, host, ordering, costs, rates, ceiling } = parts;
  let reorderingMsCounted = 0;
  let progressLoggedAt = Date.now();
  const timer = setInterval(() => {
    const v = view();
    if (metrics.lastApplyAt) metrics.sinceLastApply.set((Date.now() - metrics.lastApplyAt) / 1000);
    if (v.lagEvents !== null) {
      metrics.lag.set(v.lagEvents);
      metrics.lagEvents.set(v.lagEvents);
    }
    if (v.headroomEvents !== null) metrics.windowHeadroom.set(v.headroomEvents);
    metrics.lagSeconds.set(v.lagSeconds);
    metrics.queueEvents.set(v.queue);
    metrics.writesInFlight.set(v.inFlight);
    const reorderingMs = ordering.reorderingMs();
    metrics.reorderingSeconds.inc((reorderingMs - reorderingMsCounted) / 1000);
    reorderingMsCounted = reorderingMs;
    const now = Date.now();
    for (const side of [costs.source, costs.destination]) side.observeLag(performance.now(), v.lagEvents, v.eventsPerSecond, v.state === 'tailing');
    void metrics.eventsApplied.get().then((m) => rates.applied.add(now, m.values.reduce((sum, x) => sum + x.value, 0)));
    // Long reconciles report progress in the log too, for operators following the terminal.
    const runner = host.status();
    if (runner?.lane && runner.received !== undefined && runner.phase === 'tail') {
      ceiling.add({ at: performance.now(), answered: runner.lane.answered, busyMs: runner.lane.busyMs, received: runner.received });
      const c = ceiling.view();
      if (c.ceilingPerSecond !== null) metrics.orderedCeiling.set(c.ceilingPerSecond);
      if (c.sourcePerSecond !== null) metrics.sourceEventsRate.set(c.sourcePerSecond);
    } else ceiling.reset();
    if (runner?.phase === 'reconcile' && runner.reconcile) {
      const { done, total } = runner.reconcile;
      rates.reconcile.add(now, done);
      if (now - progressLoggedAt >= PROGRESS_LOG_MS && done < total) {
        log.info({ done, total, rate: Math.round(rates.reconcile.perSecond()) }, 'reconcile progress');
        progressLoggedAt = now;
      }
    } else {
      rates.reconcile.reset();
      progressLoggedAt = now;
    }
  }, GAUGES_MS);
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * GET /history and the /ui charts: one sample a second; the write latency is the p99 of the destination writes
 * that finished in that second, from the histogram's buckets.
 */
export function startHistory(view: () => StateView, metrics: Metrics): { history: History; stop(): void } {
  const history = new History();
  history.enter('idle', Date.now());
  const writeP99 = new IntervalQuantile(0.99);
  const timer = setInterval(() => {
    void metrics.registry.getSingleMetric('etcdmirror_write_latency')?.get().then((latency) => {
      const v = view();
      const p99 = writeP99.next(bucketsOf(latency.values));
      history.record(Date.now(), {
        lagEvents: v.lagEvents,
        lagSeconds: v.lagSeconds,
        headroomEvents: v.headroomEvents,
        eventsPerSecond: v.eventsPerSecond,
        writeP99Ms: p99 === null ? null : p99 * 1000,
      });
    });
  }, HISTORY_SAMPLE_MS);
  timer.unref();
  return { history, stop: () => clearInterval(timer) };
}

/**
 * One log line per state change, not one per retry: while the same fault keeps failing the retries, the
 * stalled ⇄ running round trips are logged at debug level, and the recovery once, when progress resumes. Also
 * the state metrics, the /state timeline, /history's state bands and the /events listeners. `done` gets the exit
 * code once the machine is done.
 */
export function observeTransitions(
  actor: Actor<typeof lifecycle>,
  parts: { log: Logger; metrics: Metrics; backend: Backend<HaController>; history: History; done: (code: number) => void },
): { timeline: readonly TimelineEntry[]; onTransition(listener: () => void): () => void } {
  const { log, metrics, backend, history, done } = parts;
  const { host, ha } = backend;
  const timeline: TimelineEntry[] = [];
  const listeners = new Set<() => void>();
  let previous = 'idle';
  let outage: { code: string; retries: number } | null = null;
  actor.subscribe({
    next: (snap) => {
      const name = stateName(snap);
      if (outage && snap.context.attempt === 0 && name === 'tailing') {
        log.info({ state: name, retries: outage.retries, appliedIndex: snap.context.appliedIndex }, `resumed after ${outage.retries} retries`);
        outage = null;
      }
      if (name === previous) return;
      if (name === 'standby' || name === 'fenced') ha?.standDown(snap.context.reason);
      if (name === 'fenced') metrics.fenced.set(1);
      const entry = { from: previous, to: name, reason: snap.context.reason, appliedIndex: host.lastPersisted ?? snap.context.appliedIndex };
      const at = Date.now();
      timeline.push({ at: new Date(at).toISOString(), from: previous, to: name, reason: snap.context.reason });
      history.enter(name, at);
      if (timeline.length > TIMELINE_LENGTH) timeline.shift();
      const fault = snap.context.lastFault;
      const retrying = ['starting', 'tailing', 'reloading', 'recovering'].includes(name) && previous === 'stalled';
      const repeat = outage !== null && (name === 'stalled' ? fault?.code === outage.code : retrying);
      if (name === 'stalled') outage = repeat && outage ? { code: outage.code, retries: outage.retries + 1 } : { code: fault?.code ?? '', retries: 0 };
      if (repeat) log.debug(entry, `state: ${name} (retry)`);
      else if (name === 'stalled' || name === 'outOfWindow' || name === 'failed' || name === 'fenced') log.error({ ...entry, fault }, `state: ${name}`);
      else log.info(entry, `state: ${name}`);
      for (const s of STATES) metrics.state.labels({ state: s }).set(s === name ? 1 : 0);
      metrics.transitions.labels({ state: name }).inc();
      previous = name;
      for (const listener of listeners) listener();
      if (snap.status === 'done') done(name === 'stopped' ? 0 : 1);
    },
    error: (err) => {
      log.fatal({ err }, 'lifecycle machine crashed');
      done(1);
    },
  });
  return {
    timeline,
    onTransition(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}
