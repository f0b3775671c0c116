// An in-memory etcd v2 source for the poller: a store index, an event history, and long-poll watches that behave
// like etcd's: a watch registers and reads X-Etcd-Index in one step, answers at once with the first matching event
// at or after its waitIndex if history holds one, and otherwise waits for the next matching event. Faults are
// scripted per watch (fail, hang before the headers, dead after them, cut after them, empty answer) or per event
// (delayed body).
import { AbortedError, type EtcdClient, type WatchHandle } from '../../../src/etcd/client.js';
import type { EtcdEvent } from '../../../src/etcd/decode.js';
import { etcdErrorFrom } from '../../../src/etcd/errors.js';

/** Does `ev` answer a watch on `key`? */
export type WatchMatcher = (ev: EtcdEvent, key: string, recursive: boolean) => boolean;

/** Plain string prefix, as the brief describes etcd's history lookups: '/demo2/x' answers a watch on '/demo'. */
export const stringPrefixMatch: WatchMatcher = (ev, key, recursive) =>
  recursive ? ev.node.key.startsWith(key) : ev.node.key === key;

/**
 * etcd v2's history scan (v2store EventHistory.scan): the key itself, keys below `key + '/'`, and the delete or
 * expiry of a directory whose key is a string prefix of the watched key — so deleting dir '/de' answers a
 * watch on '/demo' (test/fixtures/v2/delete-string-prefix-sibling.json), while '/demo2/x' does not.
 */
export const etcdV2Match: WatchMatcher = (ev, key, recursive) => {
  let ok = ev.node.key === key;
  if (recursive) ok ||= ev.node.key.startsWith(key.endsWith('/') ? key : `${key}/`);
  if ((ev.action === 'delete' || ev.action === 'expire') && ev.prevNode?.dir) ok ||= key.startsWith(ev.prevNode.key);
  return ok;
};

export type WatchState =
  | 'connecting' // headers not sent yet (a hung watch)
  | 'waiting' // registered, no matching event yet (or dead)
  | 'sending' // a matching event was found; its body is delayed
  | 'delivered'
  | 'empty'
  | 'failed'
  | 'aborted';

export interface WatchRecord {
  readonly id: number;
  readonly key: string;
  /** The waitIndex asked for (undefined: "from now", which etcd treats as store index + 1 at registration). */
  readonly requestedWaitIndex: number | undefined;
  readonly waitIndex: number;
  readonly recursive: boolean;
  /** Date.now() when watch() was called. */
  readonly issuedAt: number;
  /** X-Etcd-Index: the store index at registration (undefined until the headers are sent). */
  etcdIndex: number | undefined;
  state: WatchState;
  /** A dead connection: it never delivers, whatever happens in the store. */
  dead: boolean;
  /** The event it delivered (null for an empty answer). */
  delivered: EtcdEvent | null | undefined;
  /** The state it was in when its signal aborted. */
  abortedIn: WatchState | undefined;
}

type Behaviour =
  | { kind: 'fail'; error: Error }
  | { kind: 'hang' }
  | { kind: 'dead' }
  | { kind: 'empty'; delayMs: number }
  | { kind: 'cut'; error: Error; delayMs: number };

interface Live {
  rec: WatchRecord;
  resolve(ev: EtcdEvent | null): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout | undefined;
  cleanup(): void;
}

export interface FakeSourceOptions {
  /** Store index before the first append. */
  storeIndex?: number;
  match?: WatchMatcher;
  /** Events kept in history (etcd keeps 1000); a waitIndex older than the oldest kept one gets errorCode 401. */
  historyWindow?: number;
}

export class FakeSource {
  readonly origin = 'http://fake-source:2379';
  storeIndex: number;
  readonly history: EtcdEvent[] = [];
  readonly watches: WatchRecord[] = [];
  readonly #match: WatchMatcher;
  readonly #window: number;
  readonly #script: Behaviour[] = [];
  readonly #bodyDelays = new Map<number, { ms: number; only: ((rec: WatchRecord) => boolean) | undefined }>();
  readonly #waiting = new Set<Live>();
  readonly #open = new Set<Live>();
  #nextId = 1;
  #firstIndex = 1;

