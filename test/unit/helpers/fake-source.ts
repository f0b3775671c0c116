// An in-memory etcd v2 source for the poller: a store index, an event history, and long-poll watches that behave
// like etcd's: a watch registers and reads X-Etcd-Index in one step, answers at once with the first matching event
// at or after its waitIndex if history holds one, and otherwise waits for the next matching event. Faults are
// scripted per watch (fail, hang before the headers, dead after them, cut after them, empty answer) or per event
// (delayed body).
//
// Stream watches (`stream`) behave like etcd's `?wait=true&stream=true` from now: the headers carry X-Etcd-Index =
// the store index at registration, and every later matching event reaches the client in order (optionally after a
// per-event delay that holds back the events behind it, as one TCP connection would). The client side mirrors
// src/etcd/v2/client.ts: arrived events are buffered, next() hands them out in order and rejects once the stream has
// failed (after the buffered ones), lastIndex() is the highest index received. Faults: fail to open, hang before
// the headers, stall (stop delivering without closing, as etcd drops a slow reader), cut (the connection breaks).
import { AbortedError } from '../../../src/etcd/errors.js';
import { type EtcdClient, type StreamHandle, type WatchHandle } from '../../../src/etcd/v2/client.js';
import type { EtcdEvent, KeysResult } from '../../../src/etcd/v2/decode.js';
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

/** etcd v2's live notification (watcherHub.notify): the key itself and keys below it, no string-prefix quirk. */
export const liveMatch: WatchMatcher = (ev, key, recursive) =>
  ev.node.key === key || (recursive && ev.node.key.startsWith(key.endsWith('/') ? key : `${key}/`));

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

export type StreamState =
  | 'connecting' // headers not sent yet (a hung stream)
  | 'open' // registered and delivering
  | 'stalled' // registered, delivers nothing more (etcd dropped the reader without closing)
  | 'cut' // the connection broke: next() rejects after the buffered events
  | 'failed' // the open failed
  | 'aborted';

export interface StreamRecord {
  readonly id: number;
  readonly key: string;
  readonly recursive: boolean;
  readonly issuedAt: number;
  /** X-Etcd-Index (undefined until the headers are sent). */
  etcdIndex: number | undefined;
  state: StreamState;
  /** Events that reached the client, in arrival order (buffered or consumed). */
  readonly received: EtcdEvent[];
  /** How many of them next() has handed out. */
  consumed: number;
  /** The state it was in when its signal aborted. */
  abortedIn: StreamState | undefined;
}

type StreamBehaviour =
  | { kind: 'fail'; error: Error }
  | { kind: 'hang' }
  | { kind: 'stall' }
  | { kind: 'cut'; error: Error; delayMs: number };

interface LiveStream {
  rec: StreamRecord;
  /** Events on the wire: they reach the client in this order, each not before its due time. */
  inflight: { ev: EtcdEvent; due: number }[];
  timer: NodeJS.Timeout | undefined;
  lastIndex: number;
  failure: Error | null;
  wake: (() => void) | null;
  cleanup(): void;
}

interface Live {
  rec: WatchRecord;
  /** The body's first byte arrived (the fake sends a body in one piece: when it is delivered). */
  gotBytes(): void;
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
  /** Every watch body (history match or live) reaches the client this long after it was found (a round trip). */
  bodyLatencyMs?: number;
  /** Every stream event reaches the client this long after it was written. */
  streamLatencyMs?: number;
  /**
   * What a stream (a live notification) delivers; defaults to `match`. etcd notifies live watchers by walking the
   * event key's path, so the history-only quirk of etcdV2Match (a deleted directory '/de' answers '/demo') does not
   * reach a stream: pass `liveMatch` for that.
   */
  streamMatch?: WatchMatcher;
}

