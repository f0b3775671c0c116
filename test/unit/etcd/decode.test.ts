import { describe, expect, it } from 'vitest';
import { decodeEvent, decodeKeys, header, parseIndex, type Headers } from '../../../src/etcd/v2/decode.js';
import {
  CompareFailedError,
  ConfigError,
  DirNotEmptyError,
  EtcdError,
  EventIndexClearedError,
  isRetryable,
  KeyNotFoundError,
  LeaderElectError,
  MassDeleteRefusedError,
  MirrorError,
  NodeExistError,
  NotADirectoryError,
  NotAFileError,
  RaftInternalError,
  Retryable,
  RootReadOnlyError,
  TransportError,
  UnauthorizedError,
  UnexpectedResponseError,
  WatcherClearedError,
} from '../../../src/etcd/errors.js';
import { fixtureText } from '../helpers/fixtures.js';

const CLUSTER = 'd1cfaf999eb97a2a';
const okHeaders = (index: number): Headers => ({
  'content-type': 'application/json',
  'x-etcd-index': String(index),
  'x-etcd-cluster-id': CLUSTER,
  'x-raft-index': '6',
  'x-raft-term': '2',
});
const errHeaders = (index: number): Headers => ({ 'content-type': 'application/json', 'x-etcd-index': String(index) });

/** Runs `fn` and returns what it threw (fails the test if it did not throw). */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}

describe('decodeKeys: successful answers (recorded bodies)', () => {
  it.each([
    ['set.json', 201, 4, 'set', '/demo/a'],
    ['set-overwrite.json', 200, 5, 'set', '/demo/a'],
    ['create.json', 201, 6, 'create', '/demo/b'],
    ['update.json', 200, 7, 'update', '/demo/b'],
    ['compare-and-swap.json', 200, 8, 'compareAndSwap', '/demo/a'],
    ['delete.json', 200, 10, 'delete', '/demo/b'],
    ['compare-and-delete.json', 200, 13, 'compareAndDelete', '/demo/c'],
    ['mkdir.json', 201, 15, 'set', '/demo/dir1'],
    ['delete-dir-recursive.json', 200, 18, 'delete', '/demo/dir1'],
    ['post-create.json', 201, 24, 'create', '/demo/queue/00000000000000000024'],
    ['set-ttl.json', 201, 26, 'set', '/demo/t1'],
  ])('%s (HTTP %i) → index %i, action %s on %s', (file, status, index, action, key) => {
    const text = fixtureText(file);

    const result = decodeKeys(status, okHeaders(index), text);

    expect(result.etcdIndex).toBe(index);
    expect(result.clusterId).toBe(CLUSTER);
    expect(result.body.action).toBe(action);
    expect(result.body.node.key).toBe(key);
    expect(result.body).toEqual(JSON.parse(text));
  });

  it('keeps prevNode, TTL fields and an absent value as sent', () => {
    const result = decodeKeys(200, okHeaders(27), fixtureText('expire.json'));

    expect(result.body.node).toEqual({ key: '/demo/t1', modifiedIndex: 27, createdIndex: 26 });
    expect(result.body.prevNode).toEqual({
      key: '/demo/t1',
      value: 'x',
      expiration: '2026-11-26T02:53:22.801155925Z',
      modifiedIndex: 26,
      createdIndex: 26,
    });
  });

  it('decodes the root GET of a fresh cluster (no key, no indexes on the node)', () => {
    const result = decodeKeys(200, okHeaders(3), fixtureText('get-root.json'));
    expect(result.etcdIndex).toBe(3);
    expect(result.body.node.dir).toBe(true);
  });

  it('takes the first value of a repeated header', () => {
    const result = decodeKeys(201, { 'x-etcd-index': ['4', '9'], 'x-etcd-cluster-id': [CLUSTER] }, fixtureText('set.json'));
    expect(result.etcdIndex).toBe(4);
    expect(result.clusterId).toBe(CLUSTER);
  });

  it('reports an absent cluster id as undefined', () => {
    const result = decodeKeys(201, { 'x-etcd-index': '4' }, fixtureText('set.json'));
    expect(result.clusterId).toBeUndefined();
  });

  it.each([
    ['missing', undefined],
    ['not a number', 'abc'],
    ['negative', '-1'],
    ['fractional', '4.5'],
    ['beyond safe integers', '9007199254740993'],
  ])('rejects a %s X-Etcd-Index as a non-retryable UnexpectedResponseError', (_what, raw) => {
    const err = thrown(() => decodeKeys(201, { 'x-etcd-index': raw }, fixtureText('set.json')));
    expect(err).toBeInstanceOf(UnexpectedResponseError);
    expect(isRetryable(err)).toBe(false);
  });
});

