// Which destination write may start, and the checkpoint: pure bookkeeping (no I/O, no timers, no callbacks) that
// the writer (writer.ts) consults after each push and each finished write, as the poller consults sequencer.ts.
//
// Two orderings:
// - 'strict': writes start in push order, one at a time — or, for writes marked `pipelined` (one request each,
//   handed to one ordered connection that sends and the destination serves one request after the other), up to
//   `pipelineDepth` queued behind each other. The destination then passes only through states the source had, in
//   source order (a write is visible only after every earlier one is).
// - 'key': writes on unrelated keys overlap. A value write (one key and, implicitly, its parent dirs) waits for
//   every earlier unfinished value write on the same key, an ancestor or a descendant; a subtree write (mkdir,
//   recursive delete, clearRoot, a heal's barrier) starts when everything before it is done, and everything after
//   it waits.
// Both keep the checkpoint contiguous: it only passes a write once it and everything before it are applied.

export type WriteOrdering = 'strict' | 'key';

/** What a write touches: a value write on `key`, or (`subtree`) everything at and below it. */
export interface Footprint {
  key: string;
  subtree: boolean;
  /** One request that may go on the ordered connection in strict order. */
  pipelined?: boolean;
}

interface Slot<T> {
  seq: number;
  index: number;
  key: string;
  subtree: boolean;
  pipelined: boolean;
  /** Started in strict order as a pipelined write. */
  onLane: boolean;
  state: 'waiting' | 'running' | 'done';
  work: T | undefined;
}

/** A write to start now: its handle for done()/fail(), and its work as pushed. */
export interface Start<T> {
  seq: number;
  work: T;
  /** Send it on the ordered connection (strict order, pipelined). */
  onLane: boolean;
  /** It starts before an earlier write is applied: it may become visible out of source order. */
  reordered: boolean;
}

export interface OrderOptions {
  concurrency: number;
  /** @default 'key' */
  ordering?: WriteOrdering;
  /** Strict: how many `pipelined` writes may be on the wire behind each other. @default 1 */
  pipelineDepth?: number;
  /** How many waiting writes are examined for a free one. @default 1024 */
  lookahead?: number;
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

export class WriteOrder<T> {
  #seq = 0;
  /** All not-yet-retired slots in push order (front = oldest unfinished). */
  readonly #queue: Slot<T>[] = [];
  #head = 0;
  readonly #waiting: Slot<T>[] = [];
  /** Running slots by seq. */
  readonly #running = new Map<number, Slot<T>>();
  /** Unfinished value writes by exact key, as FIFO of seq numbers. */
  readonly #valueOps = new Map<string, number[]>();
  /** Unfinished value writes at or below each path, as FIFO of seq numbers. */
  readonly #valueOpsBelow = new Map<string, number[]>();
  /** Unfinished subtree writes, seq ascending. */
  readonly #barriers: number[] = [];
  /** Running writes not on the lane: in strict order nothing may start beside one. */
  #runningPlain = 0;
  #failed = false;
  #checkpoint: number;
  #ordering: WriteOrdering;
  readonly #opts: Required<OrderOptions>;

  constructor(startIndex: number, opts: OrderOptions) {
    this.#checkpoint = startIndex;
    this.#opts = { lookahead: 1024, ordering: 'key', pipelineDepth: 1, ...opts };
    this.#ordering = this.#opts.ordering;
  }

  get ordering(): WriteOrdering {
    return this.#ordering;
  }
  /** For writes not started yet. */
  set ordering(ordering: WriteOrdering) {
    this.#ordering = ordering;
  }
  /** The highest index with it and everything pushed before it applied. */
  get checkpoint(): number {
    return this.#checkpoint;
  }
  /** Items pushed and not yet retired. */
  get size(): number {
    return this.#queue.length - this.#head;
  }
  get inFlight(): number {
    return this.#running.size;
  }
  get failed(): boolean {
    return this.#failed;
  }
  /** Nothing running, and nothing waiting that may still start. */
  get idle(): boolean {
    return this.#running.size === 0 && (this.#waiting.length === 0 || this.#failed);
  }
  /** The index of the last item pushed (the checkpoint when none waits). */
  get lastIndex(): number {
    return this.#queue.length > this.#head ? this.#queue[this.#queue.length - 1]!.index : this.#checkpoint;
  }

