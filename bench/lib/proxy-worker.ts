// Worker thread: the WAN delay proxy (test/helpers/fault-proxy.ts) between the mirror and the source etcd.
// In its own thread so that the load generator and the canary watcher never delay its timers.
import { parentPort, workerData } from 'node:worker_threads';
import { startFaultProxy } from '../../test/helpers/fault-proxy.js';

const { host, port, delayMs } = workerData as { host: string; port: number; delayMs: number };
const proxy = await startFaultProxy({ host, port });
proxy.setDelay(delayMs);
parentPort!.postMessage({ type: 'ready', url: proxy.url, port: proxy.port });
parentPort!.on('message', (msg: { type: 'close' } | { type: 'delay'; ms: number }) => {
  if (msg.type === 'delay') proxy.setDelay(msg.ms);
  else if (msg.type === 'close') {
    proxy.close().finally(() => process.exit(0));
  }
});
