// The /ui page's script (served as /ui/app.js): live status from /events, the statechart's current state marked,
// and the history charts from /history. Nothing here depends on colour alone: the current state has a thick
// border and a "▶" marker, and every gauge is also written out as text.
import { clock, drawHistory } from './chart.js';
import { mergeHistory, newestSample } from './history.js';
import type { HistoryJson, StateJson } from './wire.js';

function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const node = document.getElementById(id);
  if (!node) throw new Error(`the page has no #${id}`);
  return node as T;
}
const num = (n: number | null): string => (n === null ? '–' : String(n));
const TROUBLE = ['stalled', 'outOfWindow', 'failed', 'stopped', 'fenced'];
let lastUpdate = 0;
let lastState = '';
let position: StateJson['position'] = 'index';

function highlight(path: string): void {
  for (const g of document.querySelectorAll<SVGGElement>('.sc-state')) {
    const id = g.dataset.state ?? '';
    const current = id === path;
    g.classList.toggle('current', current);
    g.classList.toggle('active', !current && path.startsWith(id + '.'));
    const name = g.querySelector<SVGTextElement>('.sc-name');
    if (!name) continue;
    name.dataset.key ??= name.textContent ?? '';
    name.textContent = (current ? '▶ ' : '') + name.dataset.key;
  }
}

function render(v: StateJson): void {
  lastUpdate = Date.now();
  position = v.position;
  highlight(v.statePath);
  $('version').textContent = v.version;
  $('route').textContent = `${v.source.url} (${v.source.api}) ${v.source.prefix}  →  ${v.destination.url} (${v.destination.api}) ${v.destination.prefix}`;
  // v3 counts revisions where v2 counts indexes.
  $('sourceIndexLabel').textContent = v.position === 'revision' ? 'Source revision' : 'Source store index';
  $('appliedIndexLabel').textContent = v.position === 'revision' ? 'Stored replication revision' : 'Stored replication index';
  $('state').textContent = `▶ ${v.state}`;
  $('state').className = TROUBLE.includes(v.state) ? 'trouble' : '';
  // When the state is the reason, the line below already says why.
  $('ready').textContent = v.ready ? `READY: ${v.readyReason}` : `NOT READY: ${v.state === 'tailing' ? v.readyReason : 'not tailing'}`;
  $('reason').textContent = `Why: ${v.reason}` + (v.state === 'stalled' ? ` (attempt ${v.attempt})` : '');
  // --ha: this instance's role, and who holds the lock for how long.
  $('role').textContent = !v.ha
    ? 'single instance (no --ha)'
    : `${v.role ?? v.ha.role} (${v.ha.instanceId}); lock held by ${v.ha.holder ?? 'nobody'}` +
      (v.ha.heldForSeconds !== null ? ` for ${v.ha.heldForSeconds.toFixed(1)} s` : '');
  $('sourceIndex').textContent = num(v.sourceIndex);
  $('appliedIndex').textContent = num(v.appliedIndex);
  $('lag').textContent =
    v.lagEvents === null ? 'unknown' : `${v.lagEvents} ${v.position === 'revision' ? 'revisions' : 'events'}, ${v.lagSeconds.toFixed(1)} s`;
  $<HTMLMeterElement>('headroomMeter').value = v.headroomEvents ?? 0;
  $('headroom').textContent =
    v.historyWindowEvents === null
      ? 'no event window (v3 keeps history until compaction)'
      : v.headroomEvents === null
        ? 'unknown'
        : `${v.headroomEvents} of ${v.historyWindowEvents} events`;
  $('rate').textContent = `${v.eventsPerSecond.toFixed(1)} events/s`;
  $('writer').textContent = `${v.writer.state}: queue ${v.writer.queue}, in flight ${v.writer.inFlight}`;
  $('poller').textContent = v.poller;
  const o = v.ordering;
  $('ordering').textContent =
    `${o.mode}: ${o.current === 'strict' ? 'source order' : 'writes to unrelated keys overlap'}` +
    (o.mode === 'adaptive' && o.reordering ? ' (window headroom low)' : '') +
    (o.reorderingSeconds > 0 ? `, ${o.reorderingSeconds.toFixed(1)} s reordering so far` : '') +
    (o.ceilingPerSecond !== null
      ? `; strict order holds ~${o.ceilingPerSecond} events/s at ~${o.writeMs} ms per write, the source sends ~${o.sourcePerSecond ?? 0}/s` +
        (o.nearCeiling ? ' (near the ceiling)' : '')
      : '');
  const rc = v.reconcile;
  const bar = $<HTMLProgressElement>('reconcileBar');
  bar.hidden = !rc;
  if (rc) {
    bar.max = Math.max(1, rc.total);
    bar.value = rc.done;
    const pct = rc.total ? Math.floor((100 * rc.done) / rc.total) : 100;
    $('reconcile').textContent = `${rc.done} / ${rc.total} keys (${pct}%)` + (rc.active ? `, ${rc.keysPerSecond.toFixed(0)} keys/s` : ', finished');
  } else {
    $('reconcile').textContent = 'none running';
  }
  // The last consistency audit: equal at a point, or what differed and was repaired.
  const a = v.audit;
  const at = a?.atIndex === null || !a ? '' : ` at ${v.position} ${a.atIndex}`;
  $('audit').textContent = !a
    ? 'off (--audit-interval 0)'
    : (a.running ? 'running; ' : '') +
      (a.lastAt === null
        ? 'none yet'
        : a.atIndex === null
          ? `last one aborted at ${clock(Date.parse(a.lastAt))}`
          : `${a.differing === 0 ? 'equal' : `${a.differing} keys differed (${a.repaired} repaired)`}${at}: ${a.keys} keys in ${a.durationMs} ms, at ${clock(Date.parse(a.lastAt))}`) +
      (a.nextAt ? `; next at ${clock(Date.parse(a.nextAt))}` : '');
  const cost = (side: string, c: StateJson['auth']['source']) =>
    `${side} ${c.auth}${c.costMs === null ? '' : ` (+${c.costMs} ms per request${c.tokenExchangeMs === null ? '' : `, token in ${c.tokenExchangeMs} ms`})`}`;
  $('auth').textContent = `${cost('source', v.auth.source)}; ${cost('destination', v.auth.destination)}`;
  // What the daemon wants the operator to know now: password auth holding it back, a budget the store outruns.
  const notices = [v.auth.source.message, v.auth.destination.message, v.sourceBudget?.message ?? null].filter((m): m is string => m !== null);
  const list = $('notices');
  list.hidden = notices.length === 0;
  list.replaceChildren(
    ...notices.map((m) => {
      const li = document.createElement('li');
      li.textContent = m;
      return li;
    }),
  );
  $('fault').textContent = v.lastFault ? `${v.lastFault.code}: ${v.lastFault.message}` : 'none';
  $('timeline').replaceChildren(
    ...v.timeline
      .slice()
      .reverse()
      .map((t) => {
        const li = document.createElement('li');
        const time = document.createElement('time');
        time.dateTime = t.at;
        time.textContent = clock(Date.parse(t.at));
        const move = document.createElement('b');
        move.textContent = `${t.from} → ${t.to}`;
        li.append(time, move, document.createTextNode(t.reason));
        return li;
      }),
  );
  // A new state: fetch its band now rather than at the next tick.
  if (v.state !== lastState) {
    lastState = v.state;
    void refreshHistory();
  }
}

