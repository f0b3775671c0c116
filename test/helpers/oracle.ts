// Oracles that can see a lost or reordered event. A recorder keeps a cluster's event log under a prefix (a stream
// watch registered before the workload starts); the checks below compare the destination's log with the source's:
//   - checkOrder: every destination change is the next source event in source order (or part of a replay run
//     that re-applies a contiguous range of already applied source events in order, as a restart from the stored
//     index does), and no source event up to the stored index is missing;
//   - checkPointers: replaying the destination log, a pointer never names a data key the destination does not
//     hold (with the right value) — the dbctl/conftool "write the data, then publish the pointer" pattern.
// Trees equal at the end say nothing about the states in between; these do.
import { request, type Dispatcher } from 'undici';
import type { Tree } from './tree.js';

export interface LoggedEvent {
  action: string;
  key: string;
  /** node.value (absent on deletes and dirs). */
  value?: string;
  /** prevNode.value: what a delete removed, or what a put overwrote. */
  prevValue?: string;
  modifiedIndex: number;
  dir: boolean;
  /** Local receive time, ms since the epoch. */
  at: number;
}

export interface EventLog {
  readonly prefix: string;
  /** X-Etcd-Index of the watch: every event above it under the prefix is recorded. */
  readonly etcdIndex: number;
  /** In arrival order (which is index order on a stream watch). */
  readonly events: readonly LoggedEvent[];
  /** Problems with the recording itself (unparsable line, index going backwards, stream ended or failed). */
  readonly problems: readonly string[];
  /** Resolves with the first recorded event matching `pred`; rejects after `timeoutMs`. */
  waitFor(pred: (e: LoggedEvent) => boolean, timeoutMs?: number): Promise<LoggedEvent>;
  /** Closes the watch. */
  stop(): Promise<void>;
}

const enc = (key: string): string => key.split('/').map(encodeURIComponent).join('/');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface WireNode {
  key?: string;
  value?: string;
  dir?: boolean;
  modifiedIndex?: number;
}

/**
 * Records every event under `prefix` of the cluster at `baseUrl` from now on: a recursive stream watch without
 * waitIndex (registered "from now", see the API notes §3.1), read eagerly, bytes decoded with a streaming
 * TextDecoder and split on newlines (one JSON event per line). Resolves once etcd has registered the watch.
 */
export async function recordEvents(baseUrl: string, prefix: string, dispatcher?: Dispatcher): Promise<EventLog> {
  const abort = new AbortController();
  const res = await request(`${baseUrl}/v2/keys${enc(prefix)}?wait=true&recursive=true&stream=true`, {
    signal: abort.signal,
    headersTimeout: 15_000,
    bodyTimeout: 0, // a quiet stream is not a dead one
    dispatcher, // an https cluster's client certificate
  });
  if (res.statusCode !== 200) {
    const text = await res.body.text().catch(() => '');
    throw new Error(`recorder: stream watch on ${baseUrl}${prefix} answered ${res.statusCode} ${text}`);
  }
  const etcdIndex = Number(res.headers['x-etcd-index']);
  const events: LoggedEvent[] = [];
  const problems: string[] = [];
  let last = etcdIndex;
  let stopping = false;

  const onLine = (line: string): void => {
    if (!line.trim()) return;
    let ev: { action?: string; node?: WireNode; prevNode?: WireNode };
    try {
      ev = JSON.parse(line) as typeof ev;
    } catch {
      problems.push(`unparsable line: ${line.slice(0, 200)}`);
      return;
    }
    const node = ev.node;
    if (!ev.action || !node || typeof node.key !== 'string' || typeof node.modifiedIndex !== 'number') {
      problems.push(`not an event: ${line.slice(0, 200)}`);
      return;
    }
    // A stream on a path that is itself deleted gets that delete twice (API notes §3.5): same index, dropped.
    if (node.modifiedIndex === last && events.at(-1)?.key === node.key && events.at(-1)?.action === ev.action) return;
    if (node.modifiedIndex <= last) {
      problems.push(`index ${node.modifiedIndex} (${ev.action} ${node.key}) after ${last}`);
      return;
    }
    last = node.modifiedIndex;
    const rec: LoggedEvent = { action: ev.action, key: node.key, modifiedIndex: node.modifiedIndex, dir: node.dir === true, at: Date.now() };
    if (node.value !== undefined) rec.value = node.value;
    if (ev.prevNode?.value !== undefined) rec.prevValue = ev.prevNode.value;
    events.push(rec);
  };

  const reading = (async () => {
    const decoder = new TextDecoder();
    let partial = '';
    try {
      for await (const chunk of res.body) {
        partial += decoder.decode(chunk as Uint8Array, { stream: true });
        let nl: number;
        while ((nl = partial.indexOf('\n')) >= 0) {
          onLine(partial.slice(0, nl));
          partial = partial.slice(nl + 1);
        }
      }
      partial += decoder.decode();
      onLine(partial);
      if (!stopping) problems.push('the stream ended');
    } catch (err) {
      if (!stopping) problems.push(`the stream failed: ${String(err)}`);
    }
  })();

  return {
    prefix,
    etcdIndex,
    events,
    problems,
    async waitFor(pred, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      let from = 0;
      for (;;) {
        for (; from < events.length; from++) if (pred(events[from]!)) return events[from]!;
        if (Date.now() >= deadline) throw new Error(`recorder ${baseUrl}${prefix}: no matching event within ${timeoutMs} ms (${events.length} recorded; ${problems.join('; ')})`);
        await sleep(20);
      }
    },
    async stop() {
      stopping = true;
      abort.abort();
      await reading;
    },
  };
}

