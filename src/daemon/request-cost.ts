// What authentication costs each side per request, measured, and said out loud when it is what holds the mirror
// back. etcd's v2 API checks a password with bcrypt on every request that carries one (~50 ms of server CPU on
// our machines: ~20 requests/s per connection), so a mirror writing with a password is capped near the reference
// tool's rate whatever its pipeline does. A client certificate whose CN is the user costs nothing of the kind,
// nor does a v3 token once it is held.
import type { AuthKind, Cluster, CostSample } from '../etcd/endpoint.js';
import { joinKey } from '../etcd/v2/paths.js';
import type { Config } from '../cli/config.js';
import { replicationIndexKey } from '../replication/keys.js';
import type { Logger } from './log.js';
import type { RequestCostJson } from '../ui/wire.js';
import type { Metrics } from './metrics.js';

export type Side = 'source' | 'destination';

/** A request that costs more than this is expensive: the source's request budget applies. */
export const EXPENSIVE_REQUEST_MS = 10;
/** Samples per measurement (the median counts) and how often it is measured again. */
const SAMPLES = 3;
const REFRESH_MS = 60_000;
/** Lag growth: from at least this many events (over --lag-growth-ms), ending below the second number. */
const GROWING_FROM_EVENTS = 100;
const EPISODE_ENDS_BELOW_EVENTS = 20;

export interface CostProbe {
  readonly auth: AuthKind;
  readonly user: string | undefined;
  sample(): Promise<CostSample>;
  /** v3: how long the last password → token exchange took. */
  tokenExchangeMs?(): number | null;
}


/** The median of SAMPLES samples taken one after another (ms of server time per request), or why there is none. */
type Measurement = { costMs: number } | { err: unknown };

async function measure(probe: CostProbe): Promise<Measurement> {
  const costs: number[] = [];
  try {
    for (let i = 0; i < SAMPLES; i++) {
      const s = await probe.sample();
      costs.push(Math.max(0, s.authenticatedMs - s.baselineMs));
    }
  } catch (err) {
    return { err };
  }
  costs.sort((a, b) => a - b);
  return { costMs: Math.round(costs[Math.floor(costs.length / 2)]! * 10) / 10 };
}

export class RequestCost {
  #costMs: number | null = null;
  #measuredAt: string | null = null;
  #timer: NodeJS.Timeout | undefined;
  #warned = false;
  #limiting = false;
  readonly #lag: { at: number; events: number }[] = [];

  constructor(
    readonly side: Side,
    private readonly probe: CostProbe,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    /** Source side: the request budget, for the message. */
    private readonly budgetPerSecond?: number,
    /** The lag is compared over this long. */
    private readonly growthWindowMs = 10_000,
    /** A first measurement already under way (openCostProbes). */
    private readonly first?: Promise<Measurement>,
  ) {}

