// One full garbage collection, asked for after a snapshot was reconciled. While a reload or resync runs, the whole
// prefix is live (the source's entries and the destination's), and V8 sets its next major-collection threshold
// from that peak: with the snapshot dropped, the garbage of ordinary replication then piles up to about twice the
// peak before V8 collects (measured: a 130,000-key resync, then 30 s of 2,400 events/s, heap 166 → 248 MB, RSS
// 429 MB, with no major GC until it was reached). Collecting once, right after, sets the threshold from what is
// live then. Node exposes `gc` only behind --expose-gc, which can be turned on at run time for a new context.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let gc: (() => void) | undefined;

export function collectGarbage(): void {
  if (!gc) {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  gc();
}