export class FakeSource {
  readonly origin = 'http://fake-source:2379';
  storeIndex: number;
  readonly history: EtcdEvent[] = [];
  readonly watches: WatchRecord[] = [];
  readonly streams: StreamRecord[] = [];
  /** Calls of get() (the synchronous mode's registration with fromIndex 'now'). */
  getCount = 0;
  /** Most watch requests ever unanswered at the same time (connecting, waiting or sending). */
  maxConcurrentWatches = 0;
  /** Called for every watch() as it is issued (before it registers). */
  onWatch: ((rec: WatchRecord) => void) | undefined;
  readonly #match: WatchMatcher;
  readonly #streamMatch: WatchMatcher;
  readonly #window: number;
  readonly #bodyLatency: number;
  readonly #streamLatency: number;
  readonly #script: Behaviour[] = [];
  readonly #streamScript: StreamBehaviour[] = [];
  readonly #streamDelays = new Map<number, number>();
  readonly #liveStreams = new Set<LiveStream>();
  readonly #unanswered = new Set<WatchRecord>();
  readonly #bodyDelays = new Map<number, { ms: number; only: ((rec: WatchRecord) => boolean) | undefined }>();
  readonly #truncated = new Map<number, ((rec: WatchRecord) => boolean) | undefined>();
  readonly #waiting = new Set<Live>();
  readonly #open = new Set<Live>();
  #nextId = 1;
  #firstIndex = 1;

  constructor(opts: FakeSourceOptions = {}) {
    this.storeIndex = opts.storeIndex ?? 0;
    this.#firstIndex = this.storeIndex + 1;
    this.#match = opts.match ?? stringPrefixMatch;
    this.#streamMatch = opts.streamMatch ?? this.#match;
    this.#window = opts.historyWindow ?? Number.POSITIVE_INFINITY;
    this.#bodyLatency = opts.bodyLatencyMs ?? 0;
    this.#streamLatency = opts.streamLatencyMs ?? 0;
  }

