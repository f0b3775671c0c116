// A failed destination write is retried for that operation before the pipeline is given up: one lost
// connection must not cost a restart (and its source reads). A write that keeps failing becomes one fault that
// names the key. Only failures that answer fast are retried here (a reset or refused connection, an etcd error
// that says "try again"); a destination that does not answer is the machine's to report and back off from.
import { setTimeout as sleep } from 'node:timers/promises';
import { DestinationWriteError, FencedError, isRetryable, UnreachableError } from '../../etcd/errors.js';

export interface RetryPolicy {
  /** Attempts in all, the first included. */
  attempts: number;
  baseMs: number;
  capMs: number;
}

const WRITE_RETRY: RetryPolicy = { attempts: 5, baseMs: 50, capMs: 2_000 };

export async function withWriteRetries(
  what: { key: string; index: number | null },
  write: () => Promise<void>,
  opts: { policy?: RetryPolicy; signal?: AbortSignal; onRetry?: (err: unknown, attempt: number) => void } = {},
): Promise<void> {
  const policy = opts.policy ?? WRITE_RETRY;
  for (let attempt = 1; ; attempt++) {
    try {
      await write();
      return;
    } catch (err) {
      // A fenced write means another instance is active: the machine must hear exactly that, to stand by.
      if (opts.signal?.aborted || err instanceof FencedError) throw err;
      // A link that gives no answer at all (a timeout) is reported at once, as the poller does: the machine's
      // stalled state and its backoff are for that; retrying here would only hide the outage for minutes.
      if (!isRetryable(err) || err instanceof UnreachableError || attempt >= policy.attempts) {
        const at = what.index === null ? '' : ` (source index ${what.index})`;
        const tries = attempt > 1 ? ` after ${attempt} attempts` : '';
        throw new DestinationWriteError(
          `writing ${what.key}${at} to the destination failed${tries}: ${err instanceof Error ? err.message : String(err)}`,
          what.key,
          err,
        );
      }
      opts.onRetry?.(err, attempt);
      // Full jitter: concurrent writes that failed together do not retry together.
      const ceiling = Math.min(policy.capMs, policy.baseMs * 2 ** (attempt - 1));
      await sleep(Math.round(Math.random() * ceiling), undefined, { signal: opts.signal });
    }
  }
}
