// The continuous consistency audit (issue 20): the destination compared with the source at one source point, for
// every engine. A point is read in pages on both sides and reduced to a digest per key; keys that differ are
// listed (bounded), counted, and handed to the engine's own heal path, behind the same mass-delete guard as every
// repair. Per kind, only how the two sides are read at one point differs (audit-readers.ts):
//   v3 → v3   the source pinned at the revision R the destination's checkpoint says, the destination pinned at a
//             revision holding that checkpoint: both exact, no tolerance;
//   v2 source the source tree at its store index S, the destination once the mirror applied past S; keys that
//             source events after S touched are in flight and judged by those events, not reported.
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { AuditAbortedError } from '../etcd/errors.js';
import { CompactedError } from '../etcd/v3/errors.js';
import { judgeSnapshot, type GuardOptions } from './guard.js';
import type { Log } from './ports.js';

/** One key as the audit compares it, in the destination's key space. */
export interface AuditEntry {
  /** Destination key: the v2 path, or a v3 key as latin1 (keyspace.ts keyId). */
  id: string;
  /** What is compared: type, TTL presence and a digest of the value (exact TTLs are not: copies get a margin). */
  digest: string;
}

/** A side read at one point, a page at a time. */
export type Pages = AsyncIterable<AuditEntry[]>;

export function entryDigest(value: Buffer | string | null, ttl: boolean): string {
  // null: a v2 directory (no value, and never equal to a file).
  const body = value === null ? 'dir' : createHash('sha1').update(value).digest('base64');
  return `${ttl ? 't' : '-'}${body}`;
}

export type DifferenceKind = 'missing' | 'extra' | 'value' | 'ttl' | 'type';
export interface Difference {
  key: string;
  kind: DifferenceKind;
}

export interface Comparison {
  sourceKeys: number;
  destinationKeys: number;
  differing: number;
  /** The first `listLimit` differences. */
  listed: Difference[];
  /** Differing keys to repair (ids), at most `repairLimit`. */
  repair: string[];
  /** Keys that differ but changed on the source after the point: in flight, not differences. */
  inFlight: number;
}

function kindOf(want: string, have: string): DifferenceKind {
  const wantDir = want.endsWith('dir');
  if (wantDir !== have.endsWith('dir')) return 'type';
  return want.slice(1) !== have.slice(1) ? 'value' : 'ttl';
}

/**
 * Compares two sides read at one point. Memory: a digest per source key plus the page being read. `changed`
 * says whether a key changed on the source after the point (v2 source).
 */
export async function compareSides(
  source: Pages,
  destination: () => Pages,
  opts: {
    changed?: (id: string) => boolean;
    /** Of keys missing on the destination, those the source changed since the point (only expiring ones are read). */
    changedSince?: (ids: string[]) => Promise<Set<string>>;
    name: (id: string) => string;
    listLimit: number;
    repairLimit: number;
  },
): Promise<Comparison> {
  const want = new Map<string, string>();
  for await (const page of source) for (const e of page) want.set(e.id, e.digest);
  const out: Comparison = { sourceKeys: want.size, destinationKeys: 0, differing: 0, listed: [], repair: [], inFlight: 0 };
  // Judged as each page is read: a change after the point that reached the destination was noted before it was written.
  const note = (id: string, kind: DifferenceKind) => {
    if (opts.changed?.(id)) {
      out.inFlight++;
      return;
    }
    out.differing++;
    if (out.listed.length < opts.listLimit) out.listed.push({ key: opts.name(id), kind });
    if (out.repair.length < opts.repairLimit) out.repair.push(id);
  };
  for await (const page of destination()) {
    for (const e of page) {
      out.destinationKeys++;
      const w = want.get(e.id);
      if (w === undefined) note(e.id, 'extra');
      else {
        want.delete(e.id);
        if (w !== e.digest) note(e.id, kindOf(w, e.digest));
      }
    }
  }
  // A copy on a TTL or lease may run out by itself before the mirror applies the source's own removal (the copy
  // outlives the source key by a margin; a mirror that was down or behind applies it later): in flight when the
  // source has changed the key since the point. Checked one key at a time, so only up to a bound.
  const expiring: string[] = [];
  for (const id of want.keys()) {
    if (opts.changedSince && !opts.changed?.(id) && expiring.length < EXPIRY_CHECK_LIMIT) expiring.push(id);
    else note(id, 'missing');
  }
  if (expiring.length > 0) {
    const since = await opts.changedSince!(expiring);
    for (const id of expiring) {
      if (since.has(id)) out.inFlight++;
      else note(id, 'missing');
    }
  }
  return out;
}