/** One change of a prefix's state, with the key relative to the prefix ('' = the prefix node, '/a/b' below it). */
export type Change =
  | { index: number; key: string; op: 'put'; value: string; prevValue?: string }
  | { index: number; key: string; op: 'mkdir' }
  | { index: number; key: string; op: 'del'; prevValue?: string };

const PUT_ACTIONS = new Set(['set', 'create', 'update', 'compareAndSwap']);
const DEL_ACTIONS = new Set(['delete', 'compareAndDelete', 'expire']);

/** Relative key of `key` under `prefix`, or undefined when it is not inside (history lookups match by string prefix). */
export function relativeKey(key: string, prefix: string): string | undefined {
  if (prefix === '/') return key === '/' ? '' : key;
  if (key === prefix) return '';
  return key.startsWith(prefix + '/') ? key.slice(prefix.length) : undefined;
}

/** The log's events inside `prefix` as changes with relative keys (so a source and a destination log compare). */
export function changesOf(events: readonly LoggedEvent[], prefix: string): Change[] {
  const out: Change[] = [];
  for (const e of events) {
    const key = relativeKey(e.key, prefix);
    if (key === undefined) continue;
    if (DEL_ACTIONS.has(e.action)) {
      const c: Change = { index: e.modifiedIndex, key, op: 'del' };
      if (e.prevValue !== undefined) c.prevValue = e.prevValue;
      out.push(c);
    } else if (PUT_ACTIONS.has(e.action)) {
      if (e.dir) out.push({ index: e.modifiedIndex, key, op: 'mkdir' });
      else {
        const c: Change = { index: e.modifiedIndex, key, op: 'put', value: e.value ?? '' };
        if (e.prevValue !== undefined) c.prevValue = e.prevValue;
        out.push(c);
      }
    } else {
      throw new Error(`unexpected action ${e.action} at index ${e.modifiedIndex}`);
    }
  }
  return out;
}

const describeChange = (c: Change): string =>
  c.op === 'put' ? `put ${c.key}=${JSON.stringify(c.value)}` : c.op === 'del' ? `delete ${c.key}${c.prevValue !== undefined ? ` (was ${JSON.stringify(c.prevValue)})` : ''}` : `mkdir ${c.key}`;

/** A prefix's state as the log says it is: relative key → value, `null` for a directory. */
export class SimTree {
  readonly nodes = new Map<string, string | null>();