describe('decodeKeys: etcd error bodies', () => {
  it('maps errorCode 401 sent with HTTP 400 to EventIndexClearedError with the oldest retained index', () => {
    const err = thrown(() => decodeKeys(400, errHeaders(1204), fixtureText('error-401-event-index-cleared.json')));

    expect(err).toBeInstanceOf(EventIndexClearedError);
    const e = err as EventIndexClearedError;
    expect(e.code).toBe('EM_ERR_EVENT_INDEX_CLEARED');
    expect(e.errorCode).toBe(401);
    expect(e.httpStatus).toBe(400);
    expect(e.etcdIndex).toBe(1204);
    expect(e.oldestIndex).toBe(205);
    expect(e.etcdCause).toBe('the requested history has been cleared [205/5]');
    expect(isRetryable(e)).toBe(false);
  });

  it('parses oldestIndex from other recorded causes, and gives undefined without one', () => {
    const body = (cause: string) => JSON.stringify({ errorCode: 401, message: 'm', cause, index: 3080 });
    const oldest = (cause: string) => (thrown(() => decodeKeys(400, errHeaders(3080), body(cause))) as EventIndexClearedError).oldestIndex;

    expect(oldest('the requested history has been cleared [2081/2080]')).toBe(2081);
    expect(oldest('the requested history has been cleared [340213/5]')).toBe(340213);
    expect(oldest('no brackets here')).toBeUndefined();
  });

  it('maps errorCode 110 sent with HTTP 401 to UnauthorizedError, with a fixed explanatory message', () => {
    const err = thrown(() => decodeKeys(401, errHeaders(0), fixtureText('error-110-unauthorized.json')));

    expect(err).toBeInstanceOf(UnauthorizedError);
    const e = err as UnauthorizedError;
    expect(e.code).toBe('EM_ERR_UNAUTHORIZED');
    expect(e.errorCode).toBe(110);
    expect(e.httpStatus).toBe(401);
    expect(e.etcdIndex).toBe(0);
    expect(e.message).toContain('110');
    expect(isRetryable(e)).toBe(false);
  });

  it.each([
    [100, 404, '{"errorCode":100,"message":"Key not found","cause":"/demo/zz","index":7}', KeyNotFoundError, 'EM_ERR_KEY_NOT_FOUND', false],
    [101, 412, '{"errorCode":101,"message":"Compare failed","cause":"[zz != 5] [1 != 9]","index":9}', CompareFailedError, 'EM_ERR_COMPARE_FAILED', false],
    [102, 403, '{"errorCode":102,"message":"Not a file","cause":"/demo/dir1","index":15}', NotAFileError, 'EM_ERR_NOT_A_FILE', false],
    [104, 400, '{"errorCode":104,"message":"Not a directory","cause":"/tree/a","index":3180}', NotADirectoryError, 'EM_ERR_NOT_A_DIRECTORY', false],
    [105, 412, '{"errorCode":105,"message":"Key already exists","cause":"/demo/b","index":6}', NodeExistError, 'EM_ERR_NODE_EXIST', false],
    [107, 400, '{"errorCode":107,"message":"Root is read only","cause":"/","index":3162}', RootReadOnlyError, 'EM_ERR_ROOT_READ_ONLY', false],
    [108, 403, '{"errorCode":108,"message":"Directory not empty","cause":"/demo/dir1","index":17}', DirNotEmptyError, 'EM_ERR_DIR_NOT_EMPTY', false],
    [300, 500, '{"errorCode":300,"message":"Raft Internal Error","cause":"","index":50}', RaftInternalError, 'EM_ERR_RAFT_INTERNAL', true],
    [301, 500, '{"errorCode":301,"message":"During Leader Election","cause":"","index":50}', LeaderElectError, 'EM_ERR_LEADER_ELECT', true],
    [400, 400, '{"errorCode":400,"message":"watcher is cleared due to etcd recovery","cause":"","index":50}', WatcherClearedError, 'EM_ERR_WATCHER_CLEARED', true],
  ] as const)('errorCode %i (HTTP %i) → %s', (errorCode, status, body, Ctor, code, retryable) => {
    const parsed = JSON.parse(body) as { message: string; cause: string; index: number };

    const err = thrown(() => decodeKeys(status, errHeaders(parsed.index), body));

    expect(err).toBeInstanceOf(Ctor);
    expect(err).toBeInstanceOf(EtcdError);
    expect(err).toBeInstanceOf(MirrorError);
    const e = err as EtcdError;
    expect(e.code).toBe(code);
    expect(e.name).toBe(Ctor.name);
    expect(e.errorCode).toBe(errorCode);
    expect(e.etcdMessage).toBe(parsed.message);
    expect(e.etcdCause).toBe(parsed.cause);
    expect(e.etcdIndex).toBe(parsed.index);
    expect(e.httpStatus).toBe(status);
    expect(isRetryable(e)).toBe(retryable);
  });

  it('falls back to the EtcdError base class for an errorCode without a class (202)', () => {
    const body = '{"errorCode":202,"message":"The given TTL in POST form is not a number","cause":"invalid value for \\"ttl\\"","index":0}';

    const err = thrown(() => decodeKeys(400, errHeaders(0), body));

    expect(err).toBeInstanceOf(EtcdError);
    const e = err as EtcdError;
    expect(e.constructor).toBe(EtcdError);
    expect(e.code).toBe('EM_ERR_ETCD');
    expect(e.errorCode).toBe(202);
    expect(isRetryable(e)).toBe(false);
  });

  it('defaults missing message, cause and index', () => {
    const e = thrown(() => decodeKeys(404, {}, '{"errorCode":100}')) as KeyNotFoundError;
    expect(e).toBeInstanceOf(KeyNotFoundError);
    expect(e.etcdMessage).toBe('');
    expect(e.etcdCause).toBe('');
    expect(e.etcdIndex).toBe(0);
  });

  it('treats an error body as an error even with HTTP 200', () => {
    expect(thrown(() => decodeKeys(200, {}, fixtureText('error-100-key-not-found.json')))).toBeInstanceOf(KeyNotFoundError);
  });
});

