// etcd v2's history window: how far the stored replication index may fall behind before a restart cannot resume.

/** etcd v2 keeps the last 1000 events of the whole store; a watch from an older index gets error 401. */
export const HISTORY_WINDOW_EVENTS = 1000;

/** Events the source may still take before the stored replication index falls out of etcd's history window. */
export function windowHeadroom(lagEvents: number | null): number | null {
  return lagEvents === null ? null : Math.max(0, HISTORY_WINDOW_EVENTS - lagEvents);
}