  static from(tree: Tree): SimTree {
    const sim = new SimTree();
    for (const [key, node] of tree) sim.nodes.set(key, node.dir ? null : (node.value ?? ''));
    return sim;
  }

  has(key: string): boolean {
    return this.nodes.has(key);
  }

  get(key: string): string | null | undefined {
    return this.nodes.get(key);
  }

  apply(c: Change): void {
    if (c.op === 'put') this.nodes.set(c.key, c.value);
    else if (c.op === 'mkdir') {
      if (this.nodes.get(c.key) !== null) this.nodes.set(c.key, null);
    } else {
      const wasDir = this.nodes.get(c.key) === null;
      this.nodes.delete(c.key);
      if (wasDir) for (const k of [...this.nodes.keys()]) if (k.startsWith(c.key + '/')) this.nodes.delete(k);
    }
  }

  /** Whether `c` would leave no trace in a log applied on this state (etcd answers 404/403 and writes no event). */
  isNoop(c: Change): boolean {
    if (c.op === 'del') return !this.nodes.has(c.key);
    if (c.op === 'mkdir') return this.nodes.get(c.key) === null;
    return false;
  }

  /** Differences to a dumped tree (files' values and dirs; implicit parent dirs are ignored on both sides). */
  diff(tree: Tree): string[] {
    const out: string[] = [];
    const files = (m: Iterable<[string, string | null]>) => new Map([...m].filter(([, v]) => v !== null));
    const mine = files(this.nodes);
    const theirs = files([...tree].map(([k, n]) => [k, n.dir ? null : (n.value ?? '')] as [string, string | null]));
    for (const [k, v] of mine) if (theirs.get(k) !== v) out.push(`${k}: log says ${JSON.stringify(v)}, tree has ${JSON.stringify(theirs.get(k) ?? '(absent)')}`);
    for (const [k, v] of theirs) if (!mine.has(k)) out.push(`${k}: log says (absent), tree has ${JSON.stringify(v)}`);
    return out;
  }
}

export interface OrderReport {
  sourceChanges: number;
  destinationChanges: number;
  /** Destination changes that applied a source event for the first time, in order. */
  inOrder: number;
  /**
   * Destination changes out of source order: a first application while an earlier source event was not yet
   * visible, or a re-application that is neither the continuation of the current replay run nor the start of one
   * of the allowed replay runs.
   */
  outOfOrder: number;
  /** Runs of re-applied events (a restart from the stored index makes one). */
  replayRuns: number;
  /** Destination changes that re-applied an already applied source event. */
  reapplied: number;
  /** Destination changes that match no source event at all. */
  unexplained: number;
  /** Source events at or below `appliedUpTo` that never appeared on the destination. */
  lost: number;
  /** The first few problems, readable. */
  examples: string[];
}

/**
 * Oracle A. Walks the destination log against the source log (both as relative-key changes, in log order).
 * Every destination change is matched to the source event it applies (puts by key and value — give every write a
 * unique value —, deletes by key and the value they removed, falling back to key only). The first application
 * of source event c is in order only if every earlier source event is already visible on the destination
 * (applied, or a no-op there: a delete of a key the destination does not hold). A change that applies an
 * already applied event belongs to a replay run: it continues the current run (the next source event after the
 * previous re-applied one, no-ops skipped) or starts a new run; at most `allowedReplays` runs may start (one per
 * resume of the mirror from its stored index), each further start counts as out of order.
 */
