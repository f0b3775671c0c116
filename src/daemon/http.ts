// The daemon's HTTP surface. Read-only: no endpoint changes anything. Nothing served here carries credentials
// (endpoints are shown by origin only).
import { readdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { lifecycle } from '../../machines/index.js';
import type { HistoryJson, StateJson } from '../ui/wire.js';
import type { Metrics } from './metrics.js';
import { UI_CSS, UI_ICON, uiHtml } from './ui.js';
import { machineGraph } from './viz/graph.js';
import { toSvg } from './viz/svg.js';

/** The /state JSON (also each /events message). */
export type StateView = StateJson;

const HELP_TEXT = `etcd-mirror

/          this help
/ui        live statechart and replication status (HTML, works offline)
/lag       source store index minus the stored replication index (plain integer, as the reference tool)
/metrics   Prometheus metrics
/state     lifecycle state, indexes, lag, window headroom, rates, queue, reconcile progress, recent transitions (JSON)
/history   the last 15 minutes: lag, window headroom, events/s, destination write p99, and the states held (JSON;
           ?after=T: only what came after the sample at T, ms since the epoch)
/events    the /state JSON as Server-Sent Events, on every transition and every second
/healthz   200 while the process runs
/readyz    200 while tailing with enough window headroom, 503 otherwise (with the reason)
/ui/machine.json, /ui/machine.svg   the lifecycle statechart, from the machine definition
`;

const EVENTS_EVERY_MS = 1000;

// The page may load only what this daemon serves: no CDN, no outside font, nothing inline.
const UI_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
};

/** The page's browser modules, compiled from src/ui/ (its own tsconfig) into the directory beside this file's:
 * served as they are, no bundler. */
function uiModules(): Map<string, string> {
  const dir = new URL('../ui/', import.meta.url);
  const files = readdirSync(dir).filter((f) => f.endsWith('.js'));
  // A build that compiled only the daemon (tsc -p tsconfig.json alone) would serve a page without its script.
  if (!files.includes('app.js')) throw new Error(`the /ui page's script is missing from ${dir.pathname}: compile src/ui/tsconfig.json too (npm run build)`);
  return new Map(files.map((f) => [`/ui/${f}`, readFileSync(new URL(f, dir), 'utf8')]));
}

export async function startHttp(opts: {
  port: number;
  host: string;
  metrics: Metrics;
  state: () => StateView;
  /** `after`: the newest sample time the asker holds (see History.toJSON). */
  history: (after?: number) => HistoryJson;
  /** Calls the listener after every lifecycle transition; returns the unsubscribe function. */
  onTransition: (listener: () => void) => () => void;
}): Promise<Server> {
  // The chart only depends on the machine definition: laid out on the first request for it (ELK takes a few
  // hundred ms of CPU, which a daemon nobody looks at need not spend), then served from memory.
  const graph = machineGraph(lifecycle);
  const graphJson = JSON.stringify(graph, null, 2) + '\n';
  let chart: Promise<{ svg: string; page: string }> | undefined;
  const modules = uiModules();

  const server = createServer((req, res) => {
    const [path, query = ''] = (req.url ?? '/').split('?');
    const send = (status: number, type: string, body: string, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', ...headers });
      res.end(body);
    };
    const withChart = (serve: (c: { svg: string; page: string }) => void) =>
      (chart ??= toSvg(graph).then((svg) => ({ svg, page: uiHtml(svg) }))).then(serve, (err: unknown) =>
        send(500, 'text/plain', `statechart layout failed: ${String(err)}\n`),
      );
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'read-only\n');
    switch (path) {
      case '/':
        return send(200, 'text/plain; charset=utf-8', HELP_TEXT);
      case '/lag':
        return send(200, 'text/plain', `${opts.state().lagEvents ?? 0}\n`);
      case '/state':
        return send(200, 'application/json', JSON.stringify(opts.state(), null, 2) + '\n');
      case '/history': {
        const after = new URLSearchParams(query).get('after');
        if (after !== null && !/^\d+$/.test(after)) return send(400, 'text/plain', 'after: expected a time in ms since the epoch\n');
        return send(200, 'application/json', JSON.stringify(opts.history(after === null ? undefined : Number(after))) + '\n');
      }
      case '/healthz':
        return send(200, 'text/plain', 'ok\n');
      case '/readyz': {
        const v = opts.state();
        if (v.ready) return send(200, 'text/plain', 'ready\n');
        // --ha: a standby says who is active ("standby: active is host-a:8000"), for the load balancer's log.
        return send(503, 'text/plain; charset=utf-8', v.state === 'standby' ? `${v.readyReason}\n` : `not ready: ${v.readyReason}\n`);
      }
      case '/metrics':
        opts.metrics.scrape().then(
          (text) => send(200, opts.metrics.registry.contentType, text),
          (err: unknown) => send(500, 'text/plain', `metrics failed: ${String(err)}\n`),
        );
        return;
      case '/ui':
      case '/ui/':
        withChart((c) => send(200, 'text/html; charset=utf-8', c.page, UI_HEADERS));
        return;
      case '/ui/app.css':
        return send(200, 'text/css; charset=utf-8', UI_CSS, UI_HEADERS);
      case '/ui/icon.svg':
        return send(200, 'image/svg+xml', UI_ICON, UI_HEADERS);
      case '/ui/machine.json':
        return send(200, 'application/json', graphJson);
      case '/ui/machine.svg':
        withChart((c) => send(200, 'image/svg+xml', c.svg, UI_HEADERS));
        return;
      case '/events': {
        if (req.method === 'HEAD') return send(200, 'text/event-stream', '');
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
        // A daemon restart drops the stream; the browser reconnects after `retry` ms.
        res.write('retry: 1000\n\n');
        const push = () => res.write(`data: ${JSON.stringify(opts.state())}\n\n`);
        push();
        const timer = setInterval(push, EVENTS_EVERY_MS);
        const unsubscribe = opts.onTransition(push);
        res.on('close', () => {
          clearInterval(timer);
          unsubscribe();
        });
        return;
      }
      default: {
        const script = modules.get(path ?? '');
        if (script !== undefined) return send(200, 'text/javascript; charset=utf-8', script, UI_HEADERS);
        return send(404, 'text/plain', 'not found; see /\n');
      }
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`cannot listen on ${opts.host}:${opts.port}: ${err.message}`)));
    server.listen(opts.port, opts.host, () => resolve());
  });
  return server;
}
