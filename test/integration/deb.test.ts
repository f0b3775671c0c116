// The Debian package, end to end: scripts/build-deb.sh builds it; its control fields and file list are checked;
// as root it is installed with dpkg, the installed command runs a real mirror between two etcds (checked with the
// installed `status`), and it is removed and purged again.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/etcd/process.js';
import { b, startV3Pair, v3Tree, values, waitFor } from '../helpers/v3-pair.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string; dependencies: Record<string, string>; devDependencies: Record<string, string> };
const BUILD_TIMEOUT_MS = 600_000;

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}
function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<Result> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}
const must = async (cmd: string, args: string[], timeoutMs?: number): Promise<string> => {
  const r = await run(cmd, args, timeoutMs);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} → ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
};

/** dpkg with the database lock held by someone else (an apt run elsewhere on the machine) is retried, not failed. */
async function dpkg(args: string[]): Promise<Result> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const r = await run('dpkg', args, 120_000);
    if (r.code === 0 || !/lock/i.test(r.stderr) || Date.now() > deadline) return r;
    await new Promise((res) => setTimeout(res, 1_000));
  }
}

let work: string;
let deb: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'etcd-mirror-deb-'));
  const r = await run('bash', [join(ROOT, 'scripts/build-deb.sh'), join(work, 'out')], BUILD_TIMEOUT_MS);
  if (r.code !== 0) throw new Error(`build-deb.sh failed (${r.code}): ${r.stderr.trim().slice(-2000)}`);
  deb = r.stdout.trim().split('\n').pop()!;
}, BUILD_TIMEOUT_MS);
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('scripts/build-deb.sh', () => {
  it('builds etcd-mirror_<version>_all.deb with the control fields a Debian admin package needs', async () => {
    expect(deb).toBe(join(work, 'out', `etcd-mirror_${PKG.version}_all.deb`));
    const field = async (name: string) => (await must('dpkg-deb', ['-f', deb, name])).trim();
    expect(await field('Package')).toBe('etcd-mirror');
    expect(await field('Version')).toBe(PKG.version);
    expect(await field('Architecture')).toBe('all');
    expect(await field('Depends')).toBe('nodejs (>= 20.18)');
    expect(await field('Section')).toBe('admin');
    expect(await field('Priority')).toBe('optional');
    expect(await field('Maintainer')).toMatch(/^.+ <[^<>\s]+@[^<>\s]+>$/);
    expect(await field('Description')).toMatch(/^live mirror of an etcd key prefix/);
    const info = await must('dpkg-deb', ['-I', deb]);
    for (const file of ['conffiles', 'control', 'postinst', 'prerm', 'postrm']) expect(info).toMatch(new RegExp(`\\s${file}\\s`));
    expect((await must('dpkg-deb', ['-I', deb, 'conffiles'])).trim()).toBe('/etc/etcd-mirror/etcd-mirror.env');
    // The maintainer scripts never start the service.
    const postinst = await must('dpkg-deb', ['-I', deb, 'postinst']);
    expect(postinst).not.toMatch(/systemctl (start|enable|restart)\b/);
    expect(postinst).toContain('[ -d /run/systemd/system ]');
  });

  it('holds the command, the unit, the root-only settings file, the alert rules, the dashboard and the production dependencies only', async () => {
    const entries = new Map<string, { mode: string; owner: string }>();
    for (const line of (await must('dpkg-deb', ['-c', deb])).split('\n').filter(Boolean)) {
      const [mode, owner, , , , path] = line.split(/\s+/);
      entries.set(path!.replace(/^\.\//, '/').replace(/\/$/, ''), { mode: mode!, owner: owner! });
    }
    const has = (path: string) => expect(entries.has(path), path).toBe(true);
    expect(entries.get('/usr/bin/etcd-mirror')?.mode).toBe('-rwxr-xr-x');
    expect(entries.get('/etc/etcd-mirror/etcd-mirror.env')).toEqual({ mode: '-rw-------', owner: 'root/root' });
    expect([...entries.values()].filter((e) => e.owner !== 'root/root')).toEqual([]);
    for (const path of [
      '/lib/systemd/system/etcd-mirror.service',
      '/usr/share/etcd-mirror/prometheus-alerts.yml',
      '/usr/share/etcd-mirror/grafana-dashboard.json',
      '/usr/share/doc/etcd-mirror/copyright',
      '/usr/lib/etcd-mirror/bin/etcd-mirror.js',
      '/usr/lib/etcd-mirror/package.json',
      '/usr/lib/etcd-mirror/dist/src/cli/cli.js',
      '/usr/lib/etcd-mirror/dist/src/bundle/cli.js',
      '/usr/lib/etcd-mirror/dist/src/cli/status.js',
      '/usr/lib/etcd-mirror/dist/machines/lifecycle.js',
      '/usr/lib/etcd-mirror/src/etcd/v3/proto/rpc.proto',
    ]) {
      has(path);
    }
    for (const dep of Object.keys(PKG.dependencies)) has(`/usr/lib/etcd-mirror/node_modules/${dep}/package.json`);
    // @types/node is left out: protobufjs depends on it at run time.
    for (const dev of Object.keys(PKG.devDependencies).filter((d) => d !== '@types/node')) {
      expect(entries.has(`/usr/lib/etcd-mirror/node_modules/${dev}`), dev).toBe(false);
    }
    expect([...entries.keys()].filter((p) => p.endsWith('.ts') && !p.includes('/node_modules/'))).toEqual([]);
  });

  it('the packaged unit and settings are contrib/ (its unit runs /usr/bin/etcd-mirror); the tree runs unpacked', async () => {
    const tree = join(work, 'tree');
    await must('dpkg-deb', ['-x', deb, tree]);
    const unit = readFileSync(join(tree, 'lib/systemd/system/etcd-mirror.service'), 'utf8');
    expect(unit).toBe(readFileSync(join(ROOT, 'contrib/etcd-mirror.service'), 'utf8'));
    expect(unit).toMatch(/^ExecStart=\/usr\/bin\/etcd-mirror /m);
    expect(readFileSync(join(tree, 'etc/etcd-mirror/etcd-mirror.env'), 'utf8')).toBe(readFileSync(join(ROOT, 'contrib/etcd-mirror.env'), 'utf8'));
    const version = await must(process.execPath, [join(tree, 'usr/lib/etcd-mirror/bin/etcd-mirror.js'), '--version']);
    expect(version.trim()).toBe(PKG.version);
  });
});

const isRoot = process.getuid?.() === 0;
const nodeDeb = isRoot ? await run('dpkg-query', ['-W', '-f', '${Version}', 'nodejs']) : null;
const nodeDebOk = nodeDeb?.code === 0 && (await run('dpkg', ['--compare-versions', nodeDeb.stdout.trim(), 'ge', '20.18'])).code === 0;
const skipWhy = !isRoot
  ? 'not root (dpkg -i needs root)'
  : !nodeDebOk
    ? `no nodejs >= 20.18 Debian package is installed (dpkg-query says ${JSON.stringify(nodeDeb?.stdout.trim() || nodeDeb?.stderr.trim())}), so Depends cannot be met`
    : null;
const title = `dpkg -i, the installed command, dpkg -r, dpkg --purge${skipWhy ? ` — SKIPPED: ${skipWhy}` : ''}`;
if (skipWhy) console.warn(`deb.test.ts: ${title}`);

describe.skipIf(skipWhy !== null)(title, () => {
  const daemons = new Set<ChildProcess>();
  let installed = false;
  // A test that failed half-way leaves neither a daemon nor the package (nor its conffile) behind.
  afterAll(async () => {
    for (const p of daemons) p.kill('SIGKILL');
    if (installed) await dpkg(['--purge', 'etcd-mirror']);
  });

  it('installs; /usr/bin/etcd-mirror prints its version and help and runs a v3 mirror its own `status` reports ready; removes and purges', async () => {
    installed = true;
    const install = await dpkg(['-i', deb]);
    // A dependency problem is reported as it is, never forced.
    expect(install.code, `dpkg -i: ${install.stderr}`).toBe(0);
    try {
      expect(statSync('/etc/etcd-mirror/etcd-mirror.env').mode & 0o777).toBe(0o600);
      const version = await run('/usr/bin/etcd-mirror', ['--version']);
      expect(version).toEqual({ code: 0, stdout: `${PKG.version}\n`, stderr: '' });
      const help = await run('/usr/bin/etcd-mirror', ['--help']);
      expect(help.code).toBe(0);
      expect(help.stdout).toMatch(/^usage: etcd-mirror /);
      expect(help.stdout).toContain('etcd-mirror status [URL]');

      // v3 → v3 loads etcd's protos from the package: the one non-JavaScript file the daemon needs.
      const pair = await startV3Pair();
      try {
        await pair.s.put(b('/deb/a'), b('1'));
        const port = await freePort();
        const daemon = spawn(
          '/usr/bin/etcd-mirror',
          ['--port', String(port), '--listen-address', '127.0.0.1', '--src-api', 'v3', '--dst-api', 'v3', '--reload', '--src-prefix', '/deb', '--dst-prefix', '/deb', '--strip', pair.src.clientUrl, pair.dst.clientUrl],
          { stdio: ['ignore', 'ignore', 'pipe'] },
        );
        daemons.add(daemon);
        let stderr = '';
        daemon.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
        const exited = new Promise<number | null>((resolve) => daemon.on('exit', (code) => resolve(code)));
        const ready = await waitFor(async () => {
          if (daemon.exitCode !== null) throw new Error(`the installed daemon exited (${daemon.exitCode}): ${stderr}`);
          const s = await run('/usr/bin/etcd-mirror', ['status', `http://127.0.0.1:${port}`]);
          return s.code === 0 ? s : undefined;
        }, 'the installed daemon to be ready');
        expect(ready.stdout).toMatch(/^state +tailing/m);
        expect(ready.stdout).toMatch(/^source +\S+ \(v3\), prefix \/deb/m);
        await pair.s.put(b('/deb/b'), b('2'));
        await waitFor(async () => (values(await v3Tree(pair.d, '/deb'))['/deb/b'] === '2' ? true : undefined), '/deb/b on the destination');
        expect(values(await v3Tree(pair.d, '/deb'))).toEqual({ '/deb/a': '1', '/deb/b': '2' });
        daemon.kill('SIGTERM');
        expect(await exited).toBe(0);
        daemons.delete(daemon);
      } finally {
        await pair.stop();
      }
    } finally {
      const remove = await dpkg(['-r', 'etcd-mirror']);
      expect(remove.code, `dpkg -r: ${remove.stderr}`).toBe(0);
    }
    for (const path of ['/usr/bin/etcd-mirror', '/usr/lib/etcd-mirror', '/lib/systemd/system/etcd-mirror.service']) expect(existsSync(path), path).toBe(false);
    // dpkg -r keeps conffiles; --purge removes them.
    expect(existsSync('/etc/etcd-mirror/etcd-mirror.env')).toBe(true);
    expect((await run('dpkg-query', ['-W', '-f', '${Status}', 'etcd-mirror'])).stdout).toBe('deinstall ok config-files');
    const purge = await dpkg(['--purge', 'etcd-mirror']);
    expect(purge.code, `dpkg --purge: ${purge.stderr}`).toBe(0);
    expect(existsSync('/etc/etcd-mirror/etcd-mirror.env')).toBe(false);
  }, 300_000);
});
