// Main-thread handles for the worker threads (antagonist, proxy).
import { Worker } from 'node:worker_threads';
import type { AntagonistConfig, RunRequest, RunResult } from './antagonist-worker.js';

export interface Antagonist {
  run(req: Omit<RunRequest, 'type'>): Promise<RunResult>;
  close(): Promise<void>;
}

function closeWorker(w: Worker, timeoutMs = 5_000): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => void w.terminate().then(() => resolve()), timeoutMs);
    w.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    w.postMessage({ type: 'close' });
  });
}

export function startAntagonist(cfg: AntagonistConfig): Antagonist {
  const w = new Worker(new URL('./antagonist-worker.js', import.meta.url), { workerData: cfg });
  let exited = false;
  w.once('exit', () => (exited = true));
  return {
    run(req) {
      if (exited) return Promise.reject(new Error('antagonist worker has exited'));
      return new Promise<RunResult>((resolve, reject) => {
        const onExit = () => reject(new Error('antagonist worker exited during a run'));
        w.once('exit', onExit);
        w.once('message', (msg: { type: 'done'; result: RunResult } | { type: 'error'; message: string }) => {
          w.off('exit', onExit);
          if (msg.type === 'done') resolve(msg.result);
          else reject(new Error(msg.message));
        });
        w.postMessage({ type: 'run', ...req });
      });
    },
    close: () => (exited ? Promise.resolve() : closeWorker(w)),
  };
}

export interface DelayProxy {
  url: string;
  port: number;
  close(): Promise<void>;
}

export async function startDelayProxy(target: { host: string; port: number }, oneWayDelayMs: number): Promise<DelayProxy> {
  const w = new Worker(new URL('./proxy-worker.js', import.meta.url), { workerData: { ...target, delayMs: oneWayDelayMs } });
  const ready = await new Promise<{ url: string; port: number }>((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
    w.once('exit', (code) => reject(new Error(`proxy worker exited (${code})`)));
  });
  let closed = false;
  return {
    url: ready.url,
    port: ready.port,
    async close() {
      if (closed) return;
      closed = true;
      await closeWorker(w);
    },
  };
}