describe('decodeKeys: answers that are not etcd JSON', () => {
  it.each([502, 503, 500])('a non-JSON HTTP %i (proxy page) is a retryable UnexpectedResponseError', (status) => {
    const err = thrown(() => decodeKeys(status, { 'content-type': 'text/html' }, '<html><body>502 Bad Gateway</body></html>'));

    expect(err).toBeInstanceOf(UnexpectedResponseError);
    const e = err as UnexpectedResponseError;
    expect(e.code).toBe('EM_ERR_UNEXPECTED_RESPONSE');
    expect(e.httpStatus).toBe(status);
    expect(isRetryable(e)).toBe(true);
  });

  it('a non-JSON 405 is not retryable', () => {
    const err = thrown(() => decodeKeys(405, { 'content-type': 'text/plain' }, 'Method Not Allowed\n'));
    expect(err).toBeInstanceOf(UnexpectedResponseError);
    expect(isRetryable(err)).toBe(false);
  });

  it.each([301, 307])('a redirect (HTTP %i, e.g. for "//" in a path) is not retryable and names the Location', (status) => {
    const err = thrown(() => decodeKeys(status, { location: '/v2/keys/foo', 'content-type': 'text/html' }, fixtureText('redirect-301.html')));

    expect(err).toBeInstanceOf(UnexpectedResponseError);
    expect((err as UnexpectedResponseError).httpStatus).toBe(status);
    expect((err as Error).message).toContain('/v2/keys/foo');
    expect(isRetryable(err)).toBe(false);
  });

  it('a redirect with an empty body (the PUT case) is still a redirect error', () => {
    const err = thrown(() => decodeKeys(301, { location: '/v2/keys/foo' }, ''));
    expect(err).toBeInstanceOf(UnexpectedResponseError);
    expect(isRetryable(err)).toBe(false);
  });

  it('JSON that is not a keys answer is refused (retryable only for 5xx)', () => {
    expect(isRetryable(thrown(() => decodeKeys(200, okHeaders(1), '{"hello":"world"}')))).toBe(false);
    expect(isRetryable(thrown(() => decodeKeys(503, okHeaders(1), '{"hello":"world"}')))).toBe(true);
    expect(thrown(() => decodeKeys(200, okHeaders(1), 'null'))).toBeInstanceOf(UnexpectedResponseError);
    expect(thrown(() => decodeKeys(200, okHeaders(1), '42'))).toBeInstanceOf(UnexpectedResponseError);
  });

  it('a keys-shaped body with a non-2xx status is refused', () => {
    const err = thrown(() => decodeKeys(302, okHeaders(4), fixtureText('set.json')));
    expect(err).toBeInstanceOf(UnexpectedResponseError);
  });

  it('an empty 200 body is an UnexpectedResponseError, not a crash (the watch caller handles empty bodies itself)', () => {
    expect(thrown(() => decodeKeys(200, okHeaders(4), ''))).toBeInstanceOf(UnexpectedResponseError);
  });

  it('quotes at most a short snippet of a non-JSON body', () => {
    const page = '<html>' + 'x'.repeat(10_000) + '</html>';
    const err = thrown(() => decodeKeys(502, {}, page)) as Error;
    expect(err.message.length).toBeLessThan(200);
  });
});

