// Composition root of the daemon: config → backend (clients, run host) → actors provided to the machine → HTTP →
// signals. What it wires lives elsewhere: the backends in src/replication, /state in state-view.ts, the log lines
// and metrics around the machine in observers.ts.
import { createActor, fromPromise } from 'xstate';
import { lifecycle, backoffMs } from '../../machines/index.js';
import type { CampaignOutput, LoadIndexInput, LoadIndexOutput } from '../../machines/types.js';
import type { Config } from '../cli/config.js';
import { faultFrom, SwitchoverFencedError } from '../etcd/errors.js';
import type { Backend, BackendDeps } from '../replication/backend.js';
import { KeyMap } from '../replication/keys.js';
import { HaController } from './ha.js';
import { startAudit } from './audit.js';
import { RateMeter } from './health.js';
import { startHttp, type StateView } from './http.js';
import { createLogger, type Logger } from './log.js';
import { createMetrics } from './metrics.js';
import { observeTransitions, orderedCeiling, orderingPolicy, sourceBudget, startGauges, startHistory } from './observers.js';
import { openCostProbes, requestCosts, type CostProbes } from './request-cost.js';
import { stateName, stateView } from './state-view.js';
import { VERSION } from './version.js';

export const MISSING_INDEX_MESSAGE = 'The replication key could not be found. Restart with --reload!';
/** The fence check before starting waits no longer for a destination that does not answer (the poll goes on). */
const FENCE_CHECK_LIMIT_MS = 3_000;
/** Rates (events/s, reconcile keys/s) are averaged over this long. */
const RATE_WINDOW_MS = 5_000;

/** Each destination kind's modules are loaded only when it is the one configured. */
async function createBackend(deps: BackendDeps<HaController>): Promise<Backend<HaController>> {
  if (deps.config.dstApi === 'v3') return (await import('../replication/v3-backend.js')).createV3Backend(deps);
  return (await import('../replication/v2-backend.js')).createV2Backend(deps);
}

export interface MirrorHandle {
  /** Resolves with the exit code once the machine reached stopped (0) or failed (1). */
  done: Promise<number>;
  stop(reason?: string): void;
  state(): StateView;
  httpUrl: string;
}

/** `probes`: the cost probes, when the caller opened them already (the CLI does, before loading this module). */
export async function startMirror(config: Config, opts: { log?: Logger; signals?: boolean; probes?: CostProbes } = {}): Promise<MirrorHandle> {
  const log = opts.log ?? createLogger({ debug: config.debug });
  const { indexKey } = new KeyMap(config.srcPrefix, config.dstPrefix, config.strip, config.ignoreRegex);
  const metrics = createMetrics({ url: config.dst.origin, prefix: config.dstPrefix });
  const ordering = orderingPolicy(config, log, metrics);
  const costs = requestCosts(opts.probes ?? (await openCostProbes(config)), config, log, metrics);
  const budget = sourceBudget(config, costs, log, metrics);
  const backend = await createBackend({
    config,
    log,
    metrics,
    ordering,
    budget,
    haController: (lock) => new HaController(lock, config.haTtl, log, metrics),
  });
  const { host, ha } = backend;
  // A switchover fenced this direction: refuse to start (awaited before the machine starts; asked now, so that the
  // answer comes back while the rest is set up). An unreachable or silent destination is no answer: the poll below
  // (and, on v3, the compare in every Txn) stands the mirror down once it answers.
  const fenceCheck = Promise.race([
    backend.fence.check().catch(() => null),
    new Promise<null>((r) => setTimeout(() => r(null), FENCE_CHECK_LIMIT_MS).unref()),
  ]);
  // The stored index is read now too, for the first start (with --ha only once the lock is held: the active
  // instance moves it until then, and the read remembers what the first swap compares against); a retry reads again.
  let firstIndex = config.ha ? undefined : backend.loadIndex();
  firstIndex?.catch(() => {}); // a failure surfaces through the machine's first loadIndex

  const loadIndex = fromPromise<LoadIndexOutput, LoadIndexInput>(async () => {
    const read = firstIndex ?? backend.loadIndex();
    firstIndex = undefined;
    try {
      return { appliedIndex: await read };
    } catch (err) {
      throw err instanceof Error ? faultFrom(err) : err;
    }
  });
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

  let resolveDone!: (code: number) => void;
  const done = new Promise<number>((r) => (resolveDone = r));
  const rates = { applied: new RateMeter(RATE_WINDOW_MS), reconcile: new RateMeter(RATE_WINDOW_MS) };
  let view: () => StateView = () => {
    throw new Error('state view read before it was built');
  };
  const { history, stop: stopHistory } = startHistory(() => view(), metrics);
  const transitions = observeTransitions(actor, { log, metrics, backend, history, done: resolveDone });
  const audit = startAudit(config, backend, log, metrics, () => stateName(actor.getSnapshot()) === 'tailing');
  const ceiling = orderedCeiling(log);
  view = stateView({ config, indexKey, snapshot: () => actor.getSnapshot(), backend, ordering, ceiling, costs, budget, rates, timeline: transitions.timeline, audit });
  const stopGauges = startGauges({ view, metrics, log, host, ordering, costs, rates, ceiling });

  let server;
  try {
    server = await startHttp({
      port: config.port,
      host: config.listenAddress,
      metrics,
      state: view,
      history: (after) => history.toJSON(Date.now(), after),
      onTransition: transitions.onTransition,
    });
  } catch (err) {
    // A port in use, or a build without the page's script: both said by startHttp.
    stopGauges();
    stopHistory();
    audit?.stop();
    await Promise.all([backend.close(), costs.close()]);
    throw err;
  }
  const fenced = await fenceCheck;
  if (fenced !== null) {
    stopGauges();
    stopHistory();
    audit?.stop();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
    await Promise.all([backend.close(), costs.close()]);
    throw new SwitchoverFencedError(`refusing to start: ${fenced}`);
  }
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const httpUrl = `http://${config.listenAddress === '0.0.0.0' ? '127.0.0.1' : config.listenAddress}:${port}`;
  log.info(
    { version: VERSION, source: config.src.origin, srcApi: config.srcApi, destination: config.dst.origin, dstApi: config.dstApi, srcPrefix: config.srcPrefix, dstPrefix: config.dstPrefix, strip: config.strip, indexKey, http: httpUrl },
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
  backend.fence.start((reason) => actor.send({ type: 'switchover.fenced', reason }));
  costs.start();

  const finished = done.then(async (code) => {
    backend.fence.stop();
    stopGauges();
    stopHistory();
    audit?.stop();
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
