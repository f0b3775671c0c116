import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InvalidKeyError } from '../../../src/etcd/errors.js';
import {
  isHiddenBelow,
  isWithin,
  joinKey,
  keySegments,
  keysPath,
  normalizeKey,
} from '../../../src/etcd/v2/paths.js';

describe('keySegments', () => {
  it('returns no segments for the root', () => {
    expect(keySegments('/')).toEqual([]);
  });

  it('splits an absolute key into its segments', () => {
    expect(keySegments('/demo/dir2/sub/k2')).toEqual(['demo', 'dir2', 'sub', 'k2']);
  });

  it('tolerates a single trailing slash (etcd accepts it without a redirect)', () => {
    expect(keySegments('/demo/late/')).toEqual(['demo', 'late']);
  });

  it.each(['demo', 'demo/a', ' /a'])('refuses the relative key %j', (key) => {
    expect(() => keySegments(key)).toThrow(InvalidKeyError);
  });

  it.each(['/a//b', '//a', '/a//', '/a/b//', '/a/./b', '/a/../b', '/.', '/..', '/a/.', '/a/..', '/./', '/../'])(
    'refuses %j: etcd would answer 301 and a PUT/DELETE would silently not happen',
    (key) => {
      expect(() => keySegments(key)).toThrow(InvalidKeyError);
    },
  );

  // '//' is root + an empty segment, like '/a//' which is refused; it is currently read as '/' + trailing '/'.
  // With --src-prefix // the mirror would silently replicate the whole keyspace.
  it('refuses "//" like every other empty segment', () => {
    expect(() => keySegments('//')).toThrow(InvalidKeyError);
  });

  it('carries a stable code on the error', () => {
    const err = (() => {
      try {
        keySegments('/a//b');
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(InvalidKeyError);
    expect((err as InvalidKeyError).code).toBe('EM_ERR_INVALID_KEY');
  });

  it.each(['/.hidden', '/a..b', '/...', '/a/.b/c', '/%2E', '/%2E%2E'])('accepts %j: only exact "." and ".." are dot segments', (key) => {
    expect(() => keySegments(key)).not.toThrow();
  });
});

describe('normalizeKey', () => {
  it.each([
    ['/', '/'],
    ['/demo', '/demo'],
    ['/demo/', '/demo'],
    ['/a/b/c/', '/a/b/c'],
  ])('%j → %j', (input, expected) => {
    expect(normalizeKey(input)).toBe(expected);
  });

  it('refuses what keySegments refuses', () => {
    expect(() => normalizeKey('/a//b')).toThrow(InvalidKeyError);
    expect(() => normalizeKey('relative')).toThrow(InvalidKeyError);
  });
});

describe('joinKey', () => {
  it.each([
    ['/', '', '/'],
    ['/', '/a', '/a'],
    ['/', '/a/b', '/a/b'],
    ['/replica', '', '/replica'],
    ['/replica', '/a', '/replica/a'],
    ['/replica/', '/a', '/replica/a'],
    ['/replica/', '', '/replica'],
    ['/replica', '/conftool/x', '/replica/conftool/x'],
  ])('joinKey(%j, %j) = %j', (base, tail, expected) => {
    expect(joinKey(base, tail)).toBe(expected);
  });

  it('never produces "//" for normalized bases and tails', () => {
    const segment = fc.stringMatching(/^[a-z_.%?#+ ]{1,4}$/).filter((s) => s !== '.' && s !== '..');
    const key = fc.array(segment, { maxLength: 4 }).map((s) => '/' + s.join('/'));
    const tail = fc.array(segment, { maxLength: 4 }).map((s) => s.map((x) => '/' + x).join(''));
    fc.assert(
      fc.property(key, tail, (base, t) => {
        expect(joinKey(base, t)).not.toContain('//');
      }),
    );
  });
});

describe('isWithin', () => {
  it.each([
    ['/demo', '/demo', true],
    ['/demo/x', '/demo', true],
    ['/demo/x/y', '/demo', true],
    ['/demo2/x', '/demo', false],
    ['/demo2', '/demo', false],
    ['/de', '/demo', false],
    ['/', '/demo', false],
    ['/anything', '/', true],
    ['/', '/', true],
  ])('isWithin(%j, %j) = %s (segment-wise, not string-prefix)', (key, ancestor, expected) => {
    expect(isWithin(key, ancestor)).toBe(expected);
  });
});

describe('isHiddenBelow', () => {
  it.each([
    ['/demo/_x', '/demo', true],
    ['/demo/a/_b/c', '/demo', true],
    ['/demo/a/b_', '/demo', false],
    ['/demo/a_b', '/demo', false],
    ['/demo', '/demo', false],
    ['/_top', '/', true],
    ['/a/_b', '/', true],
    ['/a/b', '/', false],
    // Only the part below the base counts: watching a hidden path itself works live.
    ['/_demo/x', '/_demo', false],
    ['/_demo/_x', '/_demo', true],
  ])('isHiddenBelow(%j, %j) = %s', (key, base, expected) => {
    expect(isHiddenBelow(key, base)).toBe(expected);
  });
});

describe('keysPath', () => {
  it('builds the root path', () => {
    expect(keysPath('/')).toBe('/v2/keys/');
  });

  it('drops a trailing slash', () => {
    expect(keysPath('/demo/')).toBe('/v2/keys/demo');
  });

  it.each([
    ['/tree/sp ace', '/v2/keys/tree/sp%20ace'],
    ['/a/100%', '/v2/keys/a/100%25'],
    ['/a/what?', '/v2/keys/a/what%3F'],
    ['/a/#frag', '/v2/keys/a/%23frag'],
    ['/a/x+y', '/v2/keys/a/x%2By'],
    ['/a/é', '/v2/keys/a/%C3%A9'],
    ['/a/日本', '/v2/keys/a/%E6%97%A5%E6%9C%AC'],
    ['/a/&=;', '/v2/keys/a/%26%3D%3B'],
    ['/a/line\nbreak', '/v2/keys/a/line%0Abreak'],
    // The reference wrote '%41' as 'A': a literal percent sign must be encoded.
    ['/a/%41', '/v2/keys/a/%2541'],
    ['/a/%2F', '/v2/keys/a/%252F'],
    ['/.hidden/a..b', '/v2/keys/.hidden/a..b'],
  ])('encodes each segment of %j', (key, expected) => {
    expect(keysPath(key)).toBe(expected);
  });

  it('appends defined query parameters and skips undefined ones', () => {
    expect(keysPath('/demo', { wait: true, recursive: true, waitIndex: 42, quorum: undefined })).toBe(
      '/v2/keys/demo?wait=true&recursive=true&waitIndex=42',
    );
  });

  it('adds no "?" when no parameter is defined', () => {
    expect(keysPath('/demo', { recursive: undefined })).toBe('/v2/keys/demo');
  });

  it.each(['/a//b', '/a/./b', '/a/../b', 'a/b'])('throws InvalidKeyError for %j instead of producing a redirected path', (key) => {
    expect(() => keysPath(key)).toThrow(InvalidKeyError);
  });

  it('round-trips any segment and never yields "//" or a dot segment', () => {
    const segment = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 6 }).filter((s) => !s.includes('/') && s !== '.' && s !== '..');
    fc.assert(
      fc.property(fc.array(segment, { minLength: 1, maxLength: 5 }), (segments) => {
        const path = keysPath('/' + segments.join('/'));
        const encoded = path.slice('/v2/keys/'.length);
        expect(path).not.toContain('//');
        expect(encoded).not.toMatch(/[?#]/);
        const parts = encoded.split('/');
        expect(parts.some((p) => p === '.' || p === '..' || p === '')).toBe(false);
        expect(parts.map(decodeURIComponent)).toEqual(segments);
      }),
    );
  });
});