describe('decodeEvent (one line of a watch body)', () => {
  it.each(['set.json', 'delete.json', 'expire.json', 'compare-and-swap.json', 'expire-dir.json', 'post-create.json'])('decodes %s', (file) => {
    const text = fixtureText(file);
    expect(decodeEvent(text)).toEqual(JSON.parse(text));
  });

  it('throws the typed etcd error for an error line (errorCode 401)', () => {
    const err = thrown(() => decodeEvent(fixtureText('error-401-event-index-cleared.json')));
    expect(err).toBeInstanceOf(EventIndexClearedError);
    expect((err as EventIndexClearedError).oldestIndex).toBe(205);
  });

  it('throws a retryable WatcherClearedError for errorCode 400', () => {
    const err = thrown(() => decodeEvent('{"errorCode":400,"message":"watcher is cleared due to etcd recovery","cause":"","index":9}'));
    expect(err).toBeInstanceOf(WatcherClearedError);
    expect(isRetryable(err)).toBe(true);
  });

  it.each([
    ['no action', '{"node":{"key":"/a","modifiedIndex":1,"createdIndex":1}}'],
    ['no node', '{"action":"set"}'],
    ['non-integer modifiedIndex', '{"action":"set","node":{"key":"/a","modifiedIndex":1.5,"createdIndex":1}}'],
    ['string modifiedIndex', '{"action":"set","node":{"key":"/a","modifiedIndex":"7","createdIndex":1}}'],
    ['unsafe modifiedIndex', '{"action":"set","node":{"key":"/a","modifiedIndex":9007199254740993,"createdIndex":1}}'],
    ['a number', '42'],
  ])('refuses a line with %s', (_what, line) => {
    expect(thrown(() => decodeEvent(line))).toBeInstanceOf(UnexpectedResponseError);
  });

  it('refuses a non-JSON line with an UnexpectedResponseError', () => {
    expect(thrown(() => decodeEvent('{"action":"set","node":{"key"'))).toBeInstanceOf(UnexpectedResponseError);
  });

  // decodeKeys guards against a JSON null; decodeEvent reads `json.errorCode` on it and throws a bare TypeError,
  // which is neither a MirrorError nor carries a code/retryability.
  it('refuses the JSON line "null" with an UnexpectedResponseError', () => {
    expect(thrown(() => decodeEvent('null'))).toBeInstanceOf(UnexpectedResponseError);
  });
});

