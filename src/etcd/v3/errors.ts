// Failures of etcd's v3 API. Like the v2 errors: callers match on `code` or `instanceof`, and whether a retry can
// help is a property of the error. Messages name the member (origin) and never carry a password or token.
import { MirrorError, Retryable } from '../errors.js';

/** The history a request or watch needs is gone: resync from a snapshot. Retrying the same request cannot help. */
export class CompactedError extends MirrorError {
  override readonly code = 'EM_ERR_HISTORY_COMPACTED';
  readonly historyLost = true;
  constructor(
    /** The cluster's compaction revision: the oldest revision still readable. */
    readonly compactRevision: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A Txn with more operations than the server's --max-txn-ops (default 128): split it, or change the flag. */
export class TooManyOpsError extends MirrorError {
  override readonly code = 'EM_ERR_V3_TOO_MANY_OPS';
}

/** Wrong user name or password, or no permission: an operator must fix the configuration. */
export class V3AuthError extends MirrorError {
  override readonly code = 'EM_ERR_V3_AUTH';
}

/** Any other failed call: `grpcCode` is the gRPC status code; retryable for transient conditions. */
export class V3RequestError extends MirrorError {
  override readonly code = 'EM_ERR_V3';
  override readonly [Retryable]: boolean;
  constructor(
    message: string,
    readonly grpcCode: number,
    retryable: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this[Retryable] = retryable;
  }
}