  constructor(opts: FakeSourceOptions = {}) {
    this.storeIndex = opts.storeIndex ?? 0;
    this.#firstIndex = this.storeIndex + 1;
    this.#match = opts.match ?? stringPrefixMatch;
    this.#window = opts.historyWindow ?? Number.POSITIVE_INFINITY;
  }

  /** This fake where the poller wants an EtcdClient (it only uses `watch` and `origin`). */
  get client(): EtcdClient {
    return this as unknown as EtcdClient;
  }

  get watchCount(): number {
    return this.watches.length;
  }
  /** Watches whose signal aborted before they had answered (or failed). */
  get abortCount(): number {
    return this.watches.filter((w) => w.abortedIn !== undefined).length;
  }
  /** Watches currently registered without an answer (waiting or sending). */
  get openWatches(): WatchRecord[] {
    return [...this.#open].map((l) => l.rec);
  }

  /** Appends one event at storeIndex + 1 and notifies matching waiting watches. */
  append(key: string, opts: { action?: string; value?: string; dir?: boolean; prevNode?: EtcdEvent['prevNode'] } = {}): EtcdEvent {
    const index = ++this.storeIndex;
    const ev: EtcdEvent = {
      action: opts.action ?? 'set',
      node: {
        key,
        ...(opts.dir ? { dir: true } : { value: opts.value ?? `v${index}` }),
        modifiedIndex: index,
        createdIndex: index,
      },
      ...(opts.prevNode ? { prevNode: opts.prevNode } : {}),
    };
    this.history.push(ev);
    if (this.history.length > this.#window) {
      this.history.shift();
      this.#firstIndex = this.history[0]!.node.modifiedIndex;
    }
    for (const live of [...this.#waiting]) {
      if (live.rec.dead || !this.#match(ev, live.rec.key, live.rec.recursive) || index < live.rec.waitIndex) continue;
      this.#waiting.delete(live);
      this.#send(live, ev);
    }
    return ev;
  }

  /** `n` writes outside any prefix a test watches: they only move the store index (and fill the window). */
  bump(n: number, key = '/elsewhere/k'): void {
    for (let i = 0; i < n; i++) this.append(key);
  }

  /** The next `times` watch() calls reject with `error` (an Error, or an etcd error body turned into its typed error). */
  failNextWatch(error: Error | { errorCode: number; message?: string; cause?: string; index?: number }, times = 1, httpStatus = 400): void {
    for (let i = 0; i < times; i++) this.#script.push({ kind: 'fail', error: error instanceof Error ? error : etcdErrorFrom(error, httpStatus) });
  }
  /** The next `times` watch() calls never get their headers (until their signal aborts). */
  hangNextWatch(times = 1): void {
    for (let i = 0; i < times; i++) this.#script.push({ kind: 'hang' });
  }
  /** The next watch() gets its headers, then its connection breaks after `delayMs`: the body rejects with `error`. */
  cutNextWatch(error: Error, delayMs = 0): void {
    this.#script.push({ kind: 'cut', error, delayMs });
  }
  /** The next watch() gets its headers but its body never comes: a dead connection. */
  deadNextWatch(): void {
    this.#script.push({ kind: 'dead' });
  }
  /** The next watch() gets its headers, then an empty body after `delayMs`. */
  emptyNextWatch(delayMs = 0): void {
    this.#script.push({ kind: 'empty', delayMs });
  }
  /** Every watch (or each one `only` accepts) answered with the event at `index` gets its body `ms` after it was found. */
  delayBody(index: number, ms: number, only?: (rec: WatchRecord) => boolean): void {
    this.#bodyDelays.set(index, { ms, only });
  }
  /** Makes an already registered watch dead: it will never deliver (a pending delayed body is dropped). */
  kill(rec: WatchRecord): void {
    rec.dead = true;
    for (const live of this.#open) {
      if (live.rec !== rec) continue;
      this.#waiting.delete(live);
      if (live.timer) clearTimeout(live.timer);
      live.timer = undefined;
      live.rec.state = 'waiting';
    }
  }

  /** A registered watch's connection breaks: its pending body rejects with `err` (e.g. a TransportError). */
  breakConnection(rec: WatchRecord, err: Error): void {
    for (const live of [...this.#open]) {
      if (live.rec !== rec) continue;
      live.rec.state = 'failed';
      live.cleanup();
      live.reject(err);
    }
  }

  watch(key: string, opts: { waitIndex?: number; recursive?: boolean; signal: AbortSignal }): Promise<WatchHandle> {
    const rec: WatchRecord = {
      id: this.#nextId++,
      key,
      requestedWaitIndex: opts.waitIndex,
      waitIndex: opts.waitIndex ?? this.storeIndex + 1,
      recursive: opts.recursive === true,
      issuedAt: Date.now(),
      etcdIndex: undefined,
      state: 'connecting',
      dead: false,
      delivered: undefined,
      abortedIn: undefined,
    };
    this.watches.push(rec);
    const { signal } = opts;
    const behaviour = this.#script.shift();
    const aborted = () => new AbortedError('request aborted');
    if (signal.aborted) {
      rec.abortedIn = rec.state;
      rec.state = 'aborted';
      return Promise.reject(aborted());
    }
    if (behaviour?.kind === 'fail') {
      rec.state = 'failed';
      return Promise.reject(behaviour.error);
    }
    if (behaviour?.kind === 'hang') {
      return new Promise<WatchHandle>((_, reject) => {
        signal.addEventListener(
          'abort',
          () => {
            rec.abortedIn = rec.state;
            rec.state = 'aborted';
            reject(aborted());
          },
          { once: true },
        );
      });
    }
    if (rec.waitIndex < this.#firstIndex && this.history.length >= this.#window) {
      rec.state = 'failed';
      const cause = `[${this.#firstIndex}/${rec.waitIndex}]`;
      return Promise.reject(
        etcdErrorFrom({ errorCode: 401, message: 'The event in requested index is outdated and cleared', cause, index: this.storeIndex }, 400),
      );
    }

    // Registered: X-Etcd-Index is the store index now.
    rec.etcdIndex = this.storeIndex;
    rec.state = 'waiting';
    let resolve!: (ev: EtcdEvent | null) => void;
    let reject!: (err: Error) => void;
    const event = new Promise<EtcdEvent | null>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    event.catch(() => {}); // like the real client: the caller may abandon it
    const onAbort = () => {
      if (!this.#open.has(live)) return;
      rec.abortedIn = rec.state;
      rec.state = 'aborted';
      live.cleanup();
      reject(aborted());
    };
    const live: Live = {
      rec,
      resolve,
      reject,
      timer: undefined,
      cleanup: () => {
        this.#open.delete(live);
        this.#waiting.delete(live);
        if (live.timer) clearTimeout(live.timer);
        live.timer = undefined;
        signal.removeEventListener('abort', onAbort);
      },
    };
    this.#open.add(live);
    signal.addEventListener('abort', onAbort, { once: true });

    if (behaviour?.kind === 'dead') {
      rec.dead = true;
    } else if (behaviour?.kind === 'cut') {
      live.timer = setTimeout(() => {
        rec.state = 'failed';
        live.cleanup();
        reject(behaviour.error);
      }, behaviour.delayMs);
    } else if (behaviour?.kind === 'empty') {
      rec.state = 'sending';
      live.timer = setTimeout(() => this.#finish(live, null), behaviour.delayMs);
    } else {
      const found = this.history.find(
        (ev) => ev.node.modifiedIndex >= rec.waitIndex && this.#match(ev, rec.key, rec.recursive),
      );
      if (found) this.#send(live, found);
      else this.#waiting.add(live);
    }
    return Promise.resolve({ etcdIndex: rec.etcdIndex, clusterId: 'fake-cluster', event });
  }

  #send(live: Live, ev: EtcdEvent): void {
    const rule = this.#bodyDelays.get(ev.node.modifiedIndex);
    const delay = rule && (!rule.only || rule.only(live.rec)) ? rule.ms : 0;
    live.rec.state = 'sending';
    if (delay > 0) live.timer = setTimeout(() => this.#finish(live, ev), delay);
    else this.#finish(live, ev);
  }

  #finish(live: Live, ev: EtcdEvent | null): void {
    if (!this.#open.has(live) || live.rec.dead) return;
    live.timer = undefined;
    live.rec.state = ev ? 'delivered' : 'empty';
    live.rec.delivered = ev;
    live.cleanup();
    live.resolve(ev);
  }

  /** Clears every timer and listener the fake holds (for afterEach). */
  close(): void {
    for (const live of [...this.#open]) live.cleanup();
  }
}
