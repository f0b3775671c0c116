import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/etcd/errors.js';
import { compileIgnoreRegex, KeyMap, parsePrefix, replicationIndexKey } from '../../src/replication/keys.js';

describe('KeyMap.toDst without --strip: SP/x → DP + SP/x', () => {
  it.each([
    ['/conftool', '/replica', '/conftool/a', '/replica/conftool/a'],
    ['/conftool', '/replica', '/conftool/a/b', '/replica/conftool/a/b'],
    ['/conftool', '/replica', '/conftool', '/replica/conftool'],
    ['/', '/replica', '/a', '/replica/a'],
    ['/', '/replica', '/a/b', '/replica/a/b'],
    ['/', '/replica', '/', '/replica'],
    ['/conftool', '/', '/conftool/a', '/conftool/a'],
    ['/conftool', '/', '/conftool', '/conftool'],
    ['/', '/', '/a', '/a'],
    ['/', '/', '/', '/'],
  ])('src %s, dst %s: %s → %s', (src, dst, key, expected) => {
    expect(new KeyMap(src, dst, false, undefined).toDst(key)).toBe(expected);
  });

  it('maps the source prefix to dstRoot', () => {
    expect(new KeyMap('/conftool', '/replica', false, undefined).dstRoot).toBe('/replica/conftool');
    expect(new KeyMap('/', '/replica', false, undefined).dstRoot).toBe('/replica');
    expect(new KeyMap('/conftool', '/', false, undefined).dstRoot).toBe('/conftool');
  });
});

describe('KeyMap.toDst with --strip: SP/x → DP/x', () => {
  it.each([
    ['/conftool', '/replica', '/conftool/a', '/replica/a'],
    ['/conftool', '/replica', '/conftool/a/b', '/replica/a/b'],
    ['/conftool', '/replica', '/conftool', '/replica'],
    ['/conftool', '/', '/conftool/a', '/a'],
    ['/conftool', '/', '/conftool/a/b', '/a/b'],
    ['/conftool', '/', '/conftool', '/'],
    ['/', '/replica', '/a', '/replica/a'],
    ['/', '/replica', '/', '/replica'],
    ['/', '/', '/a', '/a'],
    ['/a/b', '/c/d', '/a/b/e/f', '/c/d/e/f'],
  ])('src %s, dst %s: %s → %s', (src, dst, key, expected) => {
    expect(new KeyMap(src, dst, true, undefined).toDst(key)).toBe(expected);
  });

  it('keeps POST-generated and unusual segments verbatim', () => {
    const map = new KeyMap('/demo', '/replica', true, undefined);
    expect(map.toDst('/demo/queue/00000000000000000024')).toBe('/replica/queue/00000000000000000024');
    expect(map.toDst('/demo/sp ace/%41')).toBe('/replica/sp ace/%41');
  });

  it('maps the source prefix to dstRoot = the dst prefix', () => {
    expect(new KeyMap('/conftool', '/replica', true, undefined).dstRoot).toBe('/replica');
    expect(new KeyMap('/conftool', '/', true, undefined).dstRoot).toBe('/');
  });
});

describe('KeyMap.toSrc inverts toDst', () => {
  it.each([
    ['/conftool', '/replica', false, '/replica/conftool/a', '/conftool/a'],
    ['/conftool', '/replica', true, '/replica/a', '/conftool/a'],
    ['/conftool', '/', true, '/a', '/conftool/a'],
    ['/conftool', '/', true, '/', '/conftool'],
    ['/', '/replica', false, '/replica', '/'],
    ['/', '/replica', true, '/replica/x/y', '/x/y'],
  ])('src %s, dst %s, strip %s: %s → %s', (src, dst, strip, dstKey, expected) => {
    expect(new KeyMap(src, dst, strip, undefined).toSrc(dstKey)).toBe(expected);
  });

  it('for every prefix pair and key under the source prefix', () => {
    const segment = fc.constantFrom('a', 'b', 'conftool', 'replica', 'sp ace', '%41', 'x_y', '00000000000000000024');
    const path = (max: number) => fc.array(segment, { maxLength: max }).map((s) => '/' + s.join('/'));
    fc.assert(
      fc.property(path(2), path(2), fc.boolean(), fc.array(segment, { maxLength: 3 }), (src, dst, strip, tail) => {
        const map = new KeyMap(src, dst, strip, undefined);
        const key = tail.length === 0 ? src : (src === '/' ? '' : src) + '/' + tail.join('/');

        const mapped = map.toDst(key);

        expect(mapped).not.toContain('//');
        expect(mapped === map.dstRoot || mapped.startsWith(map.dstRoot === '/' ? '/' : map.dstRoot + '/')).toBe(true);
        expect(map.toSrc(mapped)).toBe(key);
      }),
    );
  });
});

