// Composition root of the daemon: config → clients → actors provided to the machine → HTTP → signals.
import { createActor, fromPromise, type SnapshotFrom } from 'xstate';
import { lifecycle, backoffMs } from '../../machines/index.js';
import type { CampaignOutput, LoadIndexInput, LoadIndexOutput, MirrorContext } from '../../machines/types.js';
import { HaController } from './ha.js';
import { V2Fence, V2Lock } from '../replication/ha-lock.js';
import type { Config } from '../cli/config.js';
import { EtcdClient, type WriteTracker } from '../etcd/v2/client.js';
import { BadCheckpointError, FencedError, KeyNotFoundError } from '../etcd/errors.js';
import { HISTORY_WINDOW_EVENTS, RateMeter, readiness, windowHeadroom } from './health.js';
import { bucketsOf, History, HISTORY_SAMPLE_MS, IntervalQuantile } from './history.js';
import { startHttp, type StateView } from './http.js';
import { KeyMap } from '../replication/keys.js';
import { createLogger, type Logger } from './log.js';
import { createMetrics, STATES, type Metrics } from './metrics.js';
import { createV3Backend } from '../replication/backend.js';
import { faultFrom, RunnerHost } from '../replication/v2/runner.js';
import { OwnWrites } from '../replication/own-writes.js';
import { describeChange, OrderingPolicy, STRICT_ABOVE_HEADROOM } from '../replication/v2/ordering.js';
import { BodyGaps } from '../replication/v2/poller.js';
import { VERSION } from './version.js';
import { RequestCost, v2Probe, v3Probe } from './request-cost.js';
import { SourceBudget } from '../replication/v2/source-budget.js';
import { joinKey } from '../etcd/v2/paths.js';

export const MISSING_INDEX_MESSAGE = 'The replication key could not be found. Restart with --reload!';
/** Transitions kept for /state and the /ui timeline. */
const TIMELINE_LENGTH = 50;
/** Rates (events/s, reconcile keys/s) are averaged over this long. */
const RATE_WINDOW_MS = 5_000;
const PROGRESS_LOG_MS = 3_000;

type Snapshot = SnapshotFrom<typeof lifecycle>;

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

export interface MirrorHandle {
  /** Resolves with the exit code once the machine reached stopped (0) or failed (1). */
  done: Promise<number>;
  stop(reason?: string): void;
  state(): StateView;
  httpUrl: string;
}

