// `etcd-mirror status [URL]`: a one-screen summary of a running daemon, from its GET /state. The exit code is
// for scripts and monitors: 0 ready, 1 answering but not ready (standby, stalled, reconciling, low headroom),
// 2 no etcd-mirror answers there (or bad usage).
import { parseArgs } from 'node:util';
import { ConfigError } from '../etcd/errors.js';

const DEFAULT_STATUS_URL = 'http://127.0.0.1:8000';
const DEFAULT_TIMEOUT_S = 5;
/** Transitions shown, newest first (/state keeps the last 50). */
const TRANSITIONS_SHOWN = 5;

type Out = { stdout: (s: string) => void; stderr: (s: string) => void };
const defaultOut: Out = { stdout: (s) => process.stdout.write(s), stderr: (s) => process.stderr.write(s) };

/** The part of /state (src/daemon/state-view.ts) the summary reads; every field is optional so an older daemon still shows. */
export interface StatusState {
  state?: string;
  statePath?: string;
  reason?: string;
  ready?: boolean;
  readyReason?: string;
  sourceIndex?: number | null;
  appliedIndex?: number | null;
  confirmedIndex?: number | null;
  lagEvents?: number | null;
  lagSeconds?: number | null;
  headroomEvents?: number | null;
  historyWindowEvents?: number | null;
  eventsPerSecond?: number;
  queue?: number;
  inFlight?: number;
  writer?: { state?: string };
  ordering?: { mode?: string; current?: string; reordering?: boolean; ceilingPerSecond?: number | null; writeMs?: number | null; sourcePerSecond?: number | null; nearCeiling?: boolean };
  reconcile?: { done?: number; total?: number; active?: boolean; keysPerSecond?: number } | null;
  lastFault?: { code?: string; message?: string; retryable?: boolean } | null;
  timeline?: { at?: string; from?: string; to?: string; reason?: string }[];
  source?: { url?: string; api?: string; prefix?: string; clockOffsetMs?: number | null };
  destination?: { url?: string; api?: string; prefix?: string; indexKey?: string };
  position?: string;
  role?: string | null;
  ha?: { instanceId?: string; holder?: string | null; heldForSeconds?: number | null } | null;
  fenced?: string | null;
  auth?: Record<'source' | 'destination', { auth?: string; costMs?: number | null; message?: string | null } | undefined>;
  sourceBudget?: { message?: string | null } | null;
  audit?: { lastAt?: string | null; atIndex?: number | null; keys?: number | null; differing?: number | null; repaired?: number | null; nextAt?: string | null; running?: boolean } | null;
  version?: string;
}

const n = (v: number | null | undefined): string => (typeof v === 'number' ? String(v) : '?');