function connection(text: string, down: boolean): void {
  $('conn').textContent = text;
  $('conn').classList.toggle('down', down);
}

// History: what is new is fetched once a second (the daemon samples at that pace); redrawn on each answer and on
// resize.
let history: HistoryJson | null = null;
let rangeMs = 15 * 60_000;
let fetching = false;

function drawCharts(): void {
  const svg = document.getElementById('historyChart') as SVGSVGElement | null;
  const box = svg?.parentElement;
  if (!svg || !box || !history) return;
  const { start, end } = drawHistory(svg, history, { rangeMs, width: box.clientWidth, height: box.clientHeight, position });
  $('historySpan').textContent = end - start < rangeMs ? `since ${clock(start)}` : `last ${rangeMs / 60_000} min`;
}

async function refreshHistory(): Promise<void> {
  if (fetching) return;
  fetching = true;
  try {
    const after = newestSample(history);
    const res = await fetch(after === null ? '/history' : `/history?after=${after}`, { cache: 'no-store' });
    if (res.ok) {
      const got = (await res.json()) as HistoryJson;
      // null: a restarted daemon's history, fetched whole at the next tick.
      history = history && after !== null ? mergeHistory(history, got, after) : got;
      drawCharts();
    }
  } catch {
    // The connection line already says when the daemon does not answer; the charts keep the last answer.
  } finally {
    fetching = false;
  }
}

for (const button of document.querySelectorAll<HTMLButtonElement>('#ranges button')) {
  button.addEventListener('click', () => {
    rangeMs = Number(button.dataset.rangeMs);
    for (const b of document.querySelectorAll('#ranges button')) b.setAttribute('aria-pressed', String(b === button));
    drawCharts();
  });
}
window.addEventListener('resize', drawCharts);
setInterval(() => void refreshHistory(), 1000);

const events = new EventSource('/events');
events.onmessage = (m: MessageEvent<string>) => {
  connection('live', false);
  render(JSON.parse(m.data) as StateJson);
};
events.onerror = () => connection('disconnected from the daemon, retrying; the page shows the last state it received', true);
// Updates come every second; silence means the daemon or the network is stuck even if the socket is open.
setInterval(() => {
  if (lastUpdate && Date.now() - lastUpdate > 5000) connection(`no update for ${Math.round((Date.now() - lastUpdate) / 1000)} s`, true);
}, 1000);
