// Source → destination key mapping, exactly as the reference tool does it, plus the filters a correct mirror
// needs (history lookups match by string prefix; hidden keys; the ignore regex).
import { ConfigError, type InvalidKeyError } from '../etcd/errors.js';
import { isHiddenBelow, isWithin, joinKey, normalizeKey } from '../etcd/v2/paths.js';
import { REMOVAL_ACTIONS } from '../etcd/v2/decode.js';

export function parsePrefix(raw: string, flag: string): string {
  if (raw === '') throw new ConfigError(`${flag}: empty prefix (use / for the whole keyspace)`);
  if (!raw.startsWith('/')) throw new ConfigError(`${flag}: prefix must be absolute (start with /)`);
  try {
    return normalizeKey(raw);
  } catch (err) {
    throw new ConfigError(`${flag}: ${(err as InvalidKeyError).message}`);
  }
}

/** Python `re.fullmatch` semantics on the whole source key; Python-only group syntax is translated. */
export function compileIgnoreRegex(source: string): RegExp {
  const js = source.replace(/\(\?P</g, '(?<').replace(/\(\?P=(\w+)\)/g, '\\k<$1>');
  try {
    return new RegExp(`^(?:${js})$`);
  } catch (err) {
    throw new ConfigError(`--src-ignore-keys-regex: invalid regular expression: ${(err as Error).message}`);
  }
}

/** `/__replication` + dst prefix, or `/__replication/__ROOT__` for `/` (so `/__replication` stays a directory). */
export function replicationIndexKey(dstPrefix: string): string {
  return dstPrefix === '/' ? '/__replication/__ROOT__' : `/__replication${dstPrefix}`;
}

/** --ha: the lock beside the replication index (under /__replication: hidden from v2 recursive reads). */
function replicationLockKey(dstPrefix: string): string {
  return `${replicationIndexKey(dstPrefix)}.lock`;
}

export type EventScope =
  /** Inside the mirrored prefix and mirrored. */
  | 'mirrored'
  /** Outside the prefix: a history lookup matched by string prefix (`/de` for `/demo`). */
  | 'outside'
  /** A dir above the prefix was deleted or expired: the whole prefix is gone. */
  | 'ancestor'
  /** Matches --src-ignore-keys-regex: not written, but the index still advances. */
  | 'ignored'
  /** Has a `_` segment below the prefix: etcd hides it from recursive GETs and live watches, so never mirrored. */
  | 'hidden';

export class KeyMap {
  /** Destination key that the source prefix itself maps to. */
  readonly dstRoot: string;
  readonly indexKey: string;
  readonly lockKey: string;

  constructor(
    readonly srcPrefix: string,
    readonly dstPrefix: string,
    readonly strip: boolean,
    readonly ignore: RegExp | undefined,
  ) {
    this.dstRoot = this.toDst(srcPrefix);
    this.indexKey = replicationIndexKey(dstPrefix);
    this.lockKey = replicationLockKey(dstPrefix);
  }

  /** strip: SP/x → DP/x. No strip: SP/x → DP + SP/x. */
  toDst(srcKey: string): string {
    const tail = this.strip ? (this.srcPrefix === '/' ? srcKey : srcKey.slice(this.srcPrefix.length)) : srcKey;
    return joinKey(this.dstPrefix, tail === '/' ? '' : tail);
  }

  /** Inverse of toDst for keys under dstRoot. */
  toSrc(dstKey: string): string {
    const tail = this.dstRoot === '/' ? dstKey : dstKey.slice(this.dstRoot.length);
    return joinKey(this.srcPrefix, tail === '/' ? '' : tail);
  }

  scope(srcKey: string, dir: boolean, action: string): EventScope {
    if (isWithin(srcKey, this.srcPrefix)) {
      if (isHiddenBelow(srcKey, this.srcPrefix)) return 'hidden';
      if (this.ignore?.test(srcKey)) return 'ignored';
      return 'mirrored';
    }
    const removal = REMOVAL_ACTIONS.has(action);
    if (dir && removal && isWithin(this.srcPrefix, srcKey)) return 'ancestor';
    return 'outside';
  }

  /** True for destination keys this mirror owns and may write or delete (the index key never). */
  ownsDst(dstKey: string): boolean {
    if (!isWithin(dstKey, this.dstRoot) || isWithin(dstKey, '/__replication')) return false;
    return !isHiddenBelow(dstKey, this.dstRoot);
  }
}
