// Every failure the etcd client can produce. Callers match on `code` or `instanceof`, never on message text;
// whether a retry can help is a property of the error, not of the caller.
import type { FaultInfo } from '../../machines/types.js';

export const Retryable = Symbol('etcdmirror.retryable');

export class MirrorError extends Error {
  readonly code: string = 'EM_ERR';
  readonly [Retryable]: boolean = false;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

export const isRetryable = (err: unknown): boolean =>
  typeof err === 'object' && err !== null && Retryable in err && (err as { [Retryable]: boolean })[Retryable] === true;

/** An error body from /v2/keys: `{errorCode, message, cause, index}`. */
export class EtcdError extends MirrorError {
  override readonly code: string = 'EM_ERR_ETCD';
  /** Which cluster answered (origin only, never credentials). */
  origin: string | undefined;

  /** Called by the client: names the cluster in the message. */
  setOrigin(origin: string): this {
    this.origin = origin;
    this.message = `${origin}: ${this.message}`;
    return this;
  }
  constructor(
    readonly errorCode: number,
    readonly etcdMessage: string,
    readonly etcdCause: string,
    /** Current store index of the cluster that answered (0 for validation errors). */
    readonly etcdIndex: number,
    readonly httpStatus: number,
  ) {
    super(`etcd error ${errorCode}: ${etcdMessage}${etcdCause ? ` (${etcdCause})` : ''}`);
  }
}

export class KeyNotFoundError extends EtcdError { override readonly code = 'EM_ERR_KEY_NOT_FOUND'; }
export class CompareFailedError extends EtcdError { override readonly code = 'EM_ERR_COMPARE_FAILED'; }
export class NotAFileError extends EtcdError { override readonly code = 'EM_ERR_NOT_A_FILE'; }
export class NotADirectoryError extends EtcdError { override readonly code = 'EM_ERR_NOT_A_DIRECTORY'; }
export class NodeExistError extends EtcdError { override readonly code = 'EM_ERR_NODE_EXIST'; }
export class RootReadOnlyError extends EtcdError { override readonly code = 'EM_ERR_ROOT_READ_ONLY'; }
export class DirNotEmptyError extends EtcdError { override readonly code = 'EM_ERR_DIR_NOT_EMPTY'; }
export class UnauthorizedError extends EtcdError {
  override readonly code = 'EM_ERR_UNAUTHORIZED';
  constructor(...args: ConstructorParameters<typeof EtcdError>) {
    super(...args);
    this.message = 'request refused (errorCode 110): wrong user or password, or no permission on this path';
  }
}
export class RaftInternalError extends EtcdError {
  override readonly code = 'EM_ERR_RAFT_INTERNAL';
  override readonly [Retryable] = true;
}
export class LeaderElectError extends EtcdError {
  override readonly code = 'EM_ERR_LEADER_ELECT';
  override readonly [Retryable] = true;
}
/** errorCode 400: the server dropped the watcher; re-issue the same watch. */
export class WatcherClearedError extends EtcdError {
  override readonly code = 'EM_ERR_WATCHER_CLEARED';
  override readonly [Retryable] = true;
}
/** errorCode 401 (sent with HTTP 400): waitIndex fell out of the 1000-event history window. */
export class EventIndexClearedError extends EtcdError {
  override readonly code = 'EM_ERR_EVENT_INDEX_CLEARED';
  readonly historyLost = true;
  /** Oldest index still in the source's history, parsed from `cause` ("... [oldest/requested]"). */
  get oldestIndex(): number | undefined {
    const m = /\[(\d+)\/(\d+)\]/.exec(this.etcdCause);
    return m ? Number(m[1]) : undefined;
  }
}

const byErrorCode: Record<number, new (...a: ConstructorParameters<typeof EtcdError>) => EtcdError> = {
  100: KeyNotFoundError,
  101: CompareFailedError,
  102: NotAFileError,
  104: NotADirectoryError,
  105: NodeExistError,
  107: RootReadOnlyError,
  108: DirNotEmptyError,
  110: UnauthorizedError,
  300: RaftInternalError,
  301: LeaderElectError,
  400: WatcherClearedError,
  401: EventIndexClearedError,
};

export function etcdErrorFrom(
  body: { errorCode: number; message?: string; cause?: string; index?: number },
  httpStatus: number,
): EtcdError {
  const Ctor = byErrorCode[body.errorCode] ?? EtcdError;
  return new Ctor(body.errorCode, body.message ?? '', body.cause ?? '', body.index ?? 0, httpStatus);
}

/** Network-level failure (refused, reset, timeout, TLS): always worth retrying. */
export class TransportError extends MirrorError {
  override readonly code: string = 'EM_ERR_TRANSPORT';
  override readonly [Retryable] = true;
}

/** No answer at all within the time allowed (a partition, a blackholed link): worth retrying, but not at once. */
export class UnreachableError extends TransportError {
  override readonly code = 'EM_ERR_UNREACHABLE';
}

/** TLS verification failed (unknown CA, expired or mismatched certificate): configuration, not a transient fault. */
export class TlsError extends MirrorError {
  override readonly code = 'EM_ERR_TLS';
}

/** A member answered for another cluster than the others: its indexes would mean nothing here. */
export class ClusterIdMismatchError extends MirrorError {
  override readonly code = 'EM_ERR_CLUSTER_ID_MISMATCH';
}

/** Something answered that is not etcd's v2 API (a proxy page, a 5xx, a 301 for a bad path). */
export class UnexpectedResponseError extends MirrorError {
  override readonly code = 'EM_ERR_UNEXPECTED_RESPONSE';
  override readonly [Retryable]: boolean;
  constructor(
    message: string,
    readonly httpStatus: number,
    retryable: boolean,
  ) {
    super(message);
    this[Retryable] = retryable;
  }
}

/** Bad flags or arguments: reported as one line on stderr, exit 2. */
export class ConfigError extends MirrorError {
  override readonly code = 'EM_ERR_CONFIG';
}

/** The reconcile would delete too much of the replica; an operator must confirm with --allow-mass-delete. */
export class MassDeleteRefusedError extends MirrorError {
  override readonly code = 'EM_ERR_MASS_DELETE_REFUSED';
}

/** A destination write that kept failing for one key; retryable when its cause is. */
export class DestinationWriteError extends MirrorError {
  override readonly code = 'EM_ERR_DESTINATION_WRITE';
  override readonly [Retryable]: boolean;
  constructor(
    message: string,
    readonly key: string,
    cause: unknown,
  ) {
    super(message, { cause });
    this[Retryable] = isRetryable(cause);
  }
}

/** The source's history does not contain the stored replication index: another cluster, or a restored one. */
export class SourceHistoryMismatchError extends MirrorError {
  override readonly code = 'EM_ERR_SOURCE_HISTORY_MISMATCH';
}

/** The stored replication index is not a decimal number: an operator must look (`etcd-mirror index set`). */
export class BadCheckpointError extends MirrorError {
  override readonly code = 'EM_ERR_BAD_INDEX';
}

/** An audit gave up on its point (the mirror stopped tailing, did not catch up, or too much changed meanwhile): it
 * counts as aborted and is tried again at the next interval, never as a difference. */
export class AuditAbortedError extends MirrorError {
  override readonly code = 'EM_ERR_AUDIT_ABORTED';
}

/** --ha: a write refused by its fence (another instance holds the lock now). Never retried: this one stands by. */
export class FencedError extends MirrorError {
  override readonly code: string = 'EM_ERR_FENCED';
  readonly fenced = true;
}

/**
 * The destination carries a switchover's fence for this direction (src/replication/fence.ts): the replica became
 * the primary, so this mirror must not write into it again. A FencedError so that no retry loop retries it.
 */
export class SwitchoverFencedError extends FencedError {
  override readonly code = 'EM_ERR_SWITCHOVER_FENCED';
  readonly switchover = true;
}

/** A request given up because its caller aborted it (a stopping run). */
export class AbortedError extends Error {
  readonly code = 'EM_ERR_ABORTED';
}

/** A key etcd would answer with a redirect (relative, '//', '.', '..'): never sent. */
export class InvalidKeyError extends Error {
  readonly code = 'EM_ERR_INVALID_KEY';
}

/** What the lifecycle machine is told of a failure: its code, whether a retry may help, and the etcd details. */
export function faultFrom(err: unknown): FaultInfo {
  const e = err as { code?: unknown; message?: unknown; errorCode?: unknown; etcdIndex?: unknown; historyLost?: unknown; fenced?: unknown; switchover?: unknown };
  const fault: FaultInfo = {
    code: typeof e?.code === 'string' ? e.code : 'EM_ERR',
    message: err instanceof Error ? err.message : String(err),
    retryable: isRetryable(err),
  };
  if (typeof e?.errorCode === 'number') fault.errorCode = e.errorCode;
  if (typeof e?.etcdIndex === 'number') fault.etcdIndex = e.etcdIndex;
  if (e?.historyLost === true) fault.historyLost = true;
  if (e?.fenced === true) fault.fenced = true;
  if (e?.switchover === true) fault.switchover = true;
  return fault;
}

/** A source watch delivered an event that a quiet proof had ruled out: only a snapshot can tell what is true. */
export class ResyncNeededError extends MirrorError {
  override readonly code = 'EM_ERR_RESYNC_NEEDED';
  readonly historyLost = true;
  constructor(
    message: string,
    /** First index of the contradicted claim: the stored index must stay below it. */
    readonly claimFrom: number,
  ) {
    super(message);
  }
}
