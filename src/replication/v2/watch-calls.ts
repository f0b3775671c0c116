// The poller's watch calls (poller.ts, proofs.ts): a time limit that aborts the request and reports the source
// unreachable, an abort tied to a parent's, and a wait that ends with the poller.
import type { EtcdClient, WatchHandle } from '../../etcd/v2/client.js';
import type { EtcdEvent } from '../../etcd/v2/decode.js';
import { UnreachableError } from '../../etcd/errors.js';
import type { Clock } from './clock.js';

export type Linked = AbortController & { dispose(): void };

/**
 * The watch's event once its body has started (or, for a long-poll that waits for the future, whenever it comes).
 * A body that starts must finish: one that stops half-way is a dead link.
 */
export async function bodyOf(handle: WatchHandle, started: boolean, ms: number, src: EtcdClient, ctl: AbortController, clock: Clock): Promise<EtcdEvent | null> {
  if (!started) return handle.event;
  return within(handle.event, ms, src, ctl, clock);
}

export async function within<T>(request: Promise<T>, ms: number, src: EtcdClient, ctl: AbortController, clock: Clock): Promise<T> {
  let cancel: (() => void) | undefined;
  const timeout = new Promise<never>((_, reject) => {
    cancel = clock.after(ms, () => {
      ctl.abort();
      reject(new UnreachableError(`${src.origin}: a watch got no answer within ${ms} ms`));
    });
  });
  try {
    return await Promise.race([request, timeout]);
  } finally {
    cancel?.();
  }
}

/**
 * An AbortController that also aborts when `parent` does; dispose() unhooks it. Not AbortSignal.any: a signal
 * combined with a long-lived parent stays referenced by it in Node 20 (nodejs/node#55351, fixed upstream only in
 * 2026, #64481), and the poller derives several per second from its own lifetime's signal.
 */
export function linked(parent: AbortSignal): Linked {
  const c = new AbortController() as Linked;
  const onAbort = () => c.abort();
  parent.addEventListener('abort', onAbort, { once: true });
  if (parent.aborted) c.abort();
  c.dispose = () => parent.removeEventListener('abort', onAbort);
  return c;
}

/** Backpressure waits must not outlive the poller. */
export async function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted();
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([p, aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort!);
  }
}
