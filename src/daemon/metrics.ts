// The one registry and every metric. Names of the reference tool are kept (alerts are built on them);
// our own carry their unit in the name.
import { createRequire } from 'node:module';
import type * as Prom from 'prom-client';
import { REMOVAL_ACTIONS, WRITE_ACTIONS } from '../etcd/v2/decode.js';

// prom-client's classes from their own modules, and its process metrics only when first needed: its index also
// loads the Pushgateway (http, https) and OpenTelemetry (for exemplars), ~50 ms at every start, which a restarting
// mirror spends while the source's history window moves on. The lockfile pins the version.
const cjs = createRequire(import.meta.url); // not `require`: the bundle (scripts/bundle.mjs) declares that
const Registry = cjs('prom-client/lib/registry.js') as typeof Prom.Registry;
const Counter = cjs('prom-client/lib/counter.js') as typeof Prom.Counter;
const Gauge = cjs('prom-client/lib/gauge.js') as typeof Prom.Gauge;
const Histogram = cjs('prom-client/lib/histogram.js') as typeof Prom.Histogram;
const Summary = cjs('prom-client/lib/summary.js') as typeof Prom.Summary;
/** After start-up, the process metrics (CPU, memory, event-loop delay) join the registry by themselves. */
const PROCESS_METRICS_AFTER_MS = 1_000;

export const STATES = ['idle', 'standby', 'starting', 'reloading', 'recovering', 'tailing', 'stalled', 'outOfWindow', 'fenced', 'stopping', 'stopped', 'failed'] as const;

