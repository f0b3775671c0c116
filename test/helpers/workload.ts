// A bounded random workload of mixed v2 operations on the source, for crash and fault tests.
import { raw } from './raw.js';

export interface Workload {
  /** Stops the loop and resolves with the number of successful writes. */
  stop(): Promise<number>;
  /** Successful writes so far. */
  written(): number;
}

/** Deterministic PRNG so a failing run can be replayed from its seed. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function startWorkload(
  baseUrl: string,
  prefix: string,
  opts: { seed?: number; concurrency?: number; maxOps?: number; /** per loop, operations per second */ rate?: number } = {},
): Workload {
  const random = rng(opts.seed ?? 1);
  const pick = <T>(xs: T[]): T => xs[Math.floor(random() * xs.length)]!;
  const dirs = ['a', 'b', 'b/c', 'd e', 'q'];
  const key = () => `${prefix}/${pick(dirs)}/k${Math.floor(random() * 8)}`;
  let stopped = false;
  let done = 0;
  const maxOps = opts.maxOps ?? 50_000;
  const one = async (): Promise<void> => {
    const r = random();
    if (r < 0.45) await raw(baseUrl, 'PUT', key(), { value: `v${Math.floor(random() * 1e6)}` });
    else if (r < 0.55) await raw(baseUrl, 'DELETE', key());
    else if (r < 0.62) await raw(baseUrl, 'PUT', key(), { value: 'cas', prevExist: true });
    else if (r < 0.67) {
      const k = key();
      const cur = await raw(baseUrl, 'GET', k);
      const v = (cur.body.node as { value?: string } | undefined)?.value;
      if (v !== undefined) await raw(baseUrl, 'DELETE', k, { prevValue: v });
    } else if (r < 0.72) await raw(baseUrl, 'POST', `${prefix}/queue`, { value: 'job' });
    else if (r < 0.76) await raw(baseUrl, 'PUT', key(), { value: 'ttl', ttl: 1 + Math.floor(random() * 3) });
    else if (r < 0.79) await raw(baseUrl, 'DELETE', `${prefix}/${pick(dirs)}`, { recursive: true });
    else if (r < 0.82) await raw(baseUrl, 'PUT', `${prefix}/${pick(dirs)}/sub${Math.floor(random() * 2)}`, { dir: true });
    else if (r < 0.84) await raw(baseUrl, 'DELETE', `${prefix}/queue`, { recursive: true });
    else await raw(baseUrl, 'PUT', `${prefix}/flat${Math.floor(random() * 20)}`, { value: `f${done}` });
    done++;
  };
  const loops = Array.from({ length: opts.concurrency ?? 2 }, async () => {
    while (!stopped && done < maxOps) {
      const started = Date.now();
      try {
        await one();
      } catch {
        // a refused source write is part of the workload, not a test failure
      }
      if (opts.rate) await new Promise((r) => setTimeout(r, Math.max(0, 1000 / opts.rate! - (Date.now() - started))));
    }
  });
  return {
    written: () => done,
    async stop() {
      stopped = true;
      await Promise.all(loops);
      return done;
    },
  };
}