  /** Measures now (or takes the first measurement under way) and then every minute; the first result decides the
   * start-up warning. */
  start(): void {
    const run = (m: Promise<Measurement>) => void this.#record(m).finally(() => {
      this.#timer = setTimeout(() => run(measure(this.probe)), REFRESH_MS);
      this.#timer.unref();
    });
    run(this.first ?? measure(this.probe));
  }

  stop(): void {
    clearTimeout(this.#timer);
  }

  /** A password is assumed expensive until measured: the budget holds from the first request on. */
  get expensive(): boolean {
    return this.#costMs === null ? this.probe.auth === 'password' : this.#costMs > EXPENSIVE_REQUEST_MS;
  }

  get #passwordBound(): boolean {
    return this.probe.auth === 'password' && this.expensive;
  }

  async #record(measurement: Promise<Measurement>): Promise<void> {
    const m = await measurement;
    if ('err' in m) {
      // The replication path reports unreachable or refused clusters; this is only a measurement.
      this.log.debug({ side: this.side, err: m.err }, 'request cost not measured');
      return;
    }
    this.#costMs = m.costMs;
    this.#measuredAt = new Date().toISOString();
    this.metrics.requestCost.labels({ side: this.side }).set(this.#costMs / 1000);
    if (this.#passwordBound && !this.#warned) {
      this.#warned = true;
      this.log.warn({ side: this.side, costMs: this.#costMs, user: this.probe.user }, this.#startMessage());
    }
  }

  /**
   * Called every half second with the lag and the apply rate: a lag that keeps growing while tailing, with a
   * password on this side, is reported once per episode (until the lag is small again).
   */
  observeLag(now: number, lagEvents: number | null, appliedPerSecond: number, tailing: boolean): void {
    const events = tailing && lagEvents !== null ? lagEvents : 0;
    this.#lag.push({ at: now, events });
    while (this.#lag.length > 1 && now - this.#lag[1]!.at >= this.growthWindowMs) this.#lag.shift();
    if (this.#limiting) {
      if (events < EPISODE_ENDS_BELOW_EVENTS) {
        this.#setLimiting(false);
        this.log.info({ side: this.side, lagEvents: events }, `${this.side} caught up: the lag is back under ${EPISODE_ENDS_BELOW_EVENTS} events`);
      }
      return;
    }
    const then = this.#lag[0]!;
    const growing = now - then.at >= this.growthWindowMs * 0.9 && events >= GROWING_FROM_EVENTS && events > then.events;
    if (!growing || !this.#passwordBound) return;
    this.#setLimiting(true);
    this.log.warn(
      { side: this.side, lagEvents: events, eventsPerSecond: appliedPerSecond, costMs: this.#costMs },
      `lag growing (${events} events, ${Math.round(appliedPerSecond)} events/s applied): ${this.#startMessage()}`,
    );
  }

  #setLimiting(on: boolean): void {
    this.#limiting = on;
    this.metrics.authLimited.labels({ side: this.side }).set(on ? 1 : 0);
  }

  #ceiling(): number | null {
    return this.#costMs !== null && this.#costMs > EXPENSIVE_REQUEST_MS ? Math.round(1000 / this.#costMs) : null;
  }

  #startMessage(): string {
    const cost = this.#costMs === null ? 'every request' : `~${Math.round(this.#costMs)} ms of server time per request`;
    const ceiling = this.#ceiling();
    const lift = `a client certificate with CN=${this.probe.user ?? '<user>'} lifts it`;
    if (this.side === 'destination') {
      return `destination uses password auth: ${cost} (a bcrypt check), ceiling ~${ceiling ?? '?'} writes/s one at a time; ${lift}`;
    }
    return (
      `source uses password auth: ${cost} (a bcrypt check); quiet proofs and TTL re-reads are held to ${this.budgetPerSecond ?? '?'} requests/s ` +
      `and a backlog is read at ~${ceiling ?? '?'} events/s per connection; ${lift}`
    );
  }

  view(): RequestCostJson {
    return {
      auth: this.probe.auth,
      costMs: this.#costMs,
      ceilingPerSecond: this.#ceiling(),
      tokenExchangeMs: this.probe.tokenExchangeMs ? round(this.probe.tokenExchangeMs()) : null,
      expensive: this.expensive,
      limiting: this.#limiting,
      measuredAt: this.#measuredAt,
      message: this.#passwordBound ? (this.#limiting ? `lag growing: ${this.#startMessage()}` : this.#startMessage()) : null,
    };
  }
}

const round = (ms: number | null): number | null => (ms === null ? null : Math.round(ms * 10) / 10);

/** A probe on its own small client, so that measuring never queues behind (or ahead of) replication. */
type ClosableProbe = CostProbe & { close(): Promise<void> };

// Each side's client is loaded only for its API (gRPC only when a side is v3).
async function v2Probe(cluster: Cluster, probeKey: string): Promise<ClosableProbe> {
  const { EtcdClient } = await import('../etcd/v2/client.js');
  const client = new EtcdClient(cluster, { connections: 1, requestTimeoutMs: 5_000 });
  return { auth: client.auth, user: client.user, sample: () => client.costSample(probeKey), close: () => client.close() };
}

async function v3Probe(cluster: Cluster, probeKey: Buffer): Promise<ClosableProbe> {
  const { V3Client } = await import('../etcd/v3/client.js');
  const client = new V3Client(cluster, { requestTimeoutMs: 5_000 });
  return {
    auth: client.auth,
    user: client.user,
    sample: () => client.costSample(probeKey),
    tokenExchangeMs: () => client.tokenExchangeMs,
    close: () => client.close(),
  };
}

export interface CostProbes {
  source: ClosableProbe;
  destination: ClosableProbe;
  first: { source: Promise<Measurement>; destination: Promise<Measurement> };
}

/**
 * One cost probe per side, on the side's API (the source's reads a missing key under its prefix, the destination's
 * the replication index), each taking its first measurement at once: the CLI opens them before it loads the rest of
 * the daemon, so that each side is first asked while that loads (start-up time, bench/RESULTS.md).
 */
export async function openCostProbes(config: Config): Promise<CostProbes> {
  const indexKey = replicationIndexKey(config.dstPrefix);
  const [source, destination] = await Promise.all([
    config.srcApi === 'v3' ? v3Probe(config.src, Buffer.from(config.srcPrefix)) : v2Probe(config.src, joinKey(config.srcPrefix, '/__etcd_mirror_cost_probe')),
    config.dstApi === 'v3' ? v3Probe(config.dst, Buffer.from(indexKey)) : v2Probe(config.dst, indexKey),
  ]);
  return { source, destination, first: { source: measure(source), destination: measure(destination) } };
}

export type RequestCosts = ReturnType<typeof requestCosts>;

export function requestCosts(probes: CostProbes, config: Config, log: Logger, metrics: Metrics) {
  const source = new RequestCost('source', probes.source, log, metrics, config.srcApi === 'v2' ? config.srcRequestBudget : undefined, config.lagGrowthMs, probes.first.source);
  const destination = new RequestCost('destination', probes.destination, log, metrics, undefined, config.lagGrowthMs, probes.first.destination);
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
      await Promise.all([probes.source.close(), probes.destination.close()]);
    },
  };
}