  /** This fake where the poller wants an EtcdClient (it uses `watch`, `stream`, `get` and `origin`). */
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
  /** Watch requests not answered yet, including those whose headers hang. */
  get unansweredWatches(): WatchRecord[] {
    return [...this.#unanswered];
  }
  /** Streams registered and not closed (open, stalled), plus those whose headers hang. */
  get openStreams(): StreamRecord[] {
    return this.streams.filter((r) => r.state === 'open' || r.state === 'stalled' || r.state === 'connecting');
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
    for (const s of [...this.#liveStreams]) {
      if (s.rec.state !== 'open' || !this.#streamMatch(ev, s.rec.key, s.rec.recursive)) continue;
      const delay = this.#streamDelays.get(index) ?? this.#streamLatency;
      s.inflight.push({ ev, due: Date.now() + delay });
      this.#pump(s);
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
  /**
   * Every watch (or each one `only` accepts) answered with the event at `index` gets the first bytes of its body
   * and then nothing more: the connection died mid-body without a reset (firstByte resolves, event never settles
   * until the watch is aborted).
   */
  truncateBody(index: number, only?: (rec: WatchRecord) => boolean): void {
    this.#truncated.set(index, only);
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
    this.onWatch?.(rec);
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
      this.#track(rec);
      return new Promise<WatchHandle>((_, reject) => {
        const onAbort = () => {
          this.#unanswered.delete(rec);
          rec.abortedIn = rec.state;
          rec.state = 'aborted';
          // Like the real client: undici reports the abort through a queued callback and the client awaits it,
          // so the rejection comes a few ticks after abort() returns, never inside it.
          setImmediate(() => reject(aborted()));
        };
        signal.addEventListener('abort', onAbort, { once: true });
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
    let gotBytes!: () => void;
    const firstByte = new Promise<void>((res) => (gotBytes = res)); // never rejects, as in the real client
    const onAbort = () => {
      if (!this.#open.has(live)) return;
      rec.abortedIn = rec.state;
      rec.state = 'aborted';
      live.cleanup();
      reject(aborted());
    };
    const live: Live = {
      rec,
      gotBytes,
      resolve,
      reject,
      timer: undefined,
      cleanup: () => {
        this.#unanswered.delete(rec);
        this.#open.delete(live);
        this.#waiting.delete(live);
        if (live.timer) clearTimeout(live.timer);
        live.timer = undefined;
        signal.removeEventListener('abort', onAbort);
      },
    };
    this.#open.add(live);
    this.#track(rec);
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
    return Promise.resolve({ etcdIndex: rec.etcdIndex, clusterId: 'fake-cluster', event, firstByte });
  }

  #track(rec: WatchRecord): void {
    this.#unanswered.add(rec);
    this.maxConcurrentWatches = Math.max(this.maxConcurrentWatches, this.#unanswered.size);
  }

  #send(live: Live, ev: EtcdEvent): void {
    const rule = this.#bodyDelays.get(ev.node.modifiedIndex);
    const delay = rule && (!rule.only || rule.only(live.rec)) ? rule.ms : this.#bodyLatency;
    live.rec.state = 'sending';
    if (this.#truncated.has(ev.node.modifiedIndex)) {
      const only = this.#truncated.get(ev.node.modifiedIndex);
      if (!only || only(live.rec)) {
        live.timer = setTimeout(() => live.gotBytes(), delay); // the rest never comes
        return;
      }
    }
    if (delay > 0) live.timer = setTimeout(() => this.#finish(live, ev), delay);
    else this.#finish(live, ev);
  }

  #finish(live: Live, ev: EtcdEvent | null): void {
    if (!this.#open.has(live) || live.rec.dead) return;
    live.timer = undefined;
    live.rec.state = ev ? 'delivered' : 'empty';
    live.rec.delivered = ev;
    live.cleanup();
    live.gotBytes();
    live.resolve(ev);
  }

  /** A plain read: only its X-Etcd-Index matters to the poller (the synchronous mode's 'now'). */
  get(key: string, _opts: { signal?: AbortSignal } = {}): Promise<KeysResult> {
    this.getCount++;
    return Promise.resolve({
      etcdIndex: this.storeIndex,
      clusterId: 'fake-cluster',
      body: { action: 'get', node: { key, dir: true, modifiedIndex: 0, createdIndex: 0 } },
    });
  }

  /** The next `times` stream() calls reject with `error` (an Error, or an etcd error body turned into its typed error). */
  failNextStream(error: Error | { errorCode: number; message?: string; cause?: string; index?: number }, times = 1, httpStatus = 400): void {
    for (let i = 0; i < times; i++) this.#streamScript.push({ kind: 'fail', error: error instanceof Error ? error : etcdErrorFrom(error, httpStatus) });
  }
  /** The next `times` stream() calls never get their headers (until their signal aborts). */
  hangNextStream(times = 1): void {
    for (let i = 0; i < times; i++) this.#streamScript.push({ kind: 'hang' });
  }
  /** The next stream() gets its headers and then never delivers anything (without closing). */
  stallNextStream(): void {
    this.#streamScript.push({ kind: 'stall' });
  }
  /** The next `times` stream() calls get their headers, then their connection breaks after `delayMs`. */
  cutNextStream(error: Error, delayMs = 0, times = 1): void {
    for (let i = 0; i < times; i++) this.#streamScript.push({ kind: 'cut', error, delayMs });
  }
  /** Every stream's copy of the event at `index` reaches the client `ms` after it was written (later events wait behind it). */
  delayStreamEvent(index: number, ms: number): void {
    this.#streamDelays.set(index, ms);
  }
  /** The stream stops delivering without closing: events on the wire and every later one never arrive. */
  stallStream(rec: StreamRecord): void {
    for (const s of this.#liveStreams) {
      if (s.rec !== rec || rec.state !== 'open') continue;
      rec.state = 'stalled';
      s.inflight = [];
      if (s.timer) clearTimeout(s.timer);
      s.timer = undefined;
    }
  }
  /** The stream's connection breaks: events on the wire are lost, next() rejects with `error` after the arrived ones. */
  cutStream(rec: StreamRecord, error: Error): void {
    for (const s of [...this.#liveStreams]) if (s.rec === rec) this.#failStream(s, error, 'cut');
  }

  stream(key: string, opts: { recursive?: boolean; signal: AbortSignal }): Promise<StreamHandle> {
    const rec: StreamRecord = {
      id: this.#nextId++,
      key,
      recursive: opts.recursive === true,
      issuedAt: Date.now(),
      etcdIndex: undefined,
      state: 'connecting',
      received: [],
      consumed: 0,
      abortedIn: undefined,
    };
    this.streams.push(rec);
    const { signal } = opts;
    const behaviour = this.#streamScript.shift();
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
      return new Promise<StreamHandle>((_, reject) => {
        const onAbort = () => {
          rec.abortedIn = rec.state;
          rec.state = 'aborted';
          setImmediate(() => reject(aborted())); // asynchronously, as for a hung watch
        };
        signal.addEventListener('abort', onAbort, { once: true });
      });
    }

    // Registered: X-Etcd-Index is the store index now; every later matching event is sent.
    rec.etcdIndex = this.storeIndex;
    rec.state = behaviour?.kind === 'stall' ? 'stalled' : 'open';
    const onAbort = () => this.#failStream(s, aborted(), 'aborted');
    const s: LiveStream = {
      rec,
      inflight: [],
      timer: undefined,
      lastIndex: rec.etcdIndex,
      failure: null,
      wake: null,
      cleanup: () => {
        this.#liveStreams.delete(s);
        if (s.timer) clearTimeout(s.timer);
        s.timer = undefined;
        s.inflight = [];
        signal.removeEventListener('abort', onAbort);
      },
    };
    this.#liveStreams.add(s);
    signal.addEventListener('abort', onAbort, { once: true });
    if (behaviour?.kind === 'cut') {
      s.timer = setTimeout(() => this.#failStream(s, behaviour.error, 'cut'), behaviour.delayMs);
    }
    const handle: StreamHandle = {
      etcdIndex: rec.etcdIndex,
      lastIndex: () => s.lastIndex,
      next: async () => {
        while (rec.consumed === rec.received.length) {
          if (s.failure) throw s.failure;
          await new Promise<void>((resolve) => (s.wake = resolve));
        }
        return rec.received[rec.consumed++]!;
      },
    };
    return Promise.resolve(handle);
  }

  /** Moves the events that are due from the wire into the client's buffer; re-arms for the next one. */
  #pump(s: LiveStream, force = false): void {
    let moved = false;
    while (s.inflight.length > 0 && (force || s.inflight[0]!.due <= Date.now())) {
      force = false;
      const { ev } = s.inflight.shift()!;
      s.rec.received.push(ev);
      s.lastIndex = Math.max(s.lastIndex, ev.node.modifiedIndex);
      moved = true;
    }
    if (moved) this.#wake(s);
    if (s.inflight.length > 0 && !s.timer) {
      s.timer = setTimeout(() => {
        s.timer = undefined;
        this.#pump(s, true); // the head is due: timers may fire a millisecond before Date.now() agrees
      }, Math.max(0, s.inflight[0]!.due - Date.now()));
    }
  }

  #wake(s: LiveStream): void {
    const w = s.wake;
    s.wake = null;
    w?.();
  }

  #failStream(s: LiveStream, error: Error, state: 'cut' | 'aborted'): void {
    if (!this.#liveStreams.has(s)) return;
    if (state === 'aborted') s.rec.abortedIn = s.rec.state;
    s.rec.state = state;
    s.failure = error;
    s.cleanup();
    this.#wake(s);
  }

  /** Clears every timer and listener the fake holds (for afterEach). */
  close(): void {
    for (const live of [...this.#open]) live.cleanup();
    for (const s of [...this.#liveStreams]) s.cleanup();
  }
}