/** The summary, one labelled line per fact. Pure: tested without a daemon. */
export function renderStatus(s: StatusState, base: string): string {
  const lines: [string, string][] = [];
  const add = (label: string, text: string) => lines.push([label, text]);
  add('daemon', `${base}${s.version ? ` (etcd-mirror ${s.version})` : ''}`);
  add('state', `${s.state ?? '?'}${s.statePath && s.statePath !== s.state ? ` (${s.statePath})` : ''}${s.reason ? `: ${s.reason}` : ''}`);
  // Not ready because of the state: its reason is on the line above already.
  const why = s.readyReason && !s.readyReason.startsWith(`state ${s.state}:`) ? ` (${s.readyReason})` : '';
  add('ready', `${s.ready ? 'yes' : 'no'}${why}`);
  if (s.role) {
    const ha = s.ha;
    const holder = ha?.holder ? `lock held by ${ha.holder}${typeof ha.heldForSeconds === 'number' ? ` for ${ha.heldForSeconds} s` : ''}` : 'lock free';
    add('role', `${s.role}${ha?.instanceId ? ` (instance ${ha.instanceId}; ${holder})` : ''}`);
  } else {
    add('role', 'single instance (no --ha)');
  }
  if (s.fenced) add('fenced', s.fenced);
  const side = (x: StatusState['source'] | StatusState['destination']) => `${x?.url ?? '?'} (${x?.api ?? '?'}), prefix ${x?.prefix ?? '?'}`;
  add('source', side(s.source) + (typeof s.source?.clockOffsetMs === 'number' ? `, clock ${s.source.clockOffsetMs >= 0 ? '+' : ''}${s.source.clockOffsetMs} ms from this host` : ''));
  add('destination', side(s.destination) + (s.destination?.indexKey ? `, index at ${s.destination.indexKey}` : ''));
  const unit = s.position === 'revision' ? 'revision' : 'index';
  add(
    'position',
    `source store ${unit} ${n(s.sourceIndex)}, stored ${unit} ${n(s.appliedIndex)}` +
      (typeof s.confirmedIndex === 'number' ? `, confirmed quiet up to ${s.confirmedIndex}` : ''),
  );
  add('lag', `${n(s.lagEvents)} events, ${typeof s.lagSeconds === 'number' ? s.lagSeconds.toFixed(1) : '?'} s`);
  add(
    'headroom',
    typeof s.headroomEvents === 'number'
      ? `${s.headroomEvents} of ${n(s.historyWindowEvents)} events of the source's history window`
      : s.source?.api === 'v3'
        ? 'no event window (v3 source: history lasts until compaction)'
        : 'unknown (source store index not seen yet)',
  );
  const ordering = s.ordering ? `; ordering ${s.ordering.mode ?? '?'}${s.ordering.reordering ? ' (writes overlapping now: headroom low)' : ''}` : '';
  add('applying', `${s.eventsPerSecond ?? 0} events/s; queue ${s.queue ?? 0}, in flight ${s.inFlight ?? 0}; writer ${s.writer?.state ?? '?'}${ordering}`);
  const o = s.ordering;
  if (o?.ceilingPerSecond != null) {
    add('ceiling', `strict order holds ~${o.ceilingPerSecond} events/s at ~${o.writeMs ?? '?'} ms per write; the source sends ~${o.sourcePerSecond ?? 0}/s${o.nearCeiling ? ' (near the ceiling)' : ''}`);
  }
  if (s.reconcile) {
    const r = s.reconcile;
    add('reconcile', `${n(r.done)} of ${n(r.total)} keys${r.active ? `, running at ${r.keysPerSecond ?? 0} keys/s` : ', done'}`);
  }
  if (s.audit !== undefined) {
    const a = s.audit;
    const last = !a?.lastAt
      ? 'none yet'
      : a.atIndex === null || a.atIndex === undefined
        ? `last one aborted (${a.lastAt})`
        : `${a.differing === 0 ? 'equal' : `${n(a.differing)} keys differed, ${n(a.repaired)} repaired`} at ${unit} ${a.atIndex}, ${n(a.keys)} keys (${a.lastAt})`;
    add('audit', !a ? 'off (--audit-interval 0)' : `${a.running ? 'running; ' : ''}${last}${a.nextAt ? `; next ${a.nextAt}` : ''}`);
  }
  if (s.auth) {
    const side = (c: { auth?: string; costMs?: number | null } | undefined) => `${c?.auth ?? '?'}${typeof c?.costMs === 'number' ? ` (+${c.costMs} ms per request)` : ''}`;
    add('auth', `source ${side(s.auth.source)}, destination ${side(s.auth.destination)}`);
  }
  // What the daemon wants an operator to read: password auth holding it back, a budget the store outruns.
  for (const m of [s.auth?.source?.message, s.auth?.destination?.message, s.sourceBudget?.message]) if (m) add('notice', m);
  add('last fault', s.lastFault ? `${s.lastFault.code ?? '?'}${s.lastFault.retryable ? ' (retrying)' : ''}: ${s.lastFault.message ?? ''}` : 'none');
  const width = Math.max(...lines.map(([label]) => label.length));
  let out = lines.map(([label, text]) => `${label.padEnd(width)}  ${text}\n`).join('');
  const recent = (s.timeline ?? []).slice(-TRANSITIONS_SHOWN).reverse();
  if (recent.length > 0) {
    out += `transitions (newest first)\n`;
    for (const t of recent) out += `  ${t.at ?? '?'}  ${t.from ?? '?'} → ${t.to ?? '?'}${t.reason ? `  ${t.reason}` : ''}\n`;
  }
  return out;
}

/** Why a fetch failed, in words: refused, timed out, name unknown (undici hides the code in `cause`). */
function fetchFailure(err: unknown, timeoutS: number): string {
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) return `no answer within ${timeoutS} s`;
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause?.message ?? cause?.code ?? (err as Error).message;
}

/** `etcd-mirror status [URL] [--timeout S]`. */
export async function statusCommand(argv: string[], out: Out = defaultOut): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { timeout: { type: 'string' } } });
  } catch (err) {
    throw new ConfigError(`status: ${(err as Error).message.split('\n')[0]}`);
  }
  const { values, positionals } = parsed;
  if (positionals.length > 1) throw new ConfigError('status: expected at most one URL');
  const timeoutS = values.timeout === undefined ? DEFAULT_TIMEOUT_S : Number(values.timeout);
  if (!(timeoutS > 0 && timeoutS <= 600)) throw new ConfigError('status: --timeout: expected seconds, more than 0 and at most 600');
  const raw = positionals[0] ?? DEFAULT_STATUS_URL;
  let url: URL;
  try {
    url = new URL(raw.includes('://') ? raw : `http://${raw}`);
  } catch {
    throw new ConfigError(`status: not a URL: ${raw}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(`status: expected an http or https URL, got ${url.protocol}`);
  // The daemon's pages need no credentials; origin drops any user info from what is printed.
  const base = url.origin + url.pathname.replace(/\/+$/, '');
  const where = `${base}/state`;

  let state: StatusState;
  try {
    const res = await fetch(where, { signal: AbortSignal.timeout(timeoutS * 1000), headers: { accept: 'application/json' } });
    const text = await res.text();
    if (res.status !== 200) {
      out.stderr(`etcd-mirror: error: ${where} answered HTTP ${res.status}: not an etcd-mirror daemon?\n`);
      return 2;
    }
    state = JSON.parse(text) as StatusState;
    if (typeof state !== 'object' || state === null || typeof state.state !== 'string') throw new SyntaxError('no state');
  } catch (err) {
    const why = err instanceof SyntaxError ? 'its answer is not the JSON of an etcd-mirror daemon' : fetchFailure(err, timeoutS);
    out.stderr(`etcd-mirror: error: cannot get the state from ${where}: ${why}\n`);
    return 2;
  }
  out.stdout(renderStatus(state, base));
  return state.ready === true ? 0 : 1;
}
