// The deploy files under contrib/ must stay true to the code: alert rules only use metrics the daemon exports.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { createMetrics, STATES } from '../../src/daemon/metrics.js';

const read = (file: string) => readFileSync(new URL(`../../contrib/${file}`, import.meta.url), 'utf8');

describe('contrib/prometheus-alerts.yml', () => {
  it('uses only metric names that the daemon exports', async () => {
    const exported = new Set((await createMetrics({ url: 'http://x:1', prefix: '/p' }).registry.getMetricsAsJSON()).map((m) => m.name));
    const used = new Set(read('prometheus-alerts.yml').match(/\betcdmirror_[a-z_]+/g));
    expect(used.size).toBeGreaterThanOrEqual(6);
    expect([...used].filter((name) => !exported.has(name))).toEqual([]);
  });

  it('matches only state labels that etcdmirror_state has', () => {
    const states = [...read('prometheus-alerts.yml').matchAll(/state=~?"([^"]+)"/g)].flatMap((m) => m[1]!.split('|'));
    expect(states.length).toBeGreaterThanOrEqual(3);
    expect(states.filter((s) => !(STATES as readonly string[]).includes(s))).toEqual([]);
  });
});

describe('contrib/prometheus-alerts.yml, --ha', () => {
  it('pages when no instance is active and when two claim to be', () => {
    const rules = read('prometheus-alerts.yml');
    expect(rules).toMatch(/alert: EtcdMirrorNoActiveInstance\n\s+expr: .*etcdmirror_ha_role\{[^}]*role="active"\}/);
    expect(rules).toMatch(/alert: EtcdMirrorTwoActive\n\s+expr: sum\(etcdmirror_ha_role\{[^}]*role="active"\}\) > 1/);
  });
});

describe('contrib/etcd-mirror.service', () => {
  it('restarts on failure, but not on bad configuration, and is hardened', () => {
    const unit = read('etcd-mirror.service');
    for (const line of ['Restart=on-failure', 'RestartPreventExitStatus=2', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'ProtectHome=yes', 'PrivateTmp=yes', 'DynamicUser=yes']) {
      expect(unit.split('\n')).toContain(line);
    }
    expect(unit).not.toMatch(/^ExecStart=.*--reload/m);
  });
});

describe('contrib/etcd-mirror.service and contrib/etcd-mirror.env: passwords', () => {
  it('come from files through systemd credentials, never from the URLs or the command line', () => {
    const unit = read('etcd-mirror.service');
    const env = read('etcd-mirror.env');
    const lines = unit.split('\n');
    expect(lines).toContain('LoadCredential=src-password:/etc/etcd-mirror/src.password');
    expect(lines).toContain('LoadCredential=dst-password:/etc/etcd-mirror/dst.password');
    const exec = lines.find((l) => l.startsWith('ExecStart='));
    expect(exec).toContain('--src-password-file ${CREDENTIALS_DIRECTORY}/src-password');
    expect(exec).toContain('--dst-password-file ${CREDENTIALS_DIRECTORY}/dst-password');
    // No user:password@ in any URL, example or not.
    for (const text of [unit, env]) expect(text).not.toMatch(/\/\/[^\s/@:]+:[^\s/@]+@/);
    expect(env).toMatch(/^#?ETCD_MIRROR_SRC=https:\/\/mirror@etcd\.[^\s:]+:2379$/m);
    expect(env).toMatch(/^#?ETCD_MIRROR_DST=https:\/\/mirror@etcd\.[^\s:]+:2379$/m);
  });
});