describe('replicationIndexKey', () => {
  it.each([
    ['/conftool', '/__replication/conftool'],
    ['/replica', '/__replication/replica'],
    ['/a/b', '/__replication/a/b'],
    ['/', '/__replication/__ROOT__'],
  ])('%s → %s', (dst, expected) => {
    expect(replicationIndexKey(dst)).toBe(expected);
  });

  it('is exposed as KeyMap.indexKey (from the dst prefix, not dstRoot)', () => {
    expect(new KeyMap('/conftool', '/replica', false, undefined).indexKey).toBe('/__replication/replica');
    expect(new KeyMap('/conftool', '/', true, undefined).indexKey).toBe('/__replication/__ROOT__');
  });
});

describe('KeyMap.scope', () => {
  const demo = new KeyMap('/demo', '/replica', false, undefined);

  it('mirrors the prefix itself and keys below it', () => {
    expect(demo.scope('/demo', true, 'set')).toBe('mirrored');
    expect(demo.scope('/demo/a', false, 'set')).toBe('mirrored');
    expect(demo.scope('/demo/a/b/c', false, 'create')).toBe('mirrored');
    expect(demo.scope('/demo', true, 'delete')).toBe('mirrored');
  });

  it('puts a string-prefix match from history outside (/de for /demo)', () => {
    expect(demo.scope('/de', true, 'delete')).toBe('outside');
    expect(demo.scope('/de', false, 'set')).toBe('outside');
  });

  it('puts a sibling with a longer name outside (/demo2/x)', () => {
    expect(demo.scope('/demo2/x', false, 'set')).toBe('outside');
    expect(demo.scope('/demo2', true, 'delete')).toBe('outside');
  });

  describe('ancestors of the prefix', () => {
    const deep = new KeyMap('/a/b/c', '/replica', true, undefined);

    it.each([
      ['/a', 'delete'],
      ['/a/b', 'delete'],
      ['/a', 'expire'],
      ['/a/b', 'expire'],
      ['/a/b', 'compareAndDelete'],
    ])('%s removed by %s (a dir) → ancestor', (key, action) => {
      expect(deep.scope(key, true, action)).toBe('ancestor');
    });

    it('a removal of the root dir is an ancestor of any prefix', () => {
      expect(deep.scope('/', true, 'delete')).toBe('ancestor');
    });

    it.each([
      ['/a', true, 'set'],
      ['/a', true, 'update'],
      ['/a', false, 'delete'],
      ['/a/bx', true, 'delete'],
    ])('%s (dir %s, %s) is outside, not an ancestor removal', (key, dir, action) => {
      expect(deep.scope(key, dir, action)).toBe('outside');
    });
  });

  it.each(['/demo/_x', '/demo/a/_b/c', '/demo/_x/y'])('%s is hidden (a "_" segment below the prefix)', (key) => {
    expect(demo.scope(key, false, 'set')).toBe('hidden');
  });

  it('does not hide a prefix that itself has a "_" segment', () => {
    const hiddenPrefix = new KeyMap('/_demo', '/replica', true, undefined);
    expect(hiddenPrefix.scope('/_demo/a', false, 'set')).toBe('mirrored');
    expect(hiddenPrefix.scope('/_demo/_a', false, 'set')).toBe('hidden');
  });

  it('hides "_" segments anywhere when the prefix is the root', () => {
    expect(new KeyMap('/', '/replica', false, undefined).scope('/_top', false, 'set')).toBe('hidden');
  });

  describe('with --src-ignore-keys-regex "/demo/locks(/.*)?"', () => {
    const map = new KeyMap('/demo', '/replica', false, compileIgnoreRegex('/demo/locks(/.*)?'));

    it.each([
      ['/demo/locks', 'ignored'],
      ['/demo/locks/a', 'ignored'],
      ['/demo/locks/a/b', 'ignored'],
      ['/demo/locksmith', 'mirrored'],
      ['/demo/x/demo/locks', 'mirrored'],
      ['/demo', 'mirrored'],
    ])('%s → %s', (key, expected) => {
      expect(map.scope(key, false, 'set')).toBe(expected);
    });

    it('does not report an outside key as ignored', () => {
      const anywhere = new KeyMap('/demo', '/replica', false, compileIgnoreRegex('.*'));
      expect(anywhere.scope('/other', false, 'set')).toBe('outside');
    });

    it('reports hidden before ignored', () => {
      const locks = new KeyMap('/demo', '/replica', false, compileIgnoreRegex('/demo/.*'));
      expect(locks.scope('/demo/_x', false, 'set')).toBe('hidden');
    });

    it('gives the same answer on repeated calls (no RegExp lastIndex state)', () => {
      const results = Array.from({ length: 4 }, () => map.scope('/demo/locks/a', false, 'set'));
      expect(results).toEqual(['ignored', 'ignored', 'ignored', 'ignored']);
    });
  });
});

