// The pure parts of `etcd-mirror switchover`: the reverse of a prefix mapping, and the reverse mirror's command line
// built from the operator's own (so that it keeps their TLS, credentials and daemon flags, sides exchanged).
import { KeyMap, replicationIndexKey } from '../replication/keys.js';
import { fenceKey } from '../replication/fence.js';

/** A check that failed: the command changes nothing, says this in one line and exits 1. */
export class SwitchoverRefusedError extends Error {
  readonly code = 'EM_ERR_SWITCHOVER_REFUSED';
  constructor(
    readonly check: string,
    why: string,
  ) {
    super(`${check}: ${why}`);
  }
}

export interface Mapping {
  srcPrefix: string;
  dstPrefix: string;
  strip: boolean;
  /** --src-ignore-keys-regex as given (a full match on the source key). */
  ignore: string | undefined;
}

/**
 * The mapping of the mirror NEW → OLD that undoes `m`: every key `m` writes on NEW maps back to the key it came
 * from. Keys are renamed only by a prefix, so the reverse always exists as a prefix mapping; an ignore regex
 * does not carry over when keys are renamed (it matches OLD's names, not NEW's), so that is refused.
 * Spelled so that reversing twice gives the same flags back where the daemon allows it (same prefixes, --strip,
 * or a destination of / without --strip); otherwise the reverse uses --strip.
 */
export function invertMapping(m: Mapping): Mapping {
  const map = new KeyMap(m.srcPrefix, m.dstPrefix, m.strip, undefined);
  const identity = map.dstRoot === m.srcPrefix;
  if (m.ignore !== undefined && !identity) {
    throw new SwitchoverRefusedError(
      'mapping',
      `--src-ignore-keys-regex matches OLD's key names, and the mapping renames ${m.srcPrefix} to ${map.dstRoot}: the reverse mirror cannot ignore the same keys; switch over without the regex or with a mapping that keeps names`,
    );
  }
  const reverse: Mapping =
    m.strip
      ? { srcPrefix: m.dstPrefix, dstPrefix: m.srcPrefix, strip: true, ignore: m.ignore }
      : m.dstPrefix === '/'
        ? { srcPrefix: m.srcPrefix, dstPrefix: '/', strip: false, ignore: m.ignore }
        : { srcPrefix: map.dstRoot, dstPrefix: m.srcPrefix, strip: true, ignore: m.ignore };
  // Both directions of the pair must name the same subtrees.
  const back = new KeyMap(reverse.srcPrefix, reverse.dstPrefix, reverse.strip, undefined);
  if (back.srcPrefix !== map.dstRoot || back.dstRoot !== m.srcPrefix) {
    throw new SwitchoverRefusedError('mapping', `no prefix mapping takes ${map.dstRoot} on NEW back to ${m.srcPrefix} on OLD`);
  }
  return reverse;
}

/** Where everything the switchover reads and writes lives, for one direction and its reverse. */
export interface SwitchoverKeys {
  /** The OLD → NEW mirror's checkpoint, on NEW. */
  forwardCheckpoint: string;
  /** The fence this switchover sets, on NEW. */
  forwardFence: string;
  /** The NEW → OLD mirror's checkpoint, on OLD. */
  reverseCheckpoint: string;
  /** The fence an earlier switchover (OLD ← NEW) set on OLD, which this one lifts. */
  reverseFence: string;
}

export function switchoverKeys(forward: Mapping, reverse: Mapping): SwitchoverKeys {
  const f = new KeyMap(forward.srcPrefix, forward.dstPrefix, forward.strip, undefined);
  const r = new KeyMap(reverse.srcPrefix, reverse.dstPrefix, reverse.strip, undefined);
  return {
    forwardCheckpoint: replicationIndexKey(forward.dstPrefix),
    forwardFence: fenceKey(f.dstRoot),
    reverseCheckpoint: replicationIndexKey(reverse.dstPrefix),
    reverseFence: fenceKey(r.dstRoot),
  };
}

/** A cluster argument with any password in it left out (user:pass@host → user@host). */
export function redactUrl(raw: string): { url: string; redacted: boolean } {
  const url = raw.replace(/(\/\/[^/:@,]*):[^@/,]*@/g, '$1@');
  return { url, redacted: url !== raw };
}

export function shellQuote(s: string): string {
  return /^[\w\-.,:/@=+%]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

/** One option as the operator gave it (parseArgs tokens). */
export interface OptionToken {
  name: string;
  value: string | undefined;
}

/** Options the reverse command states itself, or that make no sense for it. */
const REPLACED = new Set(['src-prefix', 'dst-prefix', 'strip', 'src-ignore-keys-regex', 'src-api', 'dst-api', 'reload', 'help', 'version', 'quiet', 'dry-run']);
/** Per-side connection options: the sides change places. */
const SIDED = new Set(['ca', 'cert', 'key', 'password-file']);

/** The reverse mirror's command line: the operator's daemon options with the sides exchanged, the reverse mapping. */
export function reverseCommand(options: OptionToken[], reverse: Mapping, api: 'v2' | 'v3', oldRaw: string, newRaw: string): { line: string; redacted: boolean } {
  const words: string[] = ['etcd-mirror'];
  for (const o of options) {
    if (REPLACED.has(o.name)) continue;
    const side = /^(src|dst)-(.*)$/.exec(o.name);
    const name = side && SIDED.has(side[2]!) ? `${side[1] === 'src' ? 'dst' : 'src'}-${side[2]}` : o.name;
    words.push(`--${name}`);
    if (o.value !== undefined) words.push(o.value);
  }
  words.push('--src-prefix', reverse.srcPrefix, '--dst-prefix', reverse.dstPrefix);
  if (reverse.strip) words.push('--strip');
  if (reverse.ignore !== undefined) words.push('--src-ignore-keys-regex', reverse.ignore);
  if (api === 'v3') words.push('--src-api', 'v3', '--dst-api', 'v3');
  const src = redactUrl(newRaw);
  const dst = redactUrl(oldRaw);
  words.push(src.url, dst.url);
  return { line: words.map(shellQuote).join(' '), redacted: src.redacted || dst.redacted };
}
