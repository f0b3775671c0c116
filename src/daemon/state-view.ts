// The /state view (also each /events message and what the gauges are set from): the machine's snapshot, the
// current run's status, and what the daemon measures around them, in one JSON shape (src/ui/wire.ts).
import type { SnapshotFrom } from 'xstate';
import type { lifecycle } from '../../machines/index.js';
import type { MirrorContext } from '../../machines/types.js';
import type { Config } from '../cli/config.js';
import type { Backend } from '../replication/backend.js';
import { HISTORY_WINDOW_EVENTS, windowHeadroom } from '../replication/window.js';
import type { OrderingPolicy } from '../replication/v2/ordering.js';
import type { SourceBudget } from '../replication/v2/source-budget.js';
import type { AuditScheduler } from '../replication/audit.js';
import type { HaController } from './ha.js';
import { readiness, type RateMeter } from './health.js';
import type { StateView } from './http.js';
import type { RequestCosts } from './request-cost.js';
import { VERSION } from './version.js';
import type { CeilingView, OrderedCeiling } from './ceiling.js';

export type Snapshot = SnapshotFrom<typeof lifecycle>;

export interface TimelineEntry {
  at: string;
  from: string;
  to: string;
  reason: string;
}

/** Leaf state name: 'tailing' for running.tailing. */
export function stateName(snapshot: Snapshot): string {
  const v = snapshot.value as string | Record<string, string>;
  if (typeof v === 'string') return v;
  // standby's children are steps of one role; running's children are the states operators know.
  if ('standby' in v) return 'standby';
  return Object.values(v)[0] ?? 'unknown';
}

function countResources(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) counts[kind] = (counts[kind] ?? 0) + 1;
  return counts;
}

export interface StateParts {
  config: Config;
  indexKey: string;
  snapshot(): Snapshot;
  backend: Backend<HaController>;
  ordering: OrderingPolicy;
  /** v2 destination: the ordered ceiling measured from its writes. */
  ceiling?: Pick<OrderedCeiling, 'view'>;
  costs: RequestCosts;
  budget: SourceBudget | undefined;
  rates: { applied: RateMeter; reconcile: RateMeter };
  timeline: readonly TimelineEntry[];
  /** null with --audit-interval 0. */
  audit?: Pick<AuditScheduler, 'view'> | null;
}

export function stateView({ config, indexKey, snapshot, backend, ordering, ceiling, costs, budget, rates, timeline, audit }: StateParts): () => StateView {
  const { host, ha } = backend;
  return () => {
    const snap = snapshot();
    const ctx: MirrorContext = snap.context;
    const runner = host.status();
    const sourceIndex = Math.max(ctx.sourceIndex ?? 0, runner?.sourceIndex ?? 0) || null;
    const appliedIndex = host.lastPersisted ?? ctx.appliedIndex;
    const lagEvents = sourceIndex !== null && appliedIndex !== null ? Math.max(0, sourceIndex - appliedIndex) : null;
    // A v3 source keeps its history until compacted: no 1000-event window to fall out of.
    const headroomEvents = config.srcApi === 'v2' ? windowHeadroom(lagEvents) : null;
    const state = stateName(snap);
    const { ready, why } = readiness(state, ctx.reason, headroomEvents, config.srcApi === 'v2');
    // 'running.tailing': the /ui page highlights the statechart node with this id.
    const path = (v: unknown): string =>
      typeof v === 'string' ? v : Object.entries(v as Record<string, unknown>).map(([k, child]) => `${k}.${path(child)}`)[0] ?? '';
    const statePath = path(snap.value);
    // Outside `running` the runner is stopped or being stopped, whatever phase it last reported.
    const phase = statePath.startsWith('running.') ? runner?.phase ?? 'stopped' : runner && runner.inFlight > 0 ? 'stopping' : 'stopped';
    const queue = runner?.queue ?? 0;
    const inFlight = runner?.inFlight ?? 0;
    const clockOffsetMs = backend.clockOffsetMs();
    return {
      state,
      statePath,
      reason: ctx.reason,
      mode: ctx.mode,
      attempt: ctx.attempt,
      ready,
      readyReason: why,
      sourceIndex,
      appliedIndex,
      lagEvents,
      lagSeconds: runner?.oldestUnappliedAt ? (Date.now() - runner.oldestUnappliedAt) / 1000 : 0,
      headroomEvents,
      historyWindowEvents: config.srcApi === 'v2' ? HISTORY_WINDOW_EVENTS : null,
      eventsPerSecond: Math.round(rates.applied.perSecond() * 10) / 10,
      queue,
      inFlight,
      reconcile: runner?.reconcile
        ? { ...runner.reconcile, active: phase === 'reconcile', keysPerSecond: Math.round(rates.reconcile.perSecond()) }
        : null,
      runner: phase,
      // The run's two halves: its reader follows the source (from before the snapshot, in reload and recovery),
      // its writer applies what was read once the destination is reconciled.
      poller: phase === 'snapshot' || phase === 'reconcile' || phase === 'tail' ? 'watching' : 'stopped',
      writer: {
        state: { snapshot: 'waiting for the source snapshot', reconcile: 'reconciling', stopping: 'stopping', stopped: 'stopped' }[phase as string] ??
          (queue + inFlight > 0 ? 'applying' : 'caught up'),
        queue,
        inFlight,
      },
      ordering: {
        // A v3 destination applies whole revisions in source order, one Txn at a time, whatever --ordering says.
        mode: config.dstApi === 'v3' ? 'strict' : config.ordering,
        // What the writer does now: 'strict' (source order) or 'key' (writes to unrelated keys overlap).
        current: runner?.ordering ?? ordering.writerOrdering,
        reordering: ordering.reordering,
        reorderingSeconds: Math.round(ordering.reorderingMs()) / 1000,
        // v2 destination: what strict order carries at the current write latency, beside what the source sends.
        ...orderedCeilingFields(config.dstApi === 'v2' ? ceiling?.view() : undefined),
      },
      confirmedIndex: runner?.confirmedIndex ?? null,
      lastFault: ctx.lastFault,
      timeline: [...timeline],
      // The source's wall clock minus ours, from its Date headers: TTLs are computed on the source's clock.
      source: { url: config.src.origin, api: config.srcApi, prefix: config.srcPrefix, clockOffsetMs: clockOffsetMs === null ? null : Math.round(clockOffsetMs) },
      destination: { url: config.dst.origin, api: config.dstApi, prefix: config.dstPrefix, indexKey },
      // v3 counts revisions where v2 counts indexes; the numbers above are one or the other.
      position: config.srcApi === 'v3' ? 'revision' : 'index',
      // --ha: this instance's role and who holds the lock (null without --ha).
      role: ha ? (state === 'standby' ? 'standby' : ha.role) : null,
      ha: ha ? ha.view() : null,
      fenced: backend.fence.reason,
      // What authentication costs each side per request, and whether it is what holds the mirror back.
      auth: { source: costs.source.view(), destination: costs.destination.view() },
      sourceBudget: budget?.view() ?? null,
      audit: audit?.view() ?? null,
      version: VERSION,
      // Open handles by kind (sockets, timers, ...): flat over time in a healthy process.
      resources: countResources(),
    };
  };
}

function orderedCeilingFields(v: CeilingView | undefined): Pick<StateView['ordering'], 'ceilingPerSecond' | 'writeMs' | 'sourcePerSecond' | 'nearCeiling'> {
  return { ceilingPerSecond: v?.ceilingPerSecond ?? null, writeMs: v?.writeMs ?? null, sourcePerSecond: v?.sourcePerSecond ?? null, nearCeiling: v?.approaching ?? false };
}
