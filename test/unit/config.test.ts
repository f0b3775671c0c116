import { describe, expect, it } from 'vitest';
import { parseConfig, type Config } from '../../src/cli/config.js';
import { ConfigError } from '../../src/etcd/errors.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const SRC = 'http://127.0.0.1:2379';
const DST = 'http://127.0.0.1:2380';
const PASSWORD = 'S3cr3t-PW';

/** Parses a `run` command line and returns its config. */
function run(...argv: string[]): Config {
  const parsed = parseConfig(argv);
  if (parsed.kind !== 'run') throw new Error(`expected kind run, got ${parsed.kind}`);
  return parsed.config;
}

/** Parses `argv` expecting a ConfigError, and returns it. */
function refused(...argv: string[]): ConfigError {
  try {
    parseConfig(argv);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error(`expected a ConfigError for ${JSON.stringify(argv)}`);
}

describe('parseConfig: defaults', () => {
  it('uses the reference defaults with just SRC and DST', () => {
    const c = run(SRC, DST);

    expect(c.src.origin).toBe(SRC);
    expect(c.dst.origin).toBe(DST);
    expect(c.srcPrefix).toBe('/');
    expect(c.dstPrefix).toBe('/replica');
    expect(c.strip).toBe(false);
    expect(c.ignoreRegex).toBeUndefined();
    expect(c.reload).toBe(false);
    expect(c.port).toBe(8000);
    expect(c.debug).toBe(false);
  });

  it('uses the documented defaults for our own options', () => {
    const c = run(SRC, DST);

    expect(c.listenAddress).toBe('0.0.0.0');
    expect(c.allowMassDelete).toBe(false);
    expect(c.massDeleteRatio).toBe(0.5);
    expect(c.writeConcurrency).toBe(16);
    expect(c.checkpointMs).toBe(100);
    expect(c.quietRearmMs).toBe(100);
    expect(c.ordering).toBe('adaptive');
  });

  it.each(['strict', 'adaptive', 'key'])('accepts --ordering %s', (mode) => {
    expect(run('--ordering', mode, SRC, DST).ordering).toBe(mode);
  });

  it('returns a frozen config', () => {
    expect(Object.isFrozen(run(SRC, DST))).toBe(true);
  });
});

describe('parseConfig: flags', () => {
  it('reads the reference flags', () => {
    const c = run('-d', '--reload', '--src-prefix', '/conftool', '--dst-prefix', '/mirror', '--strip', '--port', '9100', SRC, DST);

    expect(c.debug).toBe(true);
    expect(c.reload).toBe(true);
    expect(c.srcPrefix).toBe('/conftool');
    expect(c.dstPrefix).toBe('/mirror');
    expect(c.strip).toBe(true);
    expect(c.port).toBe(9100);
  });

  it('accepts --flag=value and positionals before flags', () => {
    const c = run(SRC, DST, '--src-prefix=/a', '--debug');
    expect(c.srcPrefix).toBe('/a');
    expect(c.debug).toBe(true);
  });

  it('reads our own flags', () => {
    const c = run(
      '--listen-address', '127.0.0.1',
      '--allow-mass-delete',
      '--mass-delete-ratio', '0.25',
      '--write-concurrency', '4',
      '--checkpoint-ms', '250',
      SRC, DST,
    );

    expect(c.listenAddress).toBe('127.0.0.1');
    expect(c.allowMassDelete).toBe(true);
    expect(c.massDeleteRatio).toBe(0.25);
    expect(c.writeConcurrency).toBe(4);
    expect(c.checkpointMs).toBe(250);
  });

  it('normalizes a trailing slash on prefixes', () => {
    const c = run('--src-prefix', '/conftool/', '--dst-prefix', '/replica/', SRC, DST);
    expect(c.srcPrefix).toBe('/conftool');
    expect(c.dstPrefix).toBe('/replica');
  });

  it.each([
    ['--port', 'abc'],
    ['--port', '-1'],
    ['--port', '65536'],
    ['--port', '80.5'],
    ['--write-concurrency', '0'],
    ['--write-concurrency', '257'],
    ['--checkpoint-ms', '5'],
    ['--quiet-rearm-ms', '10'],
    ['--mass-delete-ratio', '1.5'],
    ['--mass-delete-ratio', 'half'],
    ['--ordering', 'fast'],
  ])('refuses %s %j', (flag, value) => {
    expect(refused(flag, value, SRC, DST).message).toContain(flag);
  });

  it('returns kind help for --help and -h, without needing SRC/DST', () => {
    expect(parseConfig(['--help'])).toEqual({ kind: 'help' });
    expect(parseConfig(['-h'])).toEqual({ kind: 'help' });
    expect(parseConfig(['-h', SRC, DST])).toEqual({ kind: 'help' });
  });

  it('returns kind version for --version', () => {
    expect(parseConfig(['--version'])).toEqual({ kind: 'version' });
  });

  it('refuses an unknown flag, naming it', () => {
    expect(refused('--bogus', SRC, DST).message).toContain('--bogus');
  });

  it('refuses a value for a boolean flag', () => {
    refused('--strip=yes', SRC, DST);
  });

  it('refuses a string flag without its value', () => {
    refused(SRC, DST, '--src-prefix');
  });

  it.each([[[]], [[SRC]], [[SRC, DST, 'http://127.0.0.1:2381']]])('refuses %j: exactly two positionals', (positionals) => {
    expect(refused(...positionals).message).toMatch(/exactly two arguments/);
  });
});

describe('parseConfig: prefixes', () => {
  it.each(['conftool', 'conftool/x', './conftool'])('refuses the relative --src-prefix %j', (prefix) => {
    expect(refused('--src-prefix', prefix, SRC, DST).message).toMatch(/--src-prefix.*absolute/);
  });

  it('refuses a relative --dst-prefix', () => {
    expect(refused('--dst-prefix', 'replica', SRC, DST).message).toMatch(/--dst-prefix/);
  });

  it.each(['--src-prefix', '--dst-prefix'])('refuses an empty %s', (flag) => {
    expect(refused(`${flag}=`, SRC, DST).message).toMatch(/empty prefix/);
  });

  it.each(['/a//b', '/a/./b', '/a/../b'])('refuses the prefix %j that etcd would redirect', (prefix) => {
    expect(refused('--src-prefix', prefix, SRC, DST).message).toContain('--src-prefix');
  });

  it('accepts the root as either prefix on different clusters', () => {
    const c = run('--src-prefix', '/', '--dst-prefix', '/', SRC, DST);
    expect(c.srcPrefix).toBe('/');
    expect(c.dstPrefix).toBe('/');
  });
});

describe('parseConfig: --src-ignore-keys-regex', () => {
  const regex = (source: string): RegExp => {
    const r = run('--src-ignore-keys-regex', source, SRC, DST).ignoreRegex;
    if (!r) throw new Error('no regex');
    return r;
  };

  it('matches the whole key (Python re.fullmatch), with the production value', () => {
    const r = regex('/spicerack/locks/etcd(/.*)?');

    expect(r.test('/spicerack/locks/etcd')).toBe(true);
    expect(r.test('/spicerack/locks/etcd/host1')).toBe(true);
    expect(r.test('/spicerack/locks/etcdx')).toBe(false);
    expect(r.test('/x/spicerack/locks/etcd')).toBe(false);
    expect(r.test('/spicerack/locks/et')).toBe(false);
  });

  it('anchors alternations as a whole, not only their first and last branch', () => {
    const r = regex('/a|/b');

    expect(r.test('/a')).toBe(true);
    expect(r.test('/b')).toBe(true);
    expect(r.test('/a/x')).toBe(false);
    expect(r.test('/x/b')).toBe(false);
  });

  it('accepts Python named groups (?P<name>...) and backreferences (?P=name)', () => {
    const r = regex('/(?P<svc>[a-z]+)/locks/(?P=svc)');

    expect(r.test('/dns/locks/dns')).toBe(true);
    expect(r.test('/dns/locks/web')).toBe(false);
  });

  it.each(['(', '[a-', '/a(?P<x>', '*'])('refuses the invalid regex %j', (source) => {
    expect(refused('--src-ignore-keys-regex', source, SRC, DST).message).toMatch(/--src-ignore-keys-regex/);
  });
});

describe('parseConfig: same cluster', () => {
  it('refuses the defaults on one cluster (/ into /replica feeds on itself)', () => {
    expect(refused(SRC, SRC).message).toMatch(/same cluster/);
  });

  it.each([
    ['/a', '/a/copy', true],
    ['/a', '/a', true],
    ['/a/b', '/a', true],
    ['/a', '/', false],
    ['/', '/replica', true],
    ['/a', '/a', false],
  ])('refuses --src-prefix %s --dst-prefix %s (strip: %s) on one cluster', (src, dst, strip) => {
    const flags = ['--src-prefix', src, '--dst-prefix', dst, ...(strip ? ['--strip'] : [])];
    expect(refused(...flags, SRC, SRC).message).toMatch(/same cluster/);
  });

  it.each([
    ['/a', '/b', true],
    ['/a', '/b', false],
    ['/a', '/ab', true],
    ['/conftool', '/replica', false],
  ])('allows disjoint --src-prefix %s --dst-prefix %s (strip: %s) on one cluster', (src, dst, strip) => {
    const flags = ['--src-prefix', src, '--dst-prefix', dst, ...(strip ? ['--strip'] : [])];
    expect(run(...flags, SRC, SRC).srcPrefix).toBe(src);
  });

  it('compares clusters by origin, ignoring credentials', () => {
    expect(refused('http://a:pw1@127.0.0.1:2379', 'http://b:pw2@127.0.0.1:2379').message).toMatch(/same cluster/);
  });

  it('allows overlapping prefixes on different clusters', () => {
    expect(run('--src-prefix', '/a', '--dst-prefix', '/a', '--strip', SRC, DST).dstPrefix).toBe('/a');
  });
});

describe('parseConfig: messages never contain a password', () => {
  const SRC_PW = `http://mirror:${PASSWORD}@127.0.0.1:2379`;
  const DST_PW = `http://mirror:${PASSWORD}@127.0.0.1:2380`;

  it.each([
    ['same cluster', [SRC_PW, SRC_PW]],
    ['missing port in SRC', [`http://mirror:${PASSWORD}@127.0.0.1`, DST_PW]],
    ['path in DST', [SRC_PW, `http://mirror:${PASSWORD}@127.0.0.1:2380/v2`]],
    ['bad scheme', [`ftp://mirror:${PASSWORD}@127.0.0.1:21`, DST_PW]],
    ['unparsable URL', [`http://mirror:${PASSWORD}@[::1:2379`, DST_PW]],
    ['three positionals', [SRC_PW, DST_PW, SRC_PW]],
    ['one positional', [SRC_PW]],
    ['unknown flag', ['--bogus', SRC_PW, DST_PW]],
    ['unknown flag with a value', [`--bogus=${SRC_PW}`, SRC_PW, DST_PW]],
    ['bad regex', ['--src-ignore-keys-regex', '(', SRC_PW, DST_PW]],
    ['bad port', ['--port', 'x', SRC_PW, DST_PW]],
    ['relative prefix', ['--src-prefix', 'a', SRC_PW, DST_PW]],
  ])('%s', (_what, argv) => {
    const err = refused(...argv);
    expect(err.message).not.toContain(PASSWORD);
    expect(err.stack ?? '').not.toContain(PASSWORD);
  });

  it('keeps the password only in the endpoint, never in the origin', () => {
    const c = run(SRC_PW, DST_PW);
    expect(c.src.members[0]!.password).toBe(PASSWORD);
    expect(c.src.origin).toBe('http://127.0.0.1:2379');
    expect(c.dst.origin).toBe('http://127.0.0.1:2380');
  });
});

describe('parseConfig: password files and the source request budget', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'etcd-mirror-config-'));
  const file = (name: string, content: string) => {
    const f = path.join(dir, name);
    writeFileSync(f, content);
    return f;
  };

  it('gives the file content (one trailing newline dropped) to the user named in the URL, on every member', () => {
    const c = run('--src-password-file', file('a', `${PASSWORD}\n`), `http://mirror@127.0.0.1:2379,http://127.0.0.1:2381`, DST);
    expect(c.src.members.map((m) => [m.username, m.password])).toEqual([['mirror', PASSWORD], ['mirror', PASSWORD]]);
    expect(c.src.origin).not.toContain(PASSWORD);
    expect(run('--dst-password-file', file('b', 'two\n\n'), SRC, 'http://m@127.0.0.1:2380').dst.members[0]!.password).toBe('two\n');
  });

  it('an empty file for a URL without a user means no password; every other mismatch is refused in one line', () => {
    expect(run('--src-password-file', file('empty', '\n'), SRC, DST).src.members[0]!.password).toBeUndefined();
    expect(refused('--src-password-file', file('c', 'x'), SRC, DST).message).toBe('--src-password-file: SRC names no user (scheme://user@host:port)');
    expect(refused('--dst-password-file', file('d', 'x'), SRC, `http://m:${PASSWORD}@127.0.0.1:2380`).message).toBe('--dst-password-file: DST carries a password too; give it in one place');
    expect(refused('--dst-password-file', file('e', ''), SRC, 'http://m@127.0.0.1:2380').message).toBe('--dst-password-file: the file is empty, but DST names user "m"');
    expect(refused('--src-password-file', path.join(dir, 'none'), SRC, DST).message).toMatch(/^--src-password-file: cannot read .*none: ENOENT$/);
  });

  it('--src-request-budget: default 5 a second, 0 for no limit', () => {
    expect(run(SRC, DST).srcRequestBudget).toBe(5);
    expect(run('--src-request-budget', '0', SRC, DST).srcRequestBudget).toBe(0);
    expect(refused('--src-request-budget=2000', SRC, DST).message).toBe('--src-request-budget: expected an integer from 0 to 1000');
  });

  it('--audit-interval: default 300 seconds, 0 turns the audit off', () => {
    expect(run(SRC, DST).auditIntervalSeconds).toBe(300);
    expect(run('--audit-interval', '0', SRC, DST).auditIntervalSeconds).toBe(0);
    expect(refused('--audit-interval=1.5', SRC, DST).message).toBe('--audit-interval: expected an integer from 0 to 86400');
  });

  it('--lag-growth-ms: default 10 s, from 1 s', () => {
    expect(run(SRC, DST).lagGrowthMs).toBe(10_000);
    expect(run('--lag-growth-ms', '2000', SRC, DST).lagGrowthMs).toBe(2_000);
    expect(refused('--lag-growth-ms=500', SRC, DST).message).toBe('--lag-growth-ms: expected an integer from 1000 to 600000');
  });
});
