// The /ui page: the statechart (server-rendered from the machine definition by src/viz.ts) with the current state
// highlighted live from /events, and the numbers an operator needs next to it. Everything it loads is served
// by the daemon itself (a Content-Security-Policy of 'self' enforces that): it works without Internet access.
// Nothing here depends on colour alone: the current state has a thick border and a "▶" marker, and every
// gauge is also written out as text.

export function uiHtml(svg: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>etcd-mirror</title>
<link rel="icon" href="/ui/icon.svg">
<link rel="stylesheet" href="/ui/app.css">
<script src="/ui/app.js" defer></script>
</head>
<body>
<header>
  <h1>etcd-mirror <small id="version"></small></h1>
  <p id="route">source → destination</p>
  <p id="conn" role="status">connecting…</p>
</header>
<main>
  <section id="chart" aria-label="lifecycle statechart">
${svg}
  </section>
  <aside>
    <section id="now" aria-live="polite">
      <p class="state-line">State <strong id="state">…</strong></p>
      <p id="ready"></p>
      <p id="reason"></p>
    </section>
    <dl id="stats">
      <dt>Role</dt><dd id="role">–</dd>
      <dt id="sourceIndexLabel">Source store index</dt><dd id="sourceIndex">–</dd>
      <dt id="appliedIndexLabel">Stored replication index</dt><dd id="appliedIndex">–</dd>
      <dt>Lag</dt><dd id="lag">–</dd>
      <dt>Window headroom</dt><dd><meter id="headroomMeter" min="0" max="1000" low="200" high="500" optimum="1000"></meter> <span id="headroom">–</span></dd>
      <dt>Applied</dt><dd id="rate">–</dd>
      <dt>Writer</dt><dd id="writer">–</dd>
      <dt>Ordering</dt><dd id="ordering">–</dd>
      <dt>Poller</dt><dd id="poller">–</dd>
      <dt>Reconcile</dt><dd><progress id="reconcileBar" max="1" value="0" hidden></progress> <span id="reconcile">–</span></dd>
      <dt>Last fault</dt><dd id="fault">–</dd>
    </dl>
    <section id="recent">
      <h2>Recent transitions <small>(newest first)</small></h2>
      <ol id="timeline"></ol>
    </section>
  </aside>
</main>
</body>
</html>
`;
}

/** A source and its mirror. */
export const UI_ICON = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect x="1" y="3" width="6" height="10" rx="1" fill="#222"/><rect x="9" y="3" width="6" height="10" rx="1" fill="none" stroke="#222" stroke-width="2"/></svg>
`;

export const UI_CSS = `:root { color-scheme: light; font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; font-size: 14px; color: #111; background: #fafafa; }
* { box-sizing: border-box; }
body { margin: 0; height: 100vh; display: flex; flex-direction: column; }
header { display: flex; align-items: baseline; gap: 1.5rem; padding: 0.4rem 1rem; border-bottom: 2px solid #222; background: #fff; }
header h1 { font-size: 1.2rem; margin: 0; }
header p { margin: 0; }
#route { flex: 1; font-family: "DejaVu Sans Mono", monospace; font-size: 0.9rem; }
#conn.down { font-weight: bold; text-decoration: underline; }
main { flex: 1; min-height: 0; display: grid; grid-template-columns: minmax(0, 1fr) 430px; }
#chart { min-height: 0; padding: 0.5rem; display: flex; justify-content: center; }
#chart svg { width: 100%; height: 100%; }
aside { min-height: 0; display: flex; flex-direction: column; border-left: 2px solid #222; background: #fff; padding: 0.5rem 0.8rem; gap: 0.4rem; }
#now p { margin: 0.15rem 0; }
.state-line { font-size: 1.3rem; }
#state { font-size: 1.5rem; padding: 0 0.3rem; border: 3px solid #111; }
#state.trouble { border-style: double; border-width: 5px; }
#ready { font-weight: bold; }
#reason { font-size: 0.9rem; overflow-wrap: anywhere; max-height: 3.6em; overflow: hidden; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.15rem 0.8rem; margin: 0; }
dt { font-weight: bold; }
dd { margin: 0; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
meter, progress { width: 7rem; vertical-align: middle; }
#recent { flex: 1; min-height: 0; display: flex; flex-direction: column; }
#recent h2 { font-size: 1rem; margin: 0.3rem 0; }
#recent small { font-weight: normal; }
#timeline { flex: 1; min-height: 0; overflow-y: auto; margin: 0; padding-left: 0; list-style: none; border-top: 1px solid #999; }
#timeline li { padding: 0.2rem 0; border-bottom: 1px solid #ddd; font-size: 0.9rem; overflow-wrap: anywhere; }
#timeline time { font-family: "DejaVu Sans Mono", monospace; margin-right: 0.4rem; }
#timeline b { margin-right: 0.4rem; }
.sc-state.current > .sc-box { stroke: #000; stroke-width: 5px; fill: #fff2b3; }
.sc-state.current .sc-name { text-decoration: underline; }
.sc-state.active > .sc-box { stroke-width: 3px; stroke-dasharray: 10 4; }
`;

// Plain browser JavaScript, no build step: it is shipped as it is written here.
export const UI_JS = `'use strict';
const $ = (id) => document.getElementById(id);
const num = (n) => (n === null || n === undefined ? '–' : String(n));
const pad = (n) => String(n).padStart(2, '0');
const clock = (iso) => { const d = new Date(iso); return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()); };
const TROUBLE = ['stalled', 'outOfWindow', 'failed', 'stopped'];
let lastUpdate = 0;

function highlight(path) {
  for (const g of document.querySelectorAll('.sc-state')) {
    const id = g.dataset.state;
    const current = id === path;
    g.classList.toggle('current', current);
    g.classList.toggle('active', !current && path.startsWith(id + '.'));
    const name = g.querySelector('.sc-name');
    if (name.dataset.key === undefined) name.dataset.key = name.textContent;
    name.textContent = (current ? '\\u25B6 ' : '') + name.dataset.key;
  }
}

function render(v) {
  lastUpdate = Date.now();
  highlight(v.statePath);
  $('version').textContent = v.version;
  $('route').textContent = v.source.url + ' (' + v.source.api + ') ' + v.source.prefix + '  \\u2192  ' + v.destination.url + ' (' + v.destination.api + ') ' + v.destination.prefix;
  // v3 counts revisions where v2 counts indexes.
  $('sourceIndexLabel').textContent = v.position === 'revision' ? 'Source revision' : 'Source store index';
  $('appliedIndexLabel').textContent = v.position === 'revision' ? 'Stored replication revision' : 'Stored replication index';
  $('state').textContent = '\\u25B6 ' + v.state;
  $('state').className = TROUBLE.includes(v.state) ? 'trouble' : '';
  // When the state is the reason, the line below already says why.
  $('ready').textContent = v.ready ? 'READY: ' + v.readyReason : 'NOT READY: ' + (v.state === 'tailing' ? v.readyReason : 'not tailing');
  $('reason').textContent = 'Why: ' + v.reason + (v.state === 'stalled' ? ' (attempt ' + v.attempt + ')' : '');
  // --ha: this instance's role, and who holds the lock for how long.
  $('role').textContent = !v.ha ? 'single instance (no --ha)' : v.role + ' (' + v.ha.instanceId + '); lock held by ' + (v.ha.holder || 'nobody') +
    (v.ha.heldForSeconds !== null ? ' for ' + v.ha.heldForSeconds.toFixed(1) + ' s' : '');
  $('sourceIndex').textContent = num(v.sourceIndex);
  $('appliedIndex').textContent = num(v.appliedIndex);
  $('lag').textContent = v.lagEvents === null ? 'unknown' : v.lagEvents + (v.position === 'revision' ? ' revisions, ' : ' events, ') + v.lagSeconds.toFixed(1) + ' s';
  $('headroomMeter').value = v.headroomEvents ?? 0;
  $('headroom').textContent = v.historyWindowEvents === null ? 'no event window (v3 keeps history until compaction)' : v.headroomEvents === null ? 'unknown' : v.headroomEvents + ' of ' + v.historyWindowEvents + ' events';
  $('rate').textContent = v.eventsPerSecond.toFixed(1) + ' events/s';
  $('writer').textContent = v.writer.state + ': queue ' + v.writer.queue + ', in flight ' + v.writer.inFlight;
  $('poller').textContent = v.poller;
  const o = v.ordering;
  $('ordering').textContent = o.mode + ': ' + (o.current === 'strict' ? 'source order' : 'writes to unrelated keys overlap') +
    (o.mode === 'adaptive' && o.reordering ? ' (window headroom low)' : '') + (o.reorderingSeconds > 0 ? ', ' + o.reorderingSeconds.toFixed(1) + ' s reordering so far' : '');
  const rc = v.reconcile;
  $('reconcileBar').hidden = !rc;
  if (rc) {
    $('reconcileBar').max = Math.max(1, rc.total);
    $('reconcileBar').value = rc.done;
    const pct = rc.total ? Math.floor((100 * rc.done) / rc.total) : 100;
    $('reconcile').textContent = rc.done + ' / ' + rc.total + ' keys (' + pct + '%)' + (rc.active ? ', ' + rc.keysPerSecond.toFixed(0) + ' keys/s' : ', finished');
  } else {
    $('reconcile').textContent = 'none running';
  }
  $('fault').textContent = v.lastFault ? v.lastFault.code + ': ' + v.lastFault.message : 'none';
  const list = $('timeline');
  list.replaceChildren(...v.timeline.slice().reverse().map((t) => {
    const li = document.createElement('li');
    const time = document.createElement('time');
    time.dateTime = t.at;
    time.textContent = clock(t.at);
    const move = document.createElement('b');
    move.textContent = t.from + ' \\u2192 ' + t.to;
    li.append(time, move, document.createTextNode(t.reason));
    return li;
  }));
}

function connection(text, down) {
  $('conn').textContent = text;
  $('conn').classList.toggle('down', down);
}

const events = new EventSource('/events');
events.onmessage = (m) => {
  connection('live', false);
  render(JSON.parse(m.data));
};
events.onerror = () => connection('disconnected from the daemon, retrying; the page shows the last state it received', true);
// Updates come every second; silence means the daemon or the network is stuck even if the socket is open.
setInterval(() => {
  if (lastUpdate && Date.now() - lastUpdate > 5000) connection('no update for ' + Math.round((Date.now() - lastUpdate) / 1000) + ' s', true);
}, 1000);
`;
