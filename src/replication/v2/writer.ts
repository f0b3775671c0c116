// The writer: applies destination operations concurrently while keeping source order wherever it matters,
// and tracks the checkpoint — the highest source index below which everything is applied.
//
// Two orderings:
// - 'strict': ops start in push order, one at a time — or, for ops marked `pipelined` (one request each, handed
//   to one ordered connection that sends and the destination serves one request after the other), up to
//   `pipelineDepth` queued behind each other. The destination then passes only through states the source had, in
//   source order (a write is visible only after every earlier one is).
// - 'key': ops on unrelated keys overlap. A value op (one key and, implicitly, its parent dirs) waits for every
//   earlier unfinished value op on the same key, an ancestor or a descendant; a subtree op (mkdir, recursive
//   delete, clearRoot) is a barrier: it starts when everything before it is done, and everything after it waits.
// Both keep the checkpoint contiguous: it only passes an op once the op and everything before it are applied.

export interface WriteItem {
  /** Source modifiedIndex (or proof index for markers). Strictly increasing across pushes. */
  index: number;
  /** Absent for markers: indexes proven to hold nothing to write (other prefixes, ignored keys, quiet watches). */
  /** `run(onLane)`: true when the op is to be sent on the ordered lane (strict order, pipelined). */
  op?: { key: string; subtree: boolean; run: (onLane: boolean) => Promise<void>; pipelined?: boolean };
}

interface Slot {
  seq: number;
  index: number;
  key: string | undefined;
  subtree: boolean;
  run: ((onLane: boolean) => Promise<void>) | undefined;
  pipelined: boolean;
  /** Started in strict order as a pipelined op. */
  onLane: boolean;
  state: 'waiting' | 'running' | 'done';
}

function ancestorsAndSelf(key: string): string[] {
  const out = ['/'];
  if (key === '/') return out;
  let i = key.indexOf('/', 1);
  while (i !== -1) {
    out.push(key.slice(0, i));
    i = key.indexOf('/', i + 1);
  }
  out.push(key);
  return out;
}

function enqueue(map: Map<string, number[]>, key: string, seq: number): void {
  const fifo = map.get(key);
  if (fifo) fifo.push(seq);
  else map.set(key, [seq]);
}

function dequeue(map: Map<string, number[]>, key: string, seq: number): void {
  const fifo = map.get(key)!;
  fifo.splice(fifo.indexOf(seq), 1);
  if (fifo.length === 0) map.delete(key);
}

export type WriteOrdering = 'strict' | 'key';

export interface WriterOptions {
  concurrency: number;
  /** @default 'key' */
  ordering?: WriteOrdering;
  /** Strict: how many `pipelined` ops may be on the wire behind each other. @default 1 */
  pipelineDepth?: number;
  /** Called when an op starts before an earlier one is applied (it may become visible out of source order). */
  onReordered?: () => void;
  /** Called once per failed op; the writer stops starting new work afterwards. */
  onError: (err: unknown, index: number) => void;
  /** Called after the checkpoint advanced. */
  onCheckpoint?: (index: number) => void;
  /** Lookahead: how many waiting items are examined for a free one. */
  lookahead?: number;
}

export class OrderedWriter {
  #seq = 0;
  /** All not-yet-retired slots in push order (front = oldest unfinished). */
  readonly #queue: Slot[] = [];
  #head = 0;
  readonly #waiting: Slot[] = [];
  /** Unfinished value ops by exact key, as FIFO of seq numbers. */
  readonly #valueOps = new Map<string, number[]>();
  /** Unfinished value ops at or below each path, as FIFO of seq numbers. */
  readonly #valueOpsBelow = new Map<string, number[]>();
  /** Unfinished barriers, seq ascending. */
  readonly #barriers: number[] = [];
  #running = 0;
  /** Running ops that are not `pipelined`: in strict order nothing may start beside one. */
  #runningPlain = 0;
  #failed = false;
  #checkpoint: number;
  #idleWaiters: (() => void)[] = [];
  #roomWaiters: { below: number; resolve: () => void }[] = [];
  readonly #opts: Required<WriterOptions>;
  #ordering: WriteOrdering;

  constructor(startIndex: number, opts: WriterOptions) {
    this.#checkpoint = startIndex;
    this.#opts = { onCheckpoint: () => {}, onReordered: () => {}, lookahead: 1024, ordering: 'key', pipelineDepth: 1, ...opts };
    this.#ordering = this.#opts.ordering;
  }

  get ordering(): WriteOrdering {
    return this.#ordering;
  }

  /** Switches the ordering for ops not started yet. */
  setOrdering(ordering: WriteOrdering): void {
    if (ordering === this.#ordering) return;
    this.#ordering = ordering;
    this.#pump();
  }

  get checkpoint(): number {
    return this.#checkpoint;
  }
  /** Items pushed and not yet retired (events in flight or waiting). */
  get size(): number {
    return this.#queue.length - this.#head;
  }
  get inFlight(): number {
    return this.#running;
  }
  get failed(): boolean {
    return this.#failed;
  }

  push(item: WriteItem): void {
    const last = this.#lastIndex();
    if (item.index <= last) throw new Error(`writer: index ${item.index} pushed after ${last}`);
    this.#enqueue(item);
  }

  /**
   * Runs `run` with nothing else in flight: after everything pushed so far is applied, before anything pushed
   * later starts. It has no source index of its own, so the checkpoint does not move for it.
   */
  pushBarrier(run: () => Promise<void>): void {
    this.#enqueue({ index: this.#lastIndex(), op: { key: '/', subtree: true, run } });
  }

  /**
   * An op on one key without a source index of its own (the TTL keeper's refresh): ordered after every earlier
   * op on that key, its ancestors and descendants, before later ones; the checkpoint does not move for it.
   */
  pushKeyed(key: string, run: () => Promise<void>): void {
    this.#enqueue({ index: this.#lastIndex(), op: { key, subtree: false, run } });
  }

  #lastIndex(): number {
    return this.#queue.length > this.#head ? this.#queue[this.#queue.length - 1]!.index : this.#checkpoint;
  }