  /** Adds an item: a write (`work` with its footprint), or with neither a marker, applied at once. */
  add(index: number, footprint?: Footprint, work?: T): void {
    const slot: Slot<T> = {
      seq: this.#seq++,
      index,
      key: footprint?.key ?? '/',
      subtree: footprint?.subtree ?? false,
      pipelined: footprint?.pipelined === true && !footprint.subtree,
      onLane: false,
      state: footprint ? 'waiting' : 'done',
      work,
    };
    this.#queue.push(slot);
    if (slot.state === 'done') {
      this.#retire();
      return;
    }
    if (slot.subtree) this.#barriers.push(slot.seq);
    else {
      enqueue(this.#valueOps, slot.key, slot.seq);
      for (const path of ancestorsAndSelf(slot.key)) enqueue(this.#valueOpsBelow, path, slot.seq);
    }
    this.#waiting.push(slot);
  }

  /** The writes that may start now, marked running. None once failed. */
  next(): Start<T>[] {
    const out: Start<T>[] = [];
    if (this.#failed) return out;
    let examined = 0;
    for (let i = 0; i < this.#waiting.length && this.#running.size < this.#opts.concurrency; i++) {
      if (++examined > this.#opts.lookahead) break;
      const slot = this.#waiting[i]!;
      if (!this.#canStart(slot)) {
        if (slot.subtree || this.#ordering === 'strict') break; // nothing after a waiting barrier may start
        continue;
      }
      this.#waiting.splice(i--, 1);
      slot.onLane = this.#ordering === 'strict' && slot.pipelined;
      slot.state = 'running';
      this.#running.set(slot.seq, slot);
      if (!slot.onLane) this.#runningPlain++;
      // Lane writes start behind running ones but are applied in order: that is not reordering.
      const reordered = this.#queue[this.#head]?.seq !== slot.seq && !slot.onLane;
      out.push({ seq: slot.seq, work: slot.work!, onLane: slot.onLane, reordered });
    }
    return out;
  }

  /** A started write is applied. */
  done(seq: number): void {
    const slot = this.#stop(seq);
    slot.state = 'done';
    if (slot.subtree) this.#barriers.splice(this.#barriers.indexOf(slot.seq), 1);
    else {
      dequeue(this.#valueOps, slot.key, slot.seq);
      for (const path of ancestorsAndSelf(slot.key)) dequeue(this.#valueOpsBelow, path, slot.seq);
    }
    this.#retire();
  }

  /** A started write failed for good: nothing starts any more. True for the first failure. */
  fail(seq: number): boolean {
    const slot = this.#stop(seq);
    slot.state = 'waiting'; // not applied: the checkpoint must not pass it
    if (this.#failed) return false;
    this.#failed = true;
    return true;
  }

  /** Start nothing more; running writes finish. */
  halt(): void {
    this.#failed = true;
  }

  #stop(seq: number): Slot<T> {
    const slot = this.#running.get(seq)!;
    this.#running.delete(seq);
    if (!slot.onLane) this.#runningPlain--;
    return slot;
  }

  #canStart(slot: Slot<T>): boolean {
    const oldest = this.#queue[this.#head]?.seq === slot.seq;
    if (this.#ordering === 'strict') {
      if (this.#running.size === 0) return oldest;
      // Behind running pipelined writes: only the next one in push order, only pipelined, only so deep.
      return slot.pipelined && this.#runningPlain === 0 && this.#running.size < this.#opts.pipelineDepth && this.#waiting[0] === slot;
    }
    const firstBarrier = this.#barriers[0];
    // A barrier starts once everything before it is done, i.e. it is the oldest unretired slot.
    if (slot.subtree) return oldest;
    if (firstBarrier !== undefined && firstBarrier < slot.seq) return false;
    const below = this.#valueOpsBelow.get(slot.key)?.[0];
    if (below !== undefined && below < slot.seq) return false;
    for (const k of ancestorsAndSelf(slot.key)) {
      const head = this.#valueOps.get(k)?.[0];
      if (head !== undefined && head < slot.seq) return false;
    }
    return true;
  }

  #retire(): void {
    while (this.#head < this.#queue.length && this.#queue[this.#head]!.state === 'done') {
      this.#checkpoint = this.#queue[this.#head]!.index;
      this.#head++;
    }
    if (this.#head > 4096 && this.#head * 2 > this.#queue.length) {
      this.#queue.splice(0, this.#head);
      this.#head = 0;
    }
  }
}
