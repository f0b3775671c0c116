// The daemon's side of the consistency audit (src/replication/audit.ts): every --audit-interval seconds while
// tailing, counted in the etcdmirror_audit_* metrics and shown on /state.
import type { Config } from '../cli/config.js';
import type { Backend } from '../replication/backend.js';
import { AuditScheduler, runAudit } from '../replication/audit.js';
import type { HaGate } from '../replication/ports.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';

export function startAudit(config: Config, backend: Backend<HaGate>, log: Logger, metrics: Metrics, tailing: () => boolean): AuditScheduler | null {
  if (config.auditIntervalSeconds === 0) return null;
  const { reader, engine } = backend.audit;
  const scheduler = new AuditScheduler({
    intervalMs: config.auditIntervalSeconds * 1000,
    ready: () => tailing() && engine.applied() !== null,
    run: (signal) => runAudit({ reader, engine, guard: { allowMassDelete: config.allowMassDelete, massDeleteRatio: config.massDeleteRatio }, log }, signal),
    finished: (r) => {
      metrics.auditRuns.labels({ result: r.result }).inc();
      metrics.auditDifferences.inc(r.differing);
      if (r.result === 'equal') metrics.auditLastEqual.set(Date.now() / 1000);
      if (r.result !== 'aborted') metrics.auditKeys.set(r.keys);
      else log.warn({ reason: r.reason }, 'audit aborted; tried again at the next interval');
    },
  });
  scheduler.start();
  return scheduler;
}