export function checkOrder(src: readonly Change[], dst: readonly Change[], opts: { initial: Tree; appliedUpTo: number; allowedReplays: number }): OrderReport {
  const n = src.length;
  const applied = new Uint8Array(n);
  const sim = SimTree.from(opts.initial);
  const index = (m: Map<string, number[]>, k: string, pos: number) => {
    const list = m.get(k);
    if (list) list.push(pos);
    else m.set(k, [pos]);
  };
  const puts = new Map<string, number[]>();
  const delsByPrev = new Map<string, number[]>();
  const delsByKey = new Map<string, number[]>();
  const mkdirs = new Map<string, number[]>();
  src.forEach((c, pos) => {
    if (c.op === 'put') index(puts, `${c.key}\0${c.value}`, pos);
    else if (c.op === 'mkdir') index(mkdirs, c.key, pos);
    else {
      index(delsByKey, c.key, pos);
      if (c.prevValue !== undefined) index(delsByPrev, `${c.key}\0${c.prevValue}`, pos);
    }
  });

  const report: OrderReport = {
    sourceChanges: n,
    destinationChanges: dst.length,
    inOrder: 0,
    outOfOrder: 0,
    replayRuns: 0,
    reapplied: 0,
    unexplained: 0,
    lost: 0,
    examples: [],
  };
  const example = (s: string) => {
    if (report.examples.length < 12) report.examples.push(s);
  };
  let firstInvisible = 0; // lowest source position not yet visible on the destination
  let run: { cursor: number } | null = null; // the replay run in progress: the position it should apply next
  /** Whether every source event in [from, to) would be a no-op on the destination now (a run may skip those). */
  const onlyNoops = (from: number, to: number): boolean => {
    for (let x = from; x < to; x++) if (!sim.isNoop(src[x]!)) return false;
    return true;
  };
  const continuesRun = (c: number): boolean => run !== null && c >= run.cursor && onlyNoops(run.cursor, c);
  const pick = (cands: number[] | undefined): number | undefined => {
    if (!cands?.length) return undefined;
    const next = cands.find((c) => continuesRun(c));
    if (next !== undefined) return next;
    const fresh = cands.find((c) => !applied[c]);
    if (fresh !== undefined) return fresh;
    return cands[cands.length - 1];
  };

  dst.forEach((d, i) => {
    let c: number | undefined;
    if (d.op === 'put') c = pick(puts.get(`${d.key}\0${d.value}`));
    else if (d.op === 'mkdir') c = pick(mkdirs.get(d.key));
    else c = (d.prevValue !== undefined ? pick(delsByPrev.get(`${d.key}\0${d.prevValue}`)) : undefined) ?? pick(delsByKey.get(d.key));
    if (c === undefined) {
      report.unexplained++;
      example(`destination change #${i} at dst index ${d.index} (${describeChange(d)}) matches no source event`);
    } else if (!applied[c]) {
      while (firstInvisible < n && (applied[firstInvisible] || sim.isNoop(src[firstInvisible]!))) firstInvisible++;
      if (firstInvisible < c) {
        report.outOfOrder++;
        const w = src[firstInvisible]!;
        example(
          `out of order: source index ${src[c]!.index} (${describeChange(src[c]!)}) became visible (dst index ${d.index}) before source index ${w.index} (${describeChange(w)})`,
        );
      } else report.inOrder++;
      applied[c] = 1;
      run = continuesRun(c) ? { cursor: c + 1 } : null;
    } else {
      report.reapplied++;
      if (continuesRun(c)) run = { cursor: c + 1 };
      else {
        report.replayRuns++;
        if (report.replayRuns > opts.allowedReplays) {
          report.outOfOrder++;
          example(
            `out of order: source index ${src[c]!.index} (${describeChange(src[c]!)}) re-applied at dst index ${d.index}, ` +
              `not following the replay run in progress (run ${report.replayRuns}, ${opts.allowedReplays} allowed)`,
          );
        }
        run = { cursor: c + 1 };
      }
    }
    sim.apply(d);
  });

  for (let x = 0; x < n; x++) {
    if (src[x]!.index > opts.appliedUpTo || applied[x]) continue;
    report.lost++;
    example(`lost: source index ${src[x]!.index} (${describeChange(src[x]!)}) is at or below the stored index ${opts.appliedUpTo} but never reached the destination`);
  }
  return report;
}

export interface PointerReport {
  pointerChanges: number;
  violations: number;
  examples: string[];
}

/**
 * Oracle B. Replays the destination log in order on `initial` and checks, at every change of a pointer key
 * (`<ptrDir>/<name>`, value = an id), that `<dataDir>/<id>` already exists with the value `dataValue(id)`, and at
 * every delete that no pointer is left naming a data key that is gone.
 */