  #enqueue(item: WriteItem): void {
    const slot: Slot = {
      seq: this.#seq++,
      index: item.index,
      key: item.op?.key,
      subtree: item.op?.subtree ?? false,
      run: item.op?.run,
      pipelined: item.op?.pipelined === true && !item.op.subtree,
      onLane: false,
      state: item.op ? 'waiting' : 'done',
    };
    this.#queue.push(slot);
    if (slot.state === 'done') {
      this.#retire();
      return;
    }
    if (slot.subtree) this.#barriers.push(slot.seq);
    else {
      enqueue(this.#valueOps, slot.key!, slot.seq);
      for (const path of ancestorsAndSelf(slot.key!)) enqueue(this.#valueOpsBelow, path, slot.seq);
    }
    this.#waiting.push(slot);
    this.#pump();
  }

  /** Resolves when fewer than `n` items are unretired (backpressure for the poller). */
  async waitForRoom(n: number): Promise<void> {
    if (this.size < n || this.#failed) return;
    await new Promise<void>((resolve) => this.#roomWaiters.push({ below: n, resolve }));
  }

  /** Resolves when nothing is running (waiting items are not started once the writer has failed). */
  async idle(): Promise<void> {
    if (this.#running === 0 && (this.#waiting.length === 0 || this.#failed)) return;
    await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Stop starting new work; running ops finish. */
  halt(): void {
    this.#failed = true;
    this.#notify();
  }

  #canStart(slot: Slot): boolean {
    const oldest = this.#queue[this.#head]?.seq === slot.seq;
    if (this.#ordering === 'strict') {
      if (this.#running === 0) return oldest;
      // Behind running pipelined ops: only the next one in push order, only pipelined, only so deep.
      return slot.pipelined && this.#runningPlain === 0 && this.#running < this.#opts.pipelineDepth && this.#waiting[0] === slot;
    }
    const firstBarrier = this.#barriers[0];
    // A barrier starts once everything before it is done, i.e. it is the oldest unretired slot.
    if (slot.subtree) return oldest;
    if (firstBarrier !== undefined && firstBarrier < slot.seq) return false;
    const below = this.#valueOpsBelow.get(slot.key!)?.[0];
    if (below !== undefined && below < slot.seq) return false;
    for (const k of ancestorsAndSelf(slot.key!)) {
      const head = this.#valueOps.get(k)?.[0];
      if (head !== undefined && head < slot.seq) return false;
    }
    return true;
  }

  #pump(): void {
    if (this.#failed) return;
    let examined = 0;
    for (let i = 0; i < this.#waiting.length && this.#running < this.#opts.concurrency; i++) {
      if (++examined > this.#opts.lookahead) break;
      const slot = this.#waiting[i]!;
      if (!this.#canStart(slot)) {
        if (slot.subtree || this.#ordering === 'strict') break; // nothing after a waiting barrier may start
        continue;
      }
      this.#waiting.splice(i--, 1);
      this.#start(slot);
    }
  }

  #start(slot: Slot): void {
    slot.onLane = this.#ordering === 'strict' && slot.pipelined;
    // Lane ops start behind running ones but are applied in order: that is not reordering.
    if (this.#queue[this.#head]?.seq !== slot.seq && !slot.onLane) this.#opts.onReordered();
    slot.state = 'running';
    this.#running++;
    if (!slot.onLane) this.#runningPlain++;
    slot.run!(slot.onLane).then(
      () => this.#finish(slot, undefined),
      (err: unknown) => this.#finish(slot, err ?? new Error('write failed')),
    );
  }

  #finish(slot: Slot, err: unknown): void {
    this.#running--;
    if (!slot.onLane) this.#runningPlain--;
    if (err !== undefined) {
      slot.state = 'waiting'; // not applied: the checkpoint must not pass it
      if (!this.#failed) {
        this.#failed = true;
        this.#opts.onError(err, slot.index);
      }
      this.#notify();
      return;
    }
    slot.state = 'done';
    if (slot.subtree) this.#barriers.splice(this.#barriers.indexOf(slot.seq), 1);
    else {
      dequeue(this.#valueOps, slot.key!, slot.seq);
      for (const path of ancestorsAndSelf(slot.key!)) dequeue(this.#valueOpsBelow, path, slot.seq);
    }
    this.#retire();
    this.#pump();
    this.#notify();
  }

  #retire(): void {
    let advanced = false;
    while (this.#head < this.#queue.length && this.#queue[this.#head]!.state === 'done') {
      this.#checkpoint = this.#queue[this.#head]!.index;
      this.#head++;
      advanced = true;
    }
    if (this.#head > 4096 && this.#head * 2 > this.#queue.length) {
      this.#queue.splice(0, this.#head);
      this.#head = 0;
    }
    if (advanced) this.#opts.onCheckpoint(this.#checkpoint);
    this.#notify();
  }

  #notify(): void {
    if (this.#roomWaiters.length) {
      const keep: { below: number; resolve: () => void }[] = [];
      for (const w of this.#roomWaiters) (this.size < w.below || this.#failed ? w.resolve() : keep.push(w));
      this.#roomWaiters = keep;
    }
    if (this.#running === 0 && (this.#waiting.length === 0 || this.#failed) && this.#idleWaiters.length) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const w of waiters) w();
    }
  }
}