describe('parseIndex and header', () => {
  it.each([
    ['0', 0],
    ['3', 3],
    ['1204', 1204],
    ['9007199254740991', Number.MAX_SAFE_INTEGER],
  ])('parses %j', (raw, expected) => {
    expect(parseIndex(raw, 'X-Etcd-Index')).toBe(expected);
  });

  it('names what it was parsing in the error', () => {
    expect((thrown(() => parseIndex('x', 'X-Etcd-Index')) as Error).message).toContain('X-Etcd-Index');
  });

  // Number('') is 0 and Number('1e3') is 1000: anything that is not plain decimal digits should be refused
  // rather than silently read as an index (an empty header would make the checkpoint jump back to 0).
  it.each(['', ' 7', '1e3', '0x10'])('refuses %j, which is not a decimal index', (raw) => {
    expect(thrown(() => parseIndex(raw, 'X-Etcd-Index'))).toBeInstanceOf(UnexpectedResponseError);
  });

  it('header() returns the first of repeated values and undefined when absent', () => {
    expect(header({ a: ['1', '2'] }, 'a')).toBe('1');
    expect(header({ a: '1' }, 'a')).toBe('1');
    expect(header({}, 'a')).toBeUndefined();
  });
});

describe('isRetryable and the error classes', () => {
  const etcd = [100, 'm', 'c', 1, 400] as const;
  it.each([
    ['KeyNotFoundError', new KeyNotFoundError(...etcd), false],
    ['CompareFailedError', new CompareFailedError(...etcd), false],
    ['NotAFileError', new NotAFileError(...etcd), false],
    ['NotADirectoryError', new NotADirectoryError(...etcd), false],
    ['NodeExistError', new NodeExistError(...etcd), false],
    ['RootReadOnlyError', new RootReadOnlyError(...etcd), false],
    ['DirNotEmptyError', new DirNotEmptyError(...etcd), false],
    ['UnauthorizedError', new UnauthorizedError(...etcd), false],
    ['EventIndexClearedError', new EventIndexClearedError(...etcd), false],
    ['EtcdError', new EtcdError(...etcd), false],
    ['RaftInternalError', new RaftInternalError(...etcd), true],
    ['LeaderElectError', new LeaderElectError(...etcd), true],
    ['WatcherClearedError', new WatcherClearedError(...etcd), true],
    ['TransportError', new TransportError('ECONNREFUSED'), true],
    ['UnexpectedResponseError(retryable)', new UnexpectedResponseError('502', 502, true), true],
    ['UnexpectedResponseError(not retryable)', new UnexpectedResponseError('301', 301, false), false],
    ['ConfigError', new ConfigError('bad flag'), false],
    ['MassDeleteRefusedError', new MassDeleteRefusedError('too many'), false],
    ['MirrorError', new MirrorError('x'), false],
  ])('%s → retryable %s', (_name, err, retryable) => {
    expect(isRetryable(err)).toBe(retryable);
  });

  it.each([null, undefined, 'string', 42, new Error('plain'), { retryable: true }, { [Retryable]: 'yes' }])(
    'is false for %j, which does not carry the Retryable flag set to true',
    (value) => {
      expect(isRetryable(value)).toBe(false);
    },
  );

  it('accepts a plain object carrying the Retryable symbol', () => {
    expect(isRetryable({ [Retryable]: true })).toBe(true);
  });

  it('every class has a stable EM_ERR_ code and its own name', () => {
    const errors = [
      new TransportError('t'),
      new UnexpectedResponseError('u', 500, true),
      new ConfigError('c'),
      new MassDeleteRefusedError('m'),
    ];
    expect(errors.map((e) => [e.name, e.code])).toEqual([
      ['TransportError', 'EM_ERR_TRANSPORT'],
      ['UnexpectedResponseError', 'EM_ERR_UNEXPECTED_RESPONSE'],
      ['ConfigError', 'EM_ERR_CONFIG'],
      ['MassDeleteRefusedError', 'EM_ERR_MASS_DELETE_REFUSED'],
    ]);
  });

  it('keeps the cause given to a MirrorError', () => {
    const cause = new Error('socket hang up');
    expect(new TransportError('lost', { cause }).cause).toBe(cause);
  });

  it('formats an etcd error message with its code and cause', () => {
    expect(new KeyNotFoundError(100, 'Key not found', '/demo/zz', 7, 404).message).toBe('etcd error 100: Key not found (/demo/zz)');
    expect(new RaftInternalError(300, 'Raft Internal Error', '', 7, 500).message).toBe('etcd error 300: Raft Internal Error');
  });
});
