// The /ui page: the statechart (server-rendered from the machine definition by src/daemon/viz/) with the current state
// highlighted live from /events, the last 15 minutes as charts, and the numbers an operator needs next to them.
// Its script is src/ui/app.ts, compiled by tsc. Everything it loads is served by the daemon itself (a
// Content-Security-Policy of 'self' enforces that): it works without Internet access. Nothing here depends on
// colour alone: the current state has a thick border and a "▶" marker, chart bands are named and patterned,
// and every gauge is also written out as text.

export function uiHtml(svg: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>etcd-mirror</title>
<link rel="icon" href="/ui/icon.svg">
<link rel="stylesheet" href="/ui/app.css">
<script type="module" src="/ui/app.js"></script>
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
  <section id="history" aria-label="history">
    <div class="history-head">
      <h2>History <small id="historySpan"></small></h2>
      <div id="ranges" role="group" aria-label="time range">
        <button type="button" data-range-ms="900000" aria-pressed="true">15 min</button>
        <button type="button" data-range-ms="300000" aria-pressed="false">5 min</button>
        <button type="button" data-range-ms="60000" aria-pressed="false">1 min</button>
      </div>
    </div>
    <div class="history-plot"><svg id="historyChart" role="img" aria-label="history: loading"></svg></div>
  </section>
  <aside>
    <section id="now" aria-live="polite">
      <p class="state-line">State <strong id="state">…</strong></p>
      <p id="ready"></p>
      <p id="reason"></p>
      <ul id="notices" hidden></ul>
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
      <dt>Audit</dt><dd id="audit">–</dd>
      <dt>Auth</dt><dd id="auth">–</dd>
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
body { margin: 0; min-height: 100vh; display: flex; flex-direction: column; }
header { display: flex; align-items: baseline; gap: 1.5rem; padding: 0.4rem 1rem; border-bottom: 2px solid #222; background: #fff; }
header h1 { font-size: 1.2rem; margin: 0; }
header p { margin: 0; }
#route { flex: 1; font-family: "DejaVu Sans Mono", monospace; font-size: 0.9rem; }
#conn.down { font-weight: bold; text-decoration: underline; }
/* The statechart fills the first screen beside the status; the history charts follow below it (scroll), as wide
   as the statechart: three columns side by side left each too small to read at 1280×800. */
main { flex: 1; display: grid; grid-template-columns: minmax(0, 1fr) 400px; grid-template-rows: calc(100vh - 2.6rem) 720px; }
#chart { grid-column: 1; grid-row: 1; min-height: 0; padding: 0.5rem; display: flex; justify-content: center; }
#chart svg { width: 100%; height: 100%; }
#history { grid-column: 1; grid-row: 2; min-height: 0; display: flex; flex-direction: column; border-top: 2px solid #222; background: #fff; padding: 0.3rem 0.5rem 0.4rem; }
.history-head { display: flex; align-items: baseline; justify-content: space-between; }
.history-head h2 { font-size: 1rem; margin: 0.2rem 0; }
.history-head small { font-weight: normal; font-size: 0.85rem; }
#ranges button { font: inherit; font-size: 0.85rem; padding: 0.05rem 0.45rem; border: 1px solid #555; background: #fff; color: #111; }
#ranges button[aria-pressed="true"] { border: 2px solid #000; font-weight: bold; text-decoration: underline; }
.history-plot { flex: 1; min-height: 0; }
#historyChart { display: block; font-size: 11px; }
#historyChart text { fill: #111; }
#historyChart .frame { fill: none; stroke: #888; }
#historyChart .grid { stroke: #e2e2e2; }
#historyChart .tick, #historyChart .callout { stroke: #555; }
#historyChart .axis { fill: #444; }
#historyChart .title { font-weight: bold; }
#historyChart .series { fill: none; stroke-width: 1.6; stroke-linejoin: round; stroke-linecap: round; }
#historyChart .line-a { stroke: #1b4f9c; }
#historyChart .line-b { stroke: #333; stroke-dasharray: 5 3; }
#historyChart .dot-a { fill: #1b4f9c; }
#historyChart .dot-b { fill: #333; }
#historyChart .band-label { font-weight: bold; }
#historyChart .band-tailing, #historyChart .fill-tailing { fill: #dff0df; }
#historyChart .fill-stalled { fill: #fbd6a8; }
#historyChart .fill-outOfWindow { fill: #f5b0b0; }
#historyChart .fill-reconcile { fill: #c6dbf5; }
#historyChart .band-stalled { fill: url(#h-stalled); }
#historyChart .band-outOfWindow { fill: url(#h-outOfWindow); }
#historyChart .band-reconcile { fill: url(#h-reconcile); }
#historyChart .band-other { fill: #e4e4e4; }
#historyChart .shade { opacity: 0.4; }
#historyChart pattern .ink { stroke: #7a3d00; stroke-width: 1.2; }
#historyChart pattern .dot { fill: #1b4f9c; }
aside { grid-column: 2; grid-row: 1; min-height: 0; display: flex; flex-direction: column; border-left: 2px solid #222; background: #fff; padding: 0.5rem 0.8rem; gap: 0.4rem; }
#now p { margin: 0.15rem 0; }
.state-line { font-size: 1.3rem; }
#state { font-size: 1.5rem; padding: 0 0.3rem; border: 3px solid #111; }
#state.trouble { border-style: double; border-width: 5px; }
#ready { font-weight: bold; }
#reason { font-size: 0.9rem; overflow-wrap: anywhere; max-height: 3.6em; overflow: hidden; }
#notices { font-size: 0.85rem; margin: 0.4rem 0 0; padding-left: 1.1rem; overflow-wrap: anywhere; }
#notices li::marker { content: "⚠ "; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.15rem 0.8rem; margin: 0; }
dt { font-weight: bold; }
dd { margin: 0; font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
meter, progress { width: 5rem; vertical-align: middle; }
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
