// The `status` summary for the shapes of /state that a tailing v2 mirror does not show: an HA standby, a v3
// source (no event window), a reconcile in progress.
import { describe, expect, it } from 'vitest';
import { renderStatus } from '../../src/cli/status.js';

describe('renderStatus', () => {
  it('an HA standby: its role, who holds the lock, and why it is not ready', () => {
    const out = renderStatus(
      {
        state: 'standby',
        statePath: 'standby.waiting',
        reason: 'standby: active is host-a:8000',
        ready: false,
        readyReason: 'standby: active is host-a:8000',
        role: 'standby',
        ha: { instanceId: 'host-b:8000', holder: 'host-a:8000', heldForSeconds: 12.5 },
        timeline: [],
      },
      'http://host-b:8000',
    );
    expect(out).toMatch(/^role +standby \(instance host-b:8000; lock held by host-a:8000 for 12\.5 s\)$/m);
    expect(out).toMatch(/^ready +no \(standby: active is host-a:8000\)$/m);
    expect(out).not.toContain('transitions');
  });

  it('a fenced instance: the switchover that fenced it', () => {
    const why = 'fenced by a switchover at 2026-12-07T04:00:00.000Z: http://new:2379 is the primary now';
    const out = renderStatus({ state: 'fenced', ready: false, readyReason: `state fenced: ${why}`, reason: why, fenced: why, timeline: [] }, 'http://m:8000');
    expect(out).toMatch(/^state +fenced: fenced by a switchover at 2026-12-07T04:00:00.000Z/m);
    expect(out).toMatch(new RegExp(`^fenced +${why.replaceAll('.', '\\.')}$`, 'm'));
    expect(out).toMatch(/^ready +no$/m);
  });

  it('a v3 source: revisions, no event window; a reconcile in progress; the newest transitions first', () => {
    const out = renderStatus(
      {
        state: 'recovering',
        statePath: 'running.recovering',
        ready: false,
        readyReason: 'state recovering: history compacted',
        reason: 'history compacted',
        position: 'revision',
        sourceIndex: 900,
        appliedIndex: 100,
        headroomEvents: null,
        source: { url: 'https://a:2379', api: 'v3', prefix: '/p' },
        destination: { url: 'https://b:2379', api: 'v3', prefix: '/p' },
        reconcile: { done: 40, total: 100, active: true, keysPerSecond: 20 },
        timeline: Array.from({ length: 8 }, (_, i) => ({ at: `t${i}`, from: `s${i}`, to: `s${i + 1}`, reason: '' })),
      },
      'http://m:8000',
    );
    expect(out).toMatch(/^position +source store revision 900, stored revision 100$/m);
    expect(out).toMatch(/^headroom +no event window \(v3 source/m);
    expect(out).toMatch(/^reconcile +40 of 100 keys, running at 20 keys\/s$/m);
    expect(out).toMatch(/^ready +no$/m);
    const shown = out.split('transitions (newest first)\n')[1]!.trim().split('\n');
    expect(shown.map((l) => l.trim().split(/\s+/)[0])).toEqual(['t7', 't6', 't5', 't4', 't3']);
  });

  it('the auth costs of both sides, and the notices the daemon wants read', () => {
    const message = 'destination uses password auth: ~55 ms of server time per request (a bcrypt check), ceiling ~18 writes/s one at a time; a client certificate with CN=mirror lifts it';
    const out = renderStatus(
      { state: 'tailing', ready: true, auth: { source: { auth: 'certificate', costMs: 0.1, message: null }, destination: { auth: 'password', costMs: 55, message } }, sourceBudget: null, timeline: [] },
      'http://m:8000',
    );
    expect(out).toMatch(/^auth +source certificate \(\+0\.1 ms per request\), destination password \(\+55 ms per request\)$/m);
    expect(out).toContain(`notice`);
    expect(out).toContain(message);
  });

  it('the last audit: equal at a point, or what differed; off when --audit-interval is 0', () => {
    const audit = { lastAt: '2026-12-07T04:00:00.000Z', atIndex: 42, keys: 11, differing: 0, repaired: 0, durationMs: 30, nextAt: '2026-12-07T04:05:00.000Z', running: false };
    expect(renderStatus({ state: 'tailing', position: 'revision', audit, timeline: [] }, 'http://m:8000')).toMatch(/^audit +equal at revision 42, 11 keys \(2026-12-07T04:00:00.000Z\); next 2026-12-07T04:05:00.000Z$/m);
    expect(renderStatus({ state: 'tailing', audit: { ...audit, differing: 3, repaired: 3 }, timeline: [] }, 'http://m:8000')).toMatch(/^audit +3 keys differed, 3 repaired at index 42/m);
    expect(renderStatus({ state: 'tailing', audit: null, timeline: [] }, 'http://m:8000')).toMatch(/^audit +off \(--audit-interval 0\)$/m);
  });
});
