// The daemon's HTTP surface. Read-only: no endpoint changes anything. Nothing served here carries credentials
// (endpoints are shown by origin only).
import { createServer, type Server } from 'node:http';
import type { Metrics } from './metrics.js';

export interface StateView {
  state: string;
  reason: string;
  sourceIndex: number | null;
  appliedIndex: number | null;
  lagEvents: number | null;
  [k: string]: unknown;
}

const HELP_TEXT = `etcd-mirror

/          this help
/lag       source store index minus the stored replication index (plain integer, as the reference tool)
/metrics   Prometheus metrics
/state     lifecycle state, indexes, queue and reconcile progress (JSON)
/healthz   200 while the process runs
`;

export async function startHttp(opts: {
  port: number;
  host: string;
  metrics: Metrics;
  state: () => StateView;
}): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'read-only\n');
    switch (path) {
      case '/':
        return send(200, 'text/plain; charset=utf-8', HELP_TEXT);
      case '/lag':
        return send(200, 'text/plain', `${opts.state().lagEvents ?? 0}\n`);
      case '/state':
        return send(200, 'application/json', JSON.stringify(opts.state(), null, 2) + '\n');
      case '/healthz':
        return send(200, 'text/plain', 'ok\n');
      case '/metrics':
        opts.metrics.registry.metrics().then(
          (text) => send(200, opts.metrics.registry.contentType, text),
          (err: unknown) => send(500, 'text/plain', `metrics failed: ${String(err)}\n`),
        );
        return;
      default:
        return send(404, 'text/plain', 'not found; see /\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  return server;
}
