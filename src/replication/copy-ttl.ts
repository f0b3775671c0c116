// How long a destination copy of an expiring source key (a v2 TTL key, a key on a v3 lease) is given: the
// source's remaining time plus a margin, for every destination kind. A copy must never disappear while its
// source key exists. While the mirror runs, the copy goes when the source's own removal (a v2 `expire`, the
// deletes of a v3 lease's expiry or revoke) is replayed, at the source's moment, like any other delete; its own
// expiry is the fallback that keeps a dead mirror from leaving immortal copies (lock keys) behind.
//
// The margin covers, each at its worst:
//   - the source removing an expired key late: etcd's v2 store and v3 lessor look for expired keys and leases
//     every 500 ms, and the removal is then a raft commit ........................................... 0.5 s
//   - the estimate of the source's clock, against which a v2 `expiration` is read (`Date` headers have 1 s
//     resolution; the estimate's half-width is at most 0.5 s after one answer: src/etcd/v2/clock.ts) .... 0.5 s
//   - refreshes the mirror only sees by reading: the v2 TTL keeper's 1 s tick (and the write that follows); a
//     refresh just before the old expiration reaches the copy one tick later ............................ 1 s
//   - the replication delay of the source's removal, so that the copy goes by that replayed delete rather than
//     by its own timer while the mirror keeps up ........................................................ 1 s
// Whole-second rounding only lengthens copies: a v2 TTL is rounded up, and a v3 destination lease is granted
// (and reset by each keepalive) to the source lease's granted TTL, never to its truncated remainder.
// Bounded: a copy the mirror stops refreshing outlives its source key by at most the margin (plus rounding);
// copies are never made permanent.
export const COPY_TTL_MARGIN_S = 3;

/**
 * Whole seconds to give a destination copy whose source key has `sourceRemainingS` seconds left. A source key
 * that was read or written still exists whatever an estimate of its remaining time says (≤ 0: its removal
 * follows as an event), so it never gets less than the margin.
 */
export function copyTtl(sourceRemainingS: number): number {
  return Math.max(0, Math.ceil(sourceRemainingS)) + COPY_TTL_MARGIN_S;
}