export function checkPointers(
  dst: readonly Change[],
  opts: { initial: Tree; ptrDir: string; dataDir: string; dataValue: (id: string) => string },
): PointerReport {
  const sim = SimTree.from(opts.initial);
  const report: PointerReport = { pointerChanges: 0, violations: 0, examples: [] };
  const pointers = (): [string, string][] =>
    [...sim.nodes].filter((e): e is [string, string] => e[0].startsWith(opts.ptrDir + '/') && typeof e[1] === 'string');
  const dangling = (id: string): string | undefined => {
    const have = sim.get(`${opts.dataDir}/${id}`);
    if (have === opts.dataValue(id)) return undefined;
    return have === undefined ? 'absent' : `holds ${JSON.stringify(have)}`;
  };
  for (const d of dst) {
    sim.apply(d);
    if (d.op === 'put' && d.key.startsWith(opts.ptrDir + '/')) {
      report.pointerChanges++;
      const why = dangling(d.value);
      if (why) {
        report.violations++;
        if (report.examples.length < 12) report.examples.push(`dst index ${d.index}: ${d.key} → ${d.value}, but ${opts.dataDir}/${d.value} is ${why}`);
      }
    } else if (d.op === 'del' || (d.op === 'put' && d.key.startsWith(opts.dataDir + '/'))) {
      for (const [ptr, id] of pointers()) {
        const why = dangling(id);
        if (!why) continue;
        report.violations++;
        if (report.examples.length < 12) report.examples.push(`dst index ${d.index} (${describeChange(d)}): ${ptr} still names ${id}, whose data is ${why}`);
      }
    }
  }
  return report;
}

/** What a presence oracle saw of one key and its copy. */
export interface PresenceReport {
  /** Polls in which the copy, once it had appeared, was absent while the source (read right after) still had the key. */
  early: string[];
  /** Whether the copy ever appeared. */
  appeared: boolean;
  /** Whether the copy was gone after the source key went (false: still there when the wait ended). */
  gone: boolean;
  polls: number;
  /** Longest time between two polls, ms (the oracle's resolution in this run). */
  widestGapMs: number;
}

export interface PresenceOracle {
  /** Keeps polling until the source key is gone and then the copy too (at most `timeoutMs` more), and reports. */
  untilGone(timeoutMs?: number): Promise<PresenceReport>;
}

/**
 * Follows a key through its whole life on both sides: from the moment the source has it, every `everyMs` (≤ 100), the copy is read and
 * then the source. A copy absent while the source, read after it, still has the key means the copy vanished while
 * the source key existed (keys under test are never re-created). Once the source key is gone, the copy must go
 * too: the oracle waits for that condition, never for a time.
 */
export function followPresence(has: { source: () => Promise<boolean>; copy: () => Promise<boolean> }, everyMs = 100): PresenceOracle {
  const started = Date.now();
  const report: PresenceReport = { early: [], appeared: false, gone: false, polls: 0, widestGapMs: 0 };
  let sourceSeen = false;
  let sourceGone = false;
  // Bounded even if the test never asks (it failed first).
  let deadline = started + 120_000;
  let last = started;
  const loop = (async () => {
    while (Date.now() < deadline) {
      const t = Date.now();
      report.widestGapMs = Math.max(report.widestGapMs, t - last);
      last = t;
      const copy = await has.copy();
      const source = sourceGone ? false : await has.source();
      report.polls++;
      if (copy) report.appeared = true;
      if (sourceGone && !copy) {
        report.gone = true;
        return;
      }
      if (source) sourceSeen = true;
      else if (sourceSeen) sourceGone = true;
      if (source && !copy && report.appeared) report.early.push(`copy absent at +${t - started} ms while the source still had the key`);
      await sleep(Math.max(0, everyMs - (Date.now() - t)));
    }
  })();
  loop.catch(() => {}); // reported by untilGone
  return {
    async untilGone(timeoutMs = 30_000) {
      deadline = Math.min(deadline, Date.now() + timeoutMs);
      await loop;
      return report;
    },
  };
}
