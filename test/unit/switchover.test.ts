// The pure parts of switchover: mapping inversion (every key written on NEW maps back to its key on OLD), the
// keys each step touches, the reverse command line, and the fence poll (on virtual time).
import { afterEach, describe, expect, it, vi } from 'vitest';
import { invertMapping, redactUrl, reverseCommand, SwitchoverRefusedError, switchoverKeys, type Mapping } from '../../src/cli/switchover-plan.js';
import { describeFence, encodeFence, FenceWatch, fenceKey, parseFence } from '../../src/replication/fence.js';
import { KeyMap } from '../../src/replication/keys.js';
import { ByteKeyMap } from '../../src/replication/keyspace.js';

const m = (srcPrefix: string, dstPrefix: string, strip: boolean, ignore?: string): Mapping => ({ srcPrefix, dstPrefix, strip, ignore });

describe('invertMapping', () => {
  const cases: [string, Mapping][] = [
    ['same prefixes, --strip', m('/conftool', '/conftool', true)],
    ['whole keyspace into /', m('/', '/', false)],
    ['--strip into another prefix', m('/conftool', '/replica', true)],
    ['--strip from /', m('/', '/replica', true)],
    ['the reference default: no --strip into /replica', m('/', '/replica', false)],
    ['no --strip, both prefixes', m('/app', '/replica', false)],
    ['no --strip into /', m('/app', '/', false)],
  ];
  const samples = ['', '/a', '/a/b', '/x y/z'];

  it.each(cases)('%s: every key the mirror writes on NEW maps back to its key on OLD', (_, fwd) => {
    const rev = invertMapping(fwd);
    const f = new KeyMap(fwd.srcPrefix, fwd.dstPrefix, fwd.strip, undefined);
    const r = new KeyMap(rev.srcPrefix, rev.dstPrefix, rev.strip, undefined);
    expect(r.srcPrefix).toBe(f.dstRoot);
    expect(r.dstRoot).toBe(fwd.srcPrefix);
    for (const tail of samples) {
      const key = fwd.srcPrefix === '/' ? tail || '/' : fwd.srcPrefix + tail;
      expect(r.toDst(f.toDst(key))).toBe(key);
    }
    // v3 keys map the same way, so both APIs' fences name the same subtree.
    expect(new ByteKeyMap(f).dstRoot.toString()).toBe(f.dstRoot);
  });

  it('gives the operator\'s flags back when reversed twice, where the daemon can spell both directions alike', () => {
    for (const fwd of [m('/conftool', '/conftool', true), m('/conftool', '/replica', true), m('/app', '/', false), m('/', '/', false)]) {
      expect(invertMapping(invertMapping(fwd))).toEqual(fwd);
    }
    // Without --strip into a prefix, the reverse (and so the switch back) needs --strip.
    expect(invertMapping(m('/app', '/replica', false))).toEqual(m('/replica/app', '/app', true));
    expect(invertMapping(invertMapping(m('/app', '/replica', false)))).toEqual(m('/app', '/replica/app', true));
  });

  it('keeps an ignore regex when key names are kept, refuses it when they are renamed', () => {
    expect(invertMapping(m('/conftool', '/conftool', true, '/conftool/locks/.*')).ignore).toBe('/conftool/locks/.*');
    expect(() => invertMapping(m('/conftool', '/replica', true, '.*/x'))).toThrow(SwitchoverRefusedError);
    expect(() => invertMapping(m('/conftool', '/replica', true, '.*/x'))).toThrow(/^mapping: --src-ignore-keys-regex/);
  });
});

describe('switchoverKeys', () => {
  it('names the checkpoints of both directions and the fences by the subtree each direction writes', () => {
    const fwd = m('/app', '/replica', false);
    expect(switchoverKeys(fwd, invertMapping(fwd))).toEqual({
      forwardCheckpoint: '/__replication/replica',
      forwardFence: '/__replication/__FENCE__|replica|app',
      reverseCheckpoint: '/__replication/app',
      reverseFence: '/__replication/__FENCE__|app',
    });
    // Switching back sets the fence the first switchover lifted, and lifts the one it set.
    const back = invertMapping(fwd);
    const keysBack = switchoverKeys(back, invertMapping(back));
    expect(keysBack.forwardFence).toBe(switchoverKeys(fwd, back).reverseFence);
    expect(keysBack.reverseFence).toBe(switchoverKeys(fwd, back).forwardFence);
    expect(fenceKey('/')).toBe('/__replication/__FENCE__');
  });
});

describe('reverseCommand', () => {
  it('exchanges the sides of connection flags, keeps daemon flags, drops --reload, never prints a password', () => {
    const options = [
      { name: 'reload', value: undefined },
      { name: 'src-prefix', value: '/conftool' },
      { name: 'src-ca', value: '/etc/a.pem' },
      { name: 'dst-password-file', value: '/run/dst' },
      { name: 'ha', value: undefined },
      { name: 'instance-id', value: 'host a' },
    ];
    const { line, redacted } = reverseCommand(options, m('/replica/conftool', '/conftool', true), 'v2', 'https://mirror:s3cret@old:2379', 'https://mirror@new:2379,https://mirror@new2:2379');
    expect(line).toBe(
      "etcd-mirror --dst-ca /etc/a.pem --src-password-file /run/dst --ha --instance-id 'host a' --src-prefix /replica/conftool --dst-prefix /conftool --strip https://mirror@new:2379,https://mirror@new2:2379 https://mirror@old:2379",
    );
    expect(redacted).toBe(true);
    expect(line).not.toContain('s3cret');
    expect(redactUrl('http://u:p@a:1,http://u:p@b:2')).toEqual({ url: 'http://u@a:1,http://u@b:2', redacted: true });
  });
});

describe('fence', () => {
  afterEach(() => vi.useRealTimers());

  it('says which switchover fenced the direction', () => {
    const raw = encodeFence({ at: '2026-05-01T10:00:00.000Z', from: 'http://old:2379', to: 'http://new:2379', oldIndex: 42 });
    expect(parseFence(raw)).toEqual({ at: '2026-05-01T10:00:00.000Z', from: 'http://old:2379', to: 'http://new:2379', oldIndex: 42 });
    expect(describeFence(raw)).toMatch(/^fenced by a switchover at 2026-05-01T10:00:00.000Z: http:\/\/new:2379 is the primary now/);
    expect(describeFence('junk')).toMatch(/^fenced by a switchover \(fence key value unreadable/);
  });

  it('polls until the fence appears, tells once, and a failed read is retried', async () => {
    vi.useFakeTimers();
    const answers: (string | null | Error)[] = [null, new Error('unreachable'), null, encodeFence({ at: 't', from: 'a', to: 'b' })];
    let reads = 0;
    const watch = new FenceWatch(async () => {
      const a = answers[Math.min(reads++, answers.length - 1)]!;
      if (a instanceof Error) throw a;
      return a;
    }, 500);
    const told: string[] = [];
    watch.start((r) => told.push(r));
    await vi.advanceTimersByTimeAsync(1_000);
    expect([told, watch.reason]).toEqual([[], null]);
    await vi.advanceTimersByTimeAsync(600);
    expect(told).toHaveLength(1);
    expect(watch.reason).toMatch(/^fenced by a switchover at t/);
    await vi.advanceTimersByTimeAsync(5_000);
    expect([told.length, reads]).toEqual([1, 4]);
    watch.stop();
  });
});