export async function startMirror(config: Config, opts: { log?: Logger; signals?: boolean } = {}): Promise<MirrorHandle> {
  const log = opts.log ?? createLogger({ debug: config.debug });
  const map = new KeyMap(config.srcPrefix, config.dstPrefix, config.strip, config.ignoreRegex);
  const metrics = createMetrics({ url: config.dst.origin, prefix: config.dstPrefix });
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
  let reorderingMsCounted = 0;
  const costs = requestCosts(config, map, log, metrics);
  const budget =
    config.srcApi === 'v2'
      ? new SourceBudget(config.srcRequestBudget, () => costs.source.expensive, {
          counted: (purpose) => metrics.sourceBudgetRequests.labels({ purpose }).inc(),
          exceeded: (storePerSecond, starts) => {
            metrics.sourceBudgetExceeded.inc();
            if (starts) log.warn({ storeIndexesPerSecond: storePerSecond, budget: config.srcRequestBudget }, budget!.exceededMessage(storePerSecond));
          },
        })
      : undefined;
  const backend = config.dstApi === 'v3' ? createV3Backend(config, log, metrics, budget) : v2Backend(config, map, log, metrics, ordering, budget);
  const host = backend.host;

  const loadIndex = fromPromise<LoadIndexOutput, LoadIndexInput>(async () => {
    try {
      return { appliedIndex: await backend.loadIndex() };
    } catch (err) {
      throw err instanceof Error ? faultFrom(err) : err;
    }
  });

  const ha = backend.ha;
  const machine = lifecycle.provide({
    actors: {
      loadIndex,
      runner: host.actor(),
      drain: fromPromise(async () => {
        await host.drain(4_000);
        // Only after the last write has landed (or been abandoned): then a standby may take over at once.
        await ha?.release();
      }),
      campaign: fromPromise<CampaignOutput, void>(async () => {
        if (!ha) throw new Error('--ha is off');
        return ha.campaign();
      }),
      lockReleased: fromPromise<void, void>(async ({ signal }) => {
        if (!ha) throw new Error('--ha is off');
        await ha.released(signal);
      }),
    },
    delays: {
      // Jitter keeps a fleet of mirrors from retrying in lockstep after a shared outage.
      backoff: ({ context }) => Math.round(backoffMs(context.attempt) * (0.75 + Math.random() * 0.5)),
      // A standby tries the lock again twice per TTL even when it saw no release.
      takeover: (config.haTtl * 1000) / 2,
    },
  });
  const actor = createActor(machine, { input: { reload: config.reload, ha: config.ha } });
  ha?.connect((e) => actor.send(e));

  const view = (): StateView => {
    const snap = actor.getSnapshot();
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
      eventsPerSecond: Math.round(appliedRate.perSecond() * 10) / 10,
      queue,
      inFlight,
      reconcile: runner?.reconcile
        ? { ...runner.reconcile, active: phase === 'reconcile', keysPerSecond: Math.round(reconcileRate.perSecond()) }
        : null,
      runner: phase,
      // The runner's two actors: the poller long-polls the source (from before the snapshot, in reload and recovery),
      // the writer applies what it fetched once the destination is reconciled.
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
      },
      confirmedIndex: runner?.confirmedIndex ?? null,
      lastFault: ctx.lastFault,
      timeline: [...timeline],
      // The source's wall clock minus ours, from its Date headers: TTLs are computed on the source's clock.
      source: { url: config.src.origin, api: config.srcApi, prefix: config.srcPrefix, clockOffsetMs: backend.clockOffsetMs() === null ? null : Math.round(backend.clockOffsetMs()!) },
      destination: { url: config.dst.origin, api: config.dstApi, prefix: config.dstPrefix, indexKey: map.indexKey },
      // v3 counts revisions where v2 counts indexes; the numbers above are one or the other.
      position: config.srcApi === 'v3' ? 'revision' : 'index',
      // --ha: this instance's role and who holds the lock (null without --ha).
      role: ha ? (state === 'standby' ? 'standby' : ha.role) : null,
      ha: ha ? ha.view() : null,
      // What authentication costs each side per request, and whether it is what holds the mirror back.
      auth: { source: costs.source.view(), destination: costs.destination.view() },
      sourceBudget: budget?.view() ?? null,
      version: VERSION,
      // Open handles by kind (sockets, timers, ...): flat over time in a healthy process.
      resources: countResources(),
    };
  };

  const appliedRate = new RateMeter(RATE_WINDOW_MS);
  const reconcileRate = new RateMeter(RATE_WINDOW_MS);
  let progressLoggedAt = Date.now();
  const gauges = setInterval(() => {
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
    void metrics.eventsApplied.get().then((m) => appliedRate.add(now, m.values.reduce((sum, x) => sum + x.value, 0)));
    // Long reconciles report progress in the log too, for operators following the terminal.
    const runner = host.status();
    if (runner?.phase === 'reconcile' && runner.reconcile) {
      const { done, total } = runner.reconcile;
      reconcileRate.add(now, done);
      if (now - progressLoggedAt >= PROGRESS_LOG_MS && done < total) {
        log.info({ done, total, rate: Math.round(reconcileRate.perSecond()) }, 'reconcile progress');
        progressLoggedAt = now;
      }
    } else {
      reconcileRate.reset();
      progressLoggedAt = now;
    }
  }, 500);
  gauges.unref();

  // GET /history and the /ui charts: one sample a second; the write latency is the p99 of the destination
  // writes that finished in that second, from the histogram's buckets.
  const history = new History();
  history.enter('idle', Date.now());
  const writeP99 = new IntervalQuantile(0.99);
  const sampler = setInterval(() => {
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
  sampler.unref();

  let previous = 'idle';
  let resolveDone!: (code: number) => void;
  const done = new Promise<number>((r) => (resolveDone = r));
  const timeline: { at: string; from: string; to: string; reason: string }[] = [];
  const transitionListeners = new Set<() => void>();
  // One log line per state change, not one per retry: while the same fault keeps failing the retries, the
  // stalled ⇄ running round trips are logged at debug level, and the recovery once, when progress resumes.
  let outage: { code: string; retries: number } | null = null;
  actor.subscribe({
    next: (snap) => {
      const name = stateName(snap);
      if (outage && snap.context.attempt === 0 && name === 'tailing') {
        log.info({ state: name, retries: outage.retries, appliedIndex: snap.context.appliedIndex }, `resumed after ${outage.retries} retries`);
        outage = null;
      }
      if (name === previous) return;
      if (name === 'standby') ha?.standDown(snap.context.reason);
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
      else if (name === 'stalled' || name === 'outOfWindow' || name === 'failed') log.error({ ...entry, fault }, `state: ${name}`);
      else log.info(entry, `state: ${name}`);
      for (const s of STATES) metrics.state.labels({ state: s }).set(s === name ? 1 : 0);
      metrics.transitions.labels({ state: name }).inc();
      previous = name;
      for (const listener of transitionListeners) listener();
      if (snap.status === 'done') resolveDone(name === 'stopped' ? 0 : 1);
    },
    error: (err) => {
      log.fatal({ err }, 'lifecycle machine crashed');
      resolveDone(1);
    },
  });

  let server;
  try {
    server = await startHttp({
      port: config.port,
      host: config.listenAddress,
      metrics,
      state: view,
      history: (after) => history.toJSON(Date.now(), after),
      onTransition: (listener) => {
        transitionListeners.add(listener);
        return () => transitionListeners.delete(listener);
      },
    });
  } catch (err) {
    // A port in use, or a build without the page's script: both said by startHttp.
    await Promise.all([backend.close(), costs.close()]);
    throw err;
  }
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const httpUrl = `http://${config.listenAddress === '0.0.0.0' ? '127.0.0.1' : config.listenAddress}:${port}`;
  log.info(
    { version: VERSION, source: config.src.origin, srcApi: config.srcApi, destination: config.dst.origin, dstApi: config.dstApi, srcPrefix: config.srcPrefix, dstPrefix: config.dstPrefix, strip: config.strip, indexKey: map.indexKey, http: httpUrl },
    'etcd-mirror starting',
  );

  const stop = (reason = 'stop requested') => actor.send({ type: 'operator.stop', reason });
  if (opts.signals) {
    let signalled = false;
    for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
      process.on(sig, () => {
        if (signalled) process.exit(1); // a second signal: the operator wants out now
        signalled = true;
        stop(`${sig} received`);
      });
    }
  }

  actor.start();
  actor.send({ type: 'operator.start' });
  costs.start();

  const finished = done.then(async (code) => {
    clearInterval(gauges);
    clearInterval(sampler);
    const final = actor.getSnapshot();
    if (stateName(final) === 'failed' && final.context.reason === MISSING_INDEX_MESSAGE) log.error(MISSING_INDEX_MESSAGE);
    await host.drain(1_000);
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
    await Promise.all([backend.close(), costs.close()]);
    log.info({ code, appliedIndex: host.lastPersisted }, 'etcd-mirror stopped');
    return code;
  });
  return { done: finished, stop, state: view, httpUrl };
}

