import { describe, expect, it } from 'vitest';
import { parseEndpoint } from '../../../src/etcd/endpoint.js';
import { ConfigError } from '../../../src/etcd/errors.js';

const PASSWORD = 'S3cr3t-PW';

/** Parses `raw` expecting a ConfigError, and returns it. */
function configError(raw: string, what = 'SRC'): ConfigError {
  try {
    parseEndpoint(raw, what);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error(`expected parseEndpoint(${JSON.stringify(raw)}) to throw`);
}

describe('parseEndpoint: accepted URLs', () => {
  it.each([
    ['http://127.0.0.1:2379', 'http://127.0.0.1:2379'],
    ['https://etcd.example.org:2379', 'https://etcd.example.org:2379'],
    ['http://[::1]:2379', 'http://[::1]:2379'],
    ['https://[2001:db8::7]:4001', 'https://[2001:db8::7]:4001'],
    ['http://host:1/', 'http://host:1'],
    ['HTTP://Host.Example:2379', 'http://host.example:2379'],
  ])('%s → origin %s without credentials', (raw, origin) => {
    const ep = parseEndpoint(raw, 'SRC');

    expect(ep.origin).toBe(origin);
    expect(ep.username).toBeUndefined();
    expect(ep.password).toBeUndefined();
  });

  it.each([
    ['http://host:80', 'http://host:80'],
    ['https://host:443', 'https://host:443'],
  ])('keeps an explicit default port: %s → %s', (raw, origin) => {
    expect(parseEndpoint(raw, 'SRC').origin).toBe(origin);
  });

  it('percent-decodes the user name and password, and keeps them out of the origin', () => {
    const ep = parseEndpoint('http://us%40er:p%3Aa%40ss@host:1', 'SRC');

    expect(ep.username).toBe('us@er');
    expect(ep.password).toBe('p:a@ss');
    expect(ep.origin).toBe('http://host:1');
  });

  it('accepts credentials with IPv6 hosts', () => {
    const ep = parseEndpoint(`https://alice:${PASSWORD}@[::1]:2379`, 'DST');

    expect(ep).toEqual({ origin: 'https://[::1]:2379', username: 'alice', password: PASSWORD });
  });

  it('accepts a user name without a password', () => {
    const ep = parseEndpoint('http://alice@host:2379', 'SRC');
    expect(ep.username).toBe('alice');
    expect(ep.password).toBeUndefined();
  });

  // A literal '%' that does not start a %XX escape reaches decodeURIComponent, which throws a bare URIError:
  // the CLI rethrows anything that is not a ConfigError, so the operator gets a stack trace instead of exit 2.
  it('handles a password with a literal "%" (not a %XX escape)', () => {
    let outcome: unknown;
    try {
      outcome = parseEndpoint('http://alice:S3cr3t%PW@host:1', 'SRC');
    } catch (err) {
      outcome = err;
    }
    const ok = outcome instanceof ConfigError || (outcome as { password?: string }).password === 'S3cr3t%PW';
    expect(ok).toBe(true);
  });
});

describe('parseEndpoint: refused URLs', () => {
  it.each([
    ['http://host', /missing port/],
    ['https://host', /missing port/],
    ['http://host:', /missing port/],
    ['http://[::1]', /missing port/],
    ['ftp://host:21', /unsupported scheme "ftp"/],
    ['etcd://host:2379', /unsupported scheme "etcd"/],
    ['unix:///run/etcd.sock', /unsupported scheme "unix"/],
    ['http://host:2379/v2/keys', /path/],
    ['http://host:2379/prefix/', /path/],
    ['http://host:2379?x=1', /path or query/],
    ['http://host:2379#frag', /path or query/],
    ['host:2379', /./],
    ['127.0.0.1:2379', /./],
    ['not a url', /not a valid URL/],
    ['', /not a valid URL/],
    ['http://host:99999', /not a valid URL/],
  ])('%j → ConfigError %s', (raw, message) => {
    const err = configError(raw);
    expect(err.message).toMatch(message);
  });

  it('starts the message with what was being parsed', () => {
    expect(configError('http://host', 'DST').message).toMatch(/^DST: /);
  });

  it('refuses a password without a user name', () => {
    expect(configError(`http://:${PASSWORD}@host:1`).message).toMatch(/password without a user name/);
  });
});

describe('parseEndpoint never echoes the password', () => {
  it.each([
    [`http://alice:${PASSWORD}@host`, 'missing port'],
    [`http://alice:${PASSWORD}@host:1/v2/keys`, 'a path'],
    [`http://alice:${PASSWORD}@host:1?q=1`, 'a query'],
    [`ftp://alice:${PASSWORD}@host:1`, 'a bad scheme'],
    [`http://alice:${PASSWORD}@[::1:2379`, 'an unparsable URL'],
    [`http://alice:${PASSWORD}@host:port`, 'a non-numeric port'],
    [`http://:${PASSWORD}@host:1`, 'no user name'],
    [`http://alice:${PASSWORD}@`, 'no host'],
  ])('%s (%s)', (raw) => {
    const err = configError(raw);
    expect(err.message).not.toContain(PASSWORD);
    expect(String(err)).not.toContain(PASSWORD);
    expect(err.stack ?? '').not.toContain(PASSWORD);
  });

  it('keeps the password out of the origin and JSON of a valid endpoint except the password field', () => {
    const ep = parseEndpoint(`http://alice:${PASSWORD}@host:1`, 'SRC');
    expect(ep.origin).not.toContain(PASSWORD);
    expect(ep.password).toBe(PASSWORD);
  });
});
