// Source → destination key mapping on bytes, for pipelines that write to a v3 destination. Same rules as the v2
// KeyMap (src/keys.ts): a prefix covers itself and what lies below it on a path boundary (`/conftool` covers
// `/conftool` and `/conftool/...`, never `/conftoolx`); --strip maps SP/x to DP/x, otherwise SP/x to DP + SP/x.
// Bytes, not strings: a v3 key need not be UTF-8, and what the source holds is what the destination gets.
import { replicationIndexKey, type KeyMap } from './keys.js';

const SLASH = 0x2f;
/** The byte after '/': [P, P + '0') is the smallest range holding P and every P/... key. */
const AFTER_SLASH = 0x30;
const REPLICATION_DIR = Buffer.from('/__replication');

export interface KeyRange {
  key: Buffer;
  rangeEnd: Buffer;
}

/** True when `key` is `prefix` or lies below it on a path boundary; every '/...' key lies below '/'. */
export function coversKey(prefix: Buffer, key: Buffer): boolean {
  if (prefix.length === 1 && prefix[0] === SLASH) return key[0] === SLASH;
  if (key.length < prefix.length || key.compare(prefix, 0, prefix.length, 0, prefix.length) !== 0) return false;
  return key.length === prefix.length || key[prefix.length] === SLASH;
}

/** The range to read or watch for a prefix (it also holds keys like P!x, which coversKey() filters out). */
export function rangeOf(prefix: Buffer): KeyRange {
  if (prefix.length === 1 && prefix[0] === SLASH) return { key: prefix, rangeEnd: Buffer.from([AFTER_SLASH]) };
  return { key: prefix, rangeEnd: Buffer.concat([prefix, Buffer.from([AFTER_SLASH])]) };
}

export class ByteKeyMap {
  readonly srcPrefix: Buffer;
  readonly dstPrefix: Buffer;
  /** What the source prefix itself maps to: the destination subtree this mirror owns. */
  readonly dstRoot: Buffer;
  /** The checkpoint: `/__replication<dst-prefix>` (`/__replication/__ROOT__` for `/`), as on v2. */
  readonly checkpointKey: Buffer;
  readonly srcRange: KeyRange;
  readonly dstRange: KeyRange;
  readonly #strip: boolean;
  readonly #ignore: RegExp | undefined;

  constructor(readonly map: KeyMap) {
    this.srcPrefix = Buffer.from(map.srcPrefix);
    this.dstPrefix = Buffer.from(map.dstPrefix);
    this.#strip = map.strip;
    this.#ignore = map.ignore;
    this.dstRoot = this.toDst(this.srcPrefix);
    this.checkpointKey = Buffer.from(replicationIndexKey(map.dstPrefix));
    this.srcRange = rangeOf(this.srcPrefix);
    this.dstRange = rangeOf(this.dstRoot);
  }

  /**
   * Whether a source key is mirrored: inside the prefix, not a mirror's own checkpoint (a v3 source that is
   * itself a replica holds one), and not matched by --src-ignore-keys-regex (matched against the key as UTF-8).
   */
  mirrors(srcKey: Buffer): boolean {
    if (!coversKey(this.srcPrefix, srcKey) || coversKey(REPLICATION_DIR, srcKey)) return false;
    return !this.#ignore?.test(srcKey.toString('utf8'));
  }

  toDst(srcKey: Buffer): Buffer {
    const rootPrefix = this.srcPrefix.length === 1 && this.srcPrefix[0] === SLASH;
    const tail = this.#strip ? (rootPrefix ? srcKey : srcKey.subarray(this.srcPrefix.length)) : srcKey;
    const base = this.dstPrefix.length === 1 && this.dstPrefix[0] === SLASH ? Buffer.alloc(0) : this.dstPrefix;
    const joined = tail.length === 1 && tail[0] === SLASH ? base : Buffer.concat([base, tail]);
    return joined.length === 0 ? Buffer.from('/') : joined;
  }

  /** Inverse of toDst for keys under dstRoot. */
  toSrc(dstKey: Buffer): Buffer {
    const isRoot = (b: Buffer) => b.length === 1 && b[0] === SLASH;
    if (!this.#strip) return dstKey.subarray(isRoot(this.dstPrefix) ? 0 : this.dstPrefix.length);
    const tail = isRoot(this.dstRoot) ? dstKey : dstKey.subarray(this.dstRoot.length);
    if (isRoot(this.srcPrefix)) return tail.length === 0 ? Buffer.from('/') : tail;
    return Buffer.concat([this.srcPrefix, tail]);
  }

  /** Destination keys this mirror may write or delete: inside its subtree, never the checkpoints. */
  ownsDst(dstKey: Buffer): boolean {
    return coversKey(this.dstRoot, dstKey) && !coversKey(REPLICATION_DIR, dstKey);
  }
}

/** A map key for bytes (latin1 is one char per byte: lossless). */
export const keyId = (key: Buffer): string => key.toString('latin1');