describe('KeyMap.ownsDst', () => {
  it('owns dstRoot and keys below it, not hidden keys or other keys', () => {
    const map = new KeyMap('/conftool', '/replica', false, undefined);

    expect(map.ownsDst('/replica/conftool')).toBe(true);
    expect(map.ownsDst('/replica/conftool/a')).toBe(true);
    expect(map.ownsDst('/replica/conftool/_h')).toBe(false);
    expect(map.ownsDst('/replica/conftool2')).toBe(false);
    expect(map.ownsDst('/replica/other')).toBe(false);
    expect(map.ownsDst('/replica')).toBe(false);
  });

  it('never owns the replication index key, whatever the prefixes', () => {
    const prefix = fc.constantFrom('/', '/replica', '/a', '/__replication', '/__replication/x', '/_r');
    const indexLike = fc.constantFrom('', '/__ROOT__', '/replica', '/a', '/a/b', '/x/y/z');
    fc.assert(
      fc.property(prefix, prefix, fc.boolean(), indexLike, (src, dst, strip, tail) => {
        const map = new KeyMap(src, dst, strip, undefined);
        expect(map.ownsDst('/__replication' + tail)).toBe(false);
        expect(map.ownsDst(map.indexKey)).toBe(false);
      }),
    );
  });

  it('with dst "/" owns ordinary root keys but not /__replication/__ROOT__', () => {
    const map = new KeyMap('/conftool', '/', true, undefined);
    expect(map.ownsDst('/a')).toBe(true);
    expect(map.ownsDst('/__replication/__ROOT__')).toBe(false);
    expect(map.ownsDst('/__replication')).toBe(false);
  });
});

describe('parsePrefix and compileIgnoreRegex', () => {
  it('normalizes prefixes', () => {
    expect(parsePrefix('/a/', '--src-prefix')).toBe('/a');
    expect(parsePrefix('/', '--src-prefix')).toBe('/');
  });

  it.each(['', 'a', '/a//b'])('refuses %j with a ConfigError naming the flag', (raw) => {
    expect(() => parsePrefix(raw, '--dst-prefix')).toThrow(ConfigError);
    expect(() => parsePrefix(raw, '--dst-prefix')).toThrow(/--dst-prefix/);
  });

  it('compiles a full-match regex without global/sticky flags', () => {
    const r = compileIgnoreRegex('/a|/b');
    expect(r.flags).toBe('');
    expect(['/a', '/b', '/a/b', '/ab'].map((k) => r.test(k))).toEqual([true, true, false, false]);
  });

  it('refuses an invalid regex with a ConfigError', () => {
    expect(() => compileIgnoreRegex('(')).toThrow(ConfigError);
  });
});