export function createMetrics(labels: { url: string; prefix: string }) {
  const registry = new Registry();
  const r = [registry];
  let processMetrics = false;
  const withProcessMetrics = () => {
    if (processMetrics) return;
    processMetrics = true;
    (cjs('prom-client/lib/defaultMetrics.js') as typeof Prom.collectDefaultMetrics)({ register: registry, prefix: 'etcdmirror_process_' });
  };
  setTimeout(withProcessMetrics, PROCESS_METRICS_AFTER_MS).unref();
  const m = {
    registry,
    /** The exposition text (/metrics): the process metrics are in it from the first scrape on. */
    scrape(): Promise<string> {
      withProcessMetrics();
      return registry.metrics();
    },
    // Reference names.
    replicatedEvents: new Counter({ name: 'etcdmirror_replicated_events_total', help: 'Source events handled (written or deliberately skipped)', registers: r }),
    writeLatency: new Histogram({
      name: 'etcdmirror_write_latency',
      help: 'Destination write latency, seconds (reference name)',
      labelNames: ['url', 'prefix'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: r,
    }).labels(labels),
    // Ours, beside it: an event's wait inside the mirror, and of it the mirror's own share, to tell them from the
    // destination's.
    eventWait: new Histogram({
      name: 'etcdmirror_event_wait_seconds',
      help: 'From the source answer carrying an event reaching the mirror to the destination write applying it being sent (queueing, planning, ordering); the write itself is etcdmirror_write_latency',
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: r,
    }),
    eventOverhead: new Histogram({
      name: 'etcdmirror_event_overhead_seconds',
      help: 'The mirror\'s own part of etcdmirror_event_wait_seconds: from the later of the event reaching the mirror and the writer being free (the write before it answered: in source order one is in flight at a time) to its write being sent',
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers: r,
    }),
    lag: new Gauge({ name: 'etcdmirror_lag', help: 'Source store index minus the applied replication index (reference name)', labelNames: ['url', 'prefix'] as const, registers: r }).labels(labels),
    loadTime: new Summary({ name: 'etcdmirror_load_time', help: 'Reload/reconcile duration, seconds (reference name)', registers: r }),
    // Ours.
    eventsApplied: new Counter({ name: 'etcdmirror_events_applied_total', help: 'Events written to the destination, by source action', labelNames: ['action'] as const, registers: r }),
    eventsSkipped: new Counter({ name: 'etcdmirror_events_skipped_total', help: 'Events not written, by reason (ignored regex, hidden key, outside prefix, unknown action)', labelNames: ['reason'] as const, registers: r }),
    sourceIndex: new Gauge({ name: 'etcdmirror_source_index', help: 'Latest source store index seen (X-Etcd-Index)', registers: r }),
    appliedIndex: new Gauge({ name: 'etcdmirror_applied_index', help: 'Replication index stored on the destination', registers: r }),
    lagEvents: new Gauge({ name: 'etcdmirror_lag_events', help: 'Source store index minus stored replication index', registers: r }),
    lagSeconds: new Gauge({ name: 'etcdmirror_lag_seconds', help: 'Age of the oldest source event received but not yet applied (0 when caught up)', registers: r }),
    queueEvents: new Gauge({ name: 'etcdmirror_write_queue_events', help: 'Events fetched from the source and not yet applied', registers: r }),
    writesInFlight: new Gauge({ name: 'etcdmirror_writes_in_flight', help: 'Destination writes in progress', registers: r }),
    state: new Gauge({ name: 'etcdmirror_state', help: 'Lifecycle state (1 = current)', labelNames: ['state'] as const, registers: r }),
    transitions: new Counter({ name: 'etcdmirror_state_transitions_total', help: 'Lifecycle transitions, by target state', labelNames: ['state'] as const, registers: r }),
    faults: new Counter({ name: 'etcdmirror_faults_total', help: 'Faults that interrupted replication, by error code', labelNames: ['code'] as const, registers: r }),
    healed: new Counter({ name: 'etcdmirror_healed_total', help: 'Destination keys found diverged and repaired', labelNames: ['reason'] as const, registers: r }),
    watchPolls: new Counter({ name: 'etcdmirror_watch_polls_total', help: 'Source long-polls, by outcome', labelNames: ['outcome'] as const, registers: r }),
    indexWrites: new Counter({ name: 'etcdmirror_index_writes_total', help: 'Replication index writes to the destination', registers: r }),
    reconcileWritten: new Counter({ name: 'etcdmirror_reconcile_keys_written_total', help: 'Keys written by reload/recovery reconciles', registers: r }),
    reconcileDeleted: new Counter({ name: 'etcdmirror_reconcile_keys_deleted_total', help: 'Keys deleted by reload/recovery reconciles', registers: r }),
    reconcileDuration: new Gauge({ name: 'etcdmirror_reconcile_duration_seconds', help: 'Duration of the last reconcile', registers: r }),
    massDeleteRefused: new Counter({ name: 'etcdmirror_mass_delete_refused_total', help: 'Reconciles refused by the mass-delete guard', registers: r }),
    outOfWindow: new Counter({ name: 'etcdmirror_out_of_window_total', help: 'Times the source history window was lost (error 401)', registers: r }),
    ttlRefreshes: new Counter({ name: 'etcdmirror_ttl_refreshes_total', help: 'Destination TTLs moved along with a source refresh (refreshes send no watch event)', registers: r }),
    ttlKeysTracked: new Gauge({ name: 'etcdmirror_ttl_keys_tracked', help: 'Source keys with a TTL whose destination copies are kept alive', registers: r }),
    windowHeadroom: new Gauge({ name: 'etcdmirror_window_headroom_events', help: "Source events left before the stored replication index falls out of etcd's 1000-event history window", registers: r }),
    lastApply: new Gauge({ name: 'etcdmirror_last_apply_timestamp_seconds', help: 'Unix time of the last successful destination apply or proven-quiet index advance', registers: r }),
    sinceLastApply: new Gauge({ name: 'etcdmirror_seconds_since_last_apply', help: 'Seconds since the last successful destination apply or proven-quiet index advance', registers: r }),
    orderedCeiling: new Gauge({ name: 'etcdmirror_ordered_ceiling_events_per_second', help: 'v2 destination: events/s strict source order carries at the current destination write latency (measured from the ordered writes)', registers: r }),
    sourceEventsRate: new Gauge({ name: 'etcdmirror_source_events_per_second', help: 'Mirrored source events received per second (v2 destination)', registers: r }),
    reorderingActive: new Gauge({ name: 'etcdmirror_reordering_active', help: 'Whether destination writes to unrelated keys may overlap now (1) or follow source order (0)', registers: r }),
    reorderedWrites: new Counter({ name: 'etcdmirror_reordered_writes_total', help: 'Destination writes started before an earlier source event was applied', registers: r }),
    reorderingEpisodes: new Counter({ name: 'etcdmirror_reordering_episodes_total', help: 'Times adaptive ordering let writes overlap because the window headroom was low', registers: r }),
    reorderingSeconds: new Counter({ name: 'etcdmirror_reordering_seconds_total', help: 'Time spent with overlapping (reordering) destination writes', registers: r }),
    writeRetries: new Counter({ name: 'etcdmirror_write_retries_total', help: 'Destination writes retried after a retryable failure', registers: r }),
    coveredSkips: new Counter({ name: 'etcdmirror_events_covered_total', help: 'Events not replayed because a heal or recovery already brought their subtree to a newer source snapshot', registers: r }),
    rangeDeletes: new Counter({ name: 'etcdmirror_range_deletes_total', help: 'Source revisions too large for one destination Txn, applied as one range delete (v3 destination)', registers: r }),
    splitRevisions: new Counter({ name: 'etcdmirror_split_revisions_total', help: 'Source revisions too large for one destination Txn, split over several (v3 destination: the replica shows part of a revision in between)', registers: r }),
    leasesTracked: new Gauge({ name: 'etcdmirror_leases_tracked', help: 'Source leases whose destination copies are kept alive (v3 destination)', registers: r }),
    haRole: new Gauge({ name: 'etcdmirror_ha_role', help: 'HA role of this instance (1 = current): active replicates, standby waits for the lock', labelNames: ['role'] as const, registers: r }),
    haTakeovers: new Counter({ name: 'etcdmirror_ha_takeovers_total', help: 'Times this instance took the HA lock and became active', registers: r }),
    requestCost: new Gauge({ name: 'etcdmirror_request_cost_seconds', help: 'What authentication adds to a cheap request on each side (an authenticated GET timed against /version), seconds', labelNames: ['side'] as const, registers: r }),
    authLimited: new Gauge({ name: 'etcdmirror_auth_limited', help: 'Whether password auth on this side is what holds the mirror back now (1: the lag grows while it applies at the password-check ceiling)', labelNames: ['side'] as const, registers: r }),
    sourceBudgetRequests: new Counter({ name: 'etcdmirror_source_budget_requests_total', help: 'Optional source requests under the request budget (quiet proofs, TTL re-reads), by purpose', labelNames: ['purpose'] as const, registers: r }),
    sourceBudgetExceeded: new Counter({ name: 'etcdmirror_source_budget_exceeded_total', help: 'Quiet proofs sent above the source request budget because the window needed them', registers: r }),
    auditRuns: new Counter({ name: 'etcdmirror_audit_runs_total', help: 'Consistency audits, by result: equal, different (keys differed and were repaired), aborted (no point could be compared; tried again next interval)', labelNames: ['result'] as const, registers: r }),
    auditDifferences: new Counter({ name: 'etcdmirror_audit_differences_total', help: 'Destination keys consistency audits found differing from the source at their point', registers: r }),
    auditLastEqual: new Gauge({ name: 'etcdmirror_audit_last_equal_timestamp_seconds', help: 'Unix time of the last audit that proved the replica equal to the source (0: none yet)', registers: r }),
    auditKeys: new Gauge({ name: 'etcdmirror_audit_keys', help: 'Source keys the last consistency audit compared', registers: r }),
    fenced: new Gauge({ name: 'etcdmirror_fenced', help: 'Whether a switchover fenced this direction (1): this instance writes nothing and stays idle until stopped', registers: r }),
    /** ms timestamp behind the two gauges above (0: nothing applied yet). */
    lastApplyAt: 0,
  };
  for (const s of STATES) m.state.labels({ state: s }).set(s === 'idle' ? 1 : 0);
  for (const a of [...WRITE_ACTIONS, ...REMOVAL_ACTIONS]) m.eventsApplied.labels({ action: a });
  for (const reason of ['ignored', 'hidden', 'outside', 'unknown', 'covered', 'already applied']) m.eventsSkipped.labels({ reason });
  for (const outcome of ['event', 'quiet', 'empty', 'error']) m.watchPolls.labels({ outcome });
  m.fenced.set(0);
  for (const side of ['source', 'destination']) m.authLimited.labels({ side }).set(0);
  for (const purpose of ['proof', 'ttl', 'audit']) m.sourceBudgetRequests.labels({ purpose });
  for (const result of ['equal', 'different', 'aborted']) m.auditRuns.labels({ result });
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;