interface Backend {
  host: Pick<RunnerHost, 'actor' | 'drain' | 'status' | 'lastPersisted'>;
  /** --ha: the lock on the destination (v3 destination only, so far). */
  ha?: HaController;
  /** The stored replication index/revision, null when there is none. */
  loadIndex(): Promise<number | null>;
  clockOffsetMs(): number | null;
  close(): Promise<void>;
}

/** A v2 destination: the v2 runner (src/runner.ts) with its ordered writer, healer and TTL keeper. */
/** One cost probe per side, on the side's API: the source's probe reads a missing key under its prefix. */
function requestCosts(config: Config, map: KeyMap, log: Logger, metrics: Metrics) {
  const probeKey = joinKey(config.srcPrefix, '/__etcd_mirror_cost_probe');
  const srcProbe = config.srcApi === 'v3' ? v3Probe(config.src, Buffer.from(config.srcPrefix)) : v2Probe(config.src, probeKey);
  const dstProbe = config.dstApi === 'v3' ? v3Probe(config.dst, Buffer.from(map.indexKey)) : v2Probe(config.dst, map.indexKey);
  const source = new RequestCost('source', srcProbe, log, metrics, config.srcApi === 'v2' ? config.srcRequestBudget : undefined);
  const destination = new RequestCost('destination', dstProbe, log, metrics);
  return {
    source,
    destination,
    start() {
      source.start();
      destination.start();
    },
    async close() {
      source.stop();
      destination.stop();
      await Promise.all([srcProbe.close(), dstProbe.close()]);
    },
  };
}