/** Missing expiring keys checked against the source's current state, at most (one request each). */
const EXPIRY_CHECK_LIMIT = 1_000;

/** Records, while an audit runs, which destination keys source events touched and at which source index. */
export class ChangeTracker {
  readonly #keys = new Map<string, number>();
  readonly #subtrees = new Map<string, number>();
  overflow = false;
  /** A new run started meanwhile: it may have rewritten the destination from a snapshot (a resync), unnoted. */
  interrupted = false;

  constructor(private readonly limit: number) {}

  /** `parents`: the event may also have created the directories above `id` (a v2 destination). */
  note(id: string, index: number, subtree: boolean, parents = false): void {
    const into = subtree ? this.#subtrees : this.#keys;
    if (into.size >= this.limit || (parents && this.#keys.size >= this.limit)) {
      this.overflow = true;
      return;
    }
    into.set(id, Math.max(index, into.get(id) ?? 0));
    for (let at = id.lastIndexOf('/'); parents && at > 0; at = id.lastIndexOf('/', at - 1)) {
      const dir = id.slice(0, at);
      this.#keys.set(dir, Math.max(index, this.#keys.get(dir) ?? 0));
    }
  }

  /** Whether an event after `at` touched `id` (itself, or a subtree holding it). */
  changedAfter(id: string, at: number): boolean {
    if ((this.#keys.get(id) ?? 0) > at) return true;
    for (const [root, index] of this.#subtrees) if (index > at && (id === root || root === '/' || id.startsWith(root + '/'))) return true;
    return false;
  }
}

/** The engine's side of the audit: what the v2 runner and the v3 pipeline expose. */
export interface AuditEngine {
  /** Up to which source index/revision every change is on the destination (null: not tailing). */
  applied(): number | null;
  /** Active change trackers; the engine notes every source change it hands on (v2 source). */
  readonly trackers: Set<ChangeTracker>;
  /** Restores destination keys (ids) from the source through the engine's heal path; resolves with how many
   * were written or deleted. */
  heal(ids: string[], signal: AbortSignal): Promise<number>;
  /** Pinned (v3 → v3): writes the checkpoint again between two Txns, for the reader to pin the destination at;
   * resolves false when the run ended first. */
  checkpoint?(): Promise<boolean>;
}

/** The two sides at one point. `destination` is read after the source. */
export interface AuditPoint {
  /** The source index/revision proved. */
  at: number;
  source: Pages;
  destination(): Pages;
  /** Of these keys missing on the destination, those that could expire (a TTL or lease, theirs or a directory's
   * above them) and that the source has changed since the point. */
  changedSince?(ids: string[], signal: AbortSignal): Promise<Set<string>>;
}

/** How a kind reads its point (audit-readers.ts). */
export interface AuditReader {
  /** Pinned (v3 → v3): both sides exact at the point. Otherwise the destination is read once applied passes it. */
  readonly pinned: boolean;
  point(signal: AbortSignal): Promise<AuditPoint>;
  /** printable key of an id */
  name(id: string): string;
}

export interface AuditResult {
  result: 'equal' | 'different' | 'aborted';
  at: number | null;
  keys: number;
  differing: number;
  repaired: number;
  durationMs: number;
  listed: Difference[];
  reason?: string;
}

export interface AuditOptions {
  reader: AuditReader;
  /** Absent for the read-only `audit` command. */
  engine?: AuditEngine;
  guard: GuardOptions;
  log?: Log;
  /** Longest wait for the mirror to apply past a v2 point, ms. */
  catchUpMs?: number;
  /** Waits between retries of a point compacted meanwhile. */
  wait?: (ms: number, signal: AbortSignal) => Promise<unknown>;
  now?: () => number;
}

/** Differences logged by name at most; the count is always complete. */
export const LIST_LIMIT = 20;
/** Keys repaired per audit at most: the next audit takes the rest. */
const REPAIR_LIMIT = 10_000;
/** Source changes an audit may track before it gives up on a point (a flood): aborted, tried next time. */
const TRACK_LIMIT = 200_000;
const ATTEMPTS = 3;

export async function runAudit(opts: AuditOptions, signal: AbortSignal): Promise<AuditResult> {
  const now = opts.now ?? Date.now;
  const wait = opts.wait ?? ((ms, s) => sleep(ms, undefined, { signal: s }));
  const started = now();
  const aborted = (reason: string, at: number | null = null): AuditResult => ({ result: 'aborted', at, keys: 0, differing: 0, repaired: 0, durationMs: now() - started, listed: [], reason });
  for (let attempt = 1; ; attempt++) {
    try {
      return await auditOnce(opts, signal, started, now);
    } catch (err) {
      if (signal.aborted) return aborted('stopped');
      if (err instanceof CompactedError) {
        if (attempt >= ATTEMPTS) return aborted(`the audit point was compacted ${ATTEMPTS} times in a row`);
        opts.log?.info({ attempt }, 'audit point compacted meanwhile; trying a newer one');
        await wait(1_000, signal).catch(() => {});
        continue;
      }
      if (err instanceof AuditAbortedError) return aborted(err.message);
      return aborted(`the audit could not read both sides: ${(err as Error).message}`);
    }
  }
}

async function auditOnce(opts: AuditOptions, signal: AbortSignal, started: number, now: () => number): Promise<AuditResult> {
  const { reader, engine, log } = opts;
  const tracker = reader.pinned || !engine ? null : new ChangeTracker(TRACK_LIMIT);
  if (tracker) engine!.trackers.add(tracker);
  try {
    if (reader.pinned && engine?.checkpoint && !(await engine.checkpoint())) throw new AuditAbortedError('the mirror was not writing when the audit began');
    const point = await reader.point(signal);
    if (tracker) await caughtUp(engine!, point.at, opts.catchUpMs ?? 30_000, signal, opts.wait);
    const cmp = await compareSides(point.source, () => point.destination(), {
      changed: tracker ? (id) => tracker.changedAfter(id, point.at) : undefined,
      changedSince: point.changedSince ? (ids) => point.changedSince!(ids, signal) : undefined,
      name: (id) => reader.name(id),
      listLimit: LIST_LIMIT,
      repairLimit: REPAIR_LIMIT,
    });
    if (tracker?.overflow) throw new AuditAbortedError(`more than ${TRACK_LIMIT} source changes while the audit ran`);
    if (tracker?.interrupted) throw new AuditAbortedError('the mirror started a new run during the audit');
    let repaired = 0;
    let reason: string | undefined;
    if (cmp.differing > 0) {
      log?.warn({ atIndex: point.at, differing: cmp.differing, keys: cmp.listed, inFlight: cmp.inFlight }, `audit: the destination differs from the source at ${point.at} in ${cmp.differing} keys`);
      const refused = judgeSnapshot(point.at, cmp.sourceKeys, cmp.destinationKeys, opts.guard);
      if (refused) {
        reason = refused;
        log?.error({ atIndex: point.at }, `audit: not repairing: ${refused}`);
      } else if (engine) {
        repaired = await engine.heal(cmp.repair, signal);
        log?.warn({ atIndex: point.at, repaired }, 'audit: differing keys repaired from the source');
      }
    } else log?.info({ atIndex: point.at, keys: cmp.sourceKeys, inFlight: cmp.inFlight }, `audit: the destination equals the source at ${point.at}`);
    return {
      result: cmp.differing > 0 ? 'different' : 'equal',
      at: point.at,
      keys: cmp.sourceKeys,
      differing: cmp.differing,
      repaired,
      durationMs: now() - started,
      listed: cmp.listed,
      ...(reason ? { reason } : {}),
    };
  } finally {
    if (tracker) engine!.trackers.delete(tracker);
  }
}

async function caughtUp(engine: AuditEngine, at: number, limitMs: number, signal: AbortSignal, wait?: AuditOptions['wait']): Promise<void> {
  const pause = wait ?? ((ms, s) => sleep(ms, undefined, { signal: s }));
  for (let waited = 0; ; waited += 100) {
    const applied = engine.applied();
    if (applied === null) throw new AuditAbortedError('the mirror stopped tailing during the audit');
    if (applied >= at) return;
    if (waited >= limitMs) throw new AuditAbortedError(`the mirror did not apply past the audit point ${at} within ${limitMs / 1000} s`);
    await pause(100, signal);
  }
}

export interface SchedulerOptions {
  intervalMs: number;
  /** Whether an audit makes sense now (the mirror is tailing); while not, the audit waits. */
  ready(): boolean;
  run(signal: AbortSignal): Promise<AuditResult>;
  finished(result: AuditResult): void;
}

/** While the mirror is not tailing, a due audit looks again this often. */
const NOT_READY_RETRY_MS = 1_000;

/** Runs an audit every interval (the first one an interval after start), one at a time. */
export class AuditScheduler {
  readonly #abort = new AbortController();
  #timer: NodeJS.Timeout | undefined;
  #nextAt: number | null = null;
  #running = false;
  #last: AuditResult | null = null;
  #lastAt: number | null = null;

  constructor(private readonly opts: SchedulerOptions) {}

  start(): void {
    this.#schedule(this.opts.intervalMs);
  }

  stop(): void {
    this.#abort.abort();
    clearTimeout(this.#timer);
    this.#nextAt = null;
  }

  #schedule(ms: number): void {
    if (this.#abort.signal.aborted) return;
    this.#nextAt = Date.now() + ms;
    this.#timer = setTimeout(() => void this.#tick(), ms);
    this.#timer.unref();
  }

  async #tick(): Promise<void> {
    if (!this.opts.ready()) {
      this.#schedule(NOT_READY_RETRY_MS);
      return;
    }
    this.#running = true;
    this.#nextAt = null;
    const started = Date.now();
    try {
      // runAudit turns every failure into an aborted result; this only keeps a timer callback from rejecting.
      const result = await this.opts.run(this.#abort.signal).catch(
        (err: unknown): AuditResult => ({ result: 'aborted', at: null, keys: 0, differing: 0, repaired: 0, durationMs: Date.now() - started, listed: [], reason: String(err) }),
      );
      if (this.#abort.signal.aborted) return;
      this.#last = result;
      this.#lastAt = Date.now();
      this.opts.finished(result);
    } finally {
      this.#running = false;
      this.#schedule(this.opts.intervalMs);
    }
  }

  /** What /state shows: its type is src/ui/wire.ts AuditJson, which the compiler checks where /state is built. */
  view() {
    const l = this.#last;
    return {
      lastAt: this.#lastAt === null ? null : new Date(this.#lastAt).toISOString(),
      atIndex: l?.at ?? null,
      keys: l ? l.keys : null,
      differing: l ? l.differing : null,
      repaired: l ? l.repaired : null,
      durationMs: l ? l.durationMs : null,
      nextAt: this.#nextAt === null ? null : new Date(this.#nextAt).toISOString(),
      running: this.#running,
    };
  }
}
