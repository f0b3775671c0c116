// A gRPC status (or a watch's cancel reason) as one of the typed errors of errors.ts, and what a status says about
// the request: whether it may be sent again, whether the token should be renewed.
import * as grpc from '@grpc/grpc-js';
import type { MirrorError } from '../errors.js';
import { TooManyOpsError, V3AuthError, V3RequestError } from './errors.js';

interface GrpcStatus { code: number; details: string }

export const isGrpcStatus = (err: unknown): err is GrpcStatus =>
  typeof err === 'object' && err !== null && typeof (err as GrpcStatus).code === 'number' && typeof (err as GrpcStatus).details === 'string';

/** Replies after which a new token may succeed: expired or unknown (member restarted), or none sent yet. */
export const TOKEN_STALE = /invalid auth token|user name is empty|revision of auth store is old/;
const AUTH_REFUSED = /authentication failed|permission denied|invalid auth token|user name is empty|user name not found/;
const TRANSIENT = /leader changed|no leader|too many requests|request timed out|RST_STREAM/;
const COMPACTED = 'required revision has been compacted';

export function errorFrom(status: GrpcStatus, origin: string, what: string): MirrorError {
  const message = `${origin}: ${what}: ${status.details || grpc.status[status.code]}`;
  if (status.details.includes('too many operations in txn request')) return new TooManyOpsError(message);
  if (status.code === grpc.status.PERMISSION_DENIED || status.code === grpc.status.UNAUTHENTICATED || AUTH_REFUSED.test(status.details)) {
    return new V3AuthError(message);
  }
  const transient = status.code === grpc.status.UNAVAILABLE || status.code === grpc.status.DEADLINE_EXCEEDED || TRANSIENT.test(status.details);
  return new V3RequestError(message, status.code, transient);
}

/** Failures that prove the request never reached a server: a write may be sent again. */
export const provenNotSent = (s: GrpcStatus): boolean =>
  s.code === grpc.status.UNAVAILABLE && (s.details.startsWith('No connection established') || s.details === 'Stream refused by server');

export const isCompactedReply = (err: unknown): boolean =>
  err instanceof V3RequestError && err.grpcCode === grpc.status.OUT_OF_RANGE && err.message.includes(COMPACTED);

/** A watch cancel reason is a gRPC error's text ("rpc error: code = PermissionDenied desc = etcdserver: ..."). */
export function errorFromCancel(reason: string, origin: string): MirrorError {
  const m = /code = (\w+) desc = (.*)$/s.exec(reason);
  const codeName = (m?.[1] ?? '').replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase() as keyof typeof grpc.status;
  const code = typeof grpc.status[codeName] === 'number' ? (grpc.status[codeName] as number) : grpc.status.UNKNOWN;
  return errorFrom({ code, details: m?.[2] ?? (reason || 'canceled by the server without a reason') }, origin, 'watch canceled');
}