function v2Backend(config: Config, map: KeyMap, log: Logger, metrics: Metrics, ordering: OrderingPolicy, budget: SourceBudget | undefined): Backend {
  // Catch-up keeps up to 64 long-polls in flight, plus the stream, probes, guards and TTL reads.
  const src = new EtcdClient(config.src, { connections: 96 });
  const own = new OwnWrites();
  let ha: HaController | undefined;
  let fence: V2Fence | undefined;
  // --ha: every destination write — replayed events, heals, TTL refreshes, the index — passes the fence check as it
  // is sent (the client calls begin() for each), so a deposed instance's healer or TTL keeper cannot write either.
  const writes: WriteTracker = {
    begin: () => {
      if (fence && !fence.mayWrite()) throw new FencedError('not writing: the HA lock is not renewed');
      return own.begin();
    },
    end: (seq, index) => own.end(seq, index),
    // Checked again as the write goes onto its connection: one queued behind others (or in a process paused since
    // begin()) must not land after another instance took over.
    dispatching: () => {
      if (fence && !fence.mayWrite()) throw new FencedError('not writing: the HA lock is not renewed');
    },
  };
  // A reconcile writes with 4 × --write-concurrency in flight; a few more for the index, healer and TTL keeper.
  const dst = new EtcdClient(config.dst, { connections: config.writeConcurrency * 4 + 4, writes });
  // The lock has its own connections: its renewals never queue behind data writes, and are not fenced themselves.
  const lockClient = config.ha ? new EtcdClient(config.dst, { connections: 2 }) : null;
  if (lockClient) {
    ha = new HaController(new V2Lock(lockClient, map.lockKey, config.instanceId, config.haTtl), config.haTtl, log, metrics);
    const controller = ha;
    fence = new V2Fence(() => controller.mayWrite());
  }
  return {
    host: new RunnerHost({ config, src, dst, map, log, metrics, own, ordering, gaps: new BodyGaps(), fence, budget }),
    ha,
    async loadIndex() {
      try {
        const node = (await dst.get(map.indexKey, { quorum: true })).body.node;
        // An instance that just became active writes its first checkpoint as a swap on what it read here.
        if (fence) fence.prevIndex = node.modifiedIndex;
        const raw = node.value ?? '';
        if (!/^\d+$/.test(raw.trim())) {
          throw new BadCheckpointError(`the replication index at ${map.indexKey} is not a decimal number`);
        }
        return Number(raw.trim());
      } catch (err) {
        if (err instanceof KeyNotFoundError) {
          if (fence) fence.prevIndex = null;
          return null;
        }
        throw err;
      }
    },
    clockOffsetMs: () => src.clockOffsetMs(),
    close: async () => {
      await Promise.all([src.close(), dst.close(), lockClient?.close()]);
    },
  };
}
