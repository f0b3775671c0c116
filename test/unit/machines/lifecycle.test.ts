// The lifecycle statechart with fake actors and a SimulatedClock: no sockets, no sleeping.
import { describe, expect, it } from 'vitest';
import { createActor, fromCallback, fromPromise, SimulatedClock } from 'xstate';
import { backoffMs, lifecycle } from '../../../machines/lifecycle.js';
import type {
  FaultInfo,
  LoadIndexInput,
  LoadIndexOutput,
  MirrorEvent,
  RunnerCommand,
  RunnerInput,
} from '../../../machines/types.js';

/** Lets promise actors settle and their done/error events reach the machine. */
const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(err: unknown): void;
}
function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

interface Options {
  reload?: boolean;
  /** What the nth call (1-based) of loadIndex does. Default: stored index 42. */
  load?: (call: number) => Promise<LoadIndexOutput>;
  /** Drain completion; default resolves at once. */
  drain?: () => Promise<void>;
}

function start(opts: Options = {}) {
  const clock = new SimulatedClock();
  const loadInputs: LoadIndexInput[] = [];
  const runnerInputs: RunnerInput[] = [];
  let runnerStops = 0;
  let drains = 0;
  let sendBack: ((event: MirrorEvent) => void) | undefined;

  const machine = lifecycle.provide({
    actors: {
      loadIndex: fromPromise<LoadIndexOutput, LoadIndexInput>(async ({ input }) => {
        loadInputs.push(input);
        return (opts.load ?? (async () => ({ appliedIndex: 42 })))(loadInputs.length);
      }),
      runner: fromCallback<RunnerCommand, RunnerInput>(({ input, sendBack: back }) => {
        runnerInputs.push(input);
        sendBack = back;
        return () => {
          runnerStops++;
        };
      }),
      drain: fromPromise<void, void>(async () => {
        drains++;
        await (opts.drain ?? (async () => {}))();
      }),
    },
  });
  const actor = createActor(machine, { input: { reload: opts.reload ?? false }, clock }).start();

  return {
    actor,
    clock,
    loadInputs,
    runnerInputs,
    get runnerStops() {
      return runnerStops;
    },
    get drains() {
      return drains;
    },
    /** Sends an event from inside the current runner actor (its sendBack). */
    fromRunner(event: MirrorEvent) {
      if (!sendBack) throw new Error('no runner has been started');
      sendBack(event);
    },
    value: () => actor.getSnapshot().value,
    context: () => actor.getSnapshot().context,
  };
}

/** Starts the machine and waits until it has left `starting`. */
async function started(opts: Options = {}) {
  const h = start(opts);
  h.actor.send({ type: 'operator.start' });
  await flush();
  return h;
}

const retryableFault: FaultInfo = { code: 'EM_ERR_TRANSPORT', message: 'ECONNRESET', retryable: true };
const outOfWindowFault: FaultInfo = {
  code: 'EM_ERR_EVENT_INDEX_CLEARED',
  message: 'etcd error 401: The event in requested index is outdated and cleared',
  retryable: false,
  errorCode: 401,
  historyLost: true,
  etcdIndex: 1204,
};
const fatalFault: FaultInfo = { code: 'EM_ERR_UNAUTHORIZED', message: 'etcd refused the credentials', retryable: false, errorCode: 110 };

describe('lifecycle: start', () => {
  it('begins idle with the initial context', () => {
    const h = start({ reload: true });

    expect(h.value()).toBe('idle');
    expect(h.context()).toEqual({
      mode: 'start',
      reload: true,
      ha: false,
      appliedIndex: null,
      sourceIndex: null,
      attempt: 0,
      lastFault: null,
      reason: 'created',
    });
    expect(h.loadInputs).toEqual([]);
  });

  it('goes to starting on operator.start and asks loadIndex, passing the reload flag', () => {
    const gate = deferred<LoadIndexOutput>();
    const h = start({ reload: false, load: () => gate.promise });

    h.actor.send({ type: 'operator.start' });

    expect(h.value()).toBe('starting');
    expect(h.loadInputs).toEqual([{ reload: false }]);
  });

  it('tails from the stored index: running.tailing with runner input {mode: tail, appliedIndex: 42}', async () => {
    const h = await started({ load: async () => ({ appliedIndex: 42 }) });

    expect(h.value()).toEqual({ running: 'tailing' });
    expect(h.runnerInputs).toEqual([{ mode: 'tail', appliedIndex: 42 }]);
    expect(h.context()).toMatchObject({ mode: 'tail', appliedIndex: 42, reason: 'stored replication index 42' });
  });

  it('fails with the reference message when the index key is missing and --reload was not given', async () => {
    const h = await started({ reload: false, load: async () => ({ appliedIndex: null }) });

    expect(h.value()).toBe('failed');
    expect(h.actor.getSnapshot().status).toBe('done');
    expect(h.context().reason).toBe('The replication key could not be found. Restart with --reload!');
    expect(h.context().lastFault).toMatchObject({ code: 'EM_ERR_NO_INDEX', retryable: false });
    expect(h.runnerInputs).toEqual([]);
  });

  it('accepts index 0 as a stored index (not as missing)', async () => {
    const h = await started({ load: async () => ({ appliedIndex: 0 }) });

    expect(h.value()).toEqual({ running: 'tailing' });
    expect(h.runnerInputs).toEqual([{ mode: 'tail', appliedIndex: 0 }]);
  });

  it('ignores operator.start once started', async () => {
    const h = await started();

    h.actor.send({ type: 'operator.start' });
    await flush();

    expect(h.value()).toEqual({ running: 'tailing' });
    expect(h.loadInputs).toHaveLength(1);
    expect(h.runnerInputs).toHaveLength(1);
  });
});

describe('lifecycle: --reload', () => {
  it('reloads when asked, with the index missing: running.reloading, runner mode reload', async () => {
    const h = await started({ reload: true, load: async () => ({ appliedIndex: null }) });

    expect(h.value()).toEqual({ running: 'reloading' });
    expect(h.runnerInputs).toEqual([{ mode: 'reload', appliedIndex: null }]);
    expect(h.context().mode).toBe('reload');
  });

  it('reloads when asked even if an index is stored', async () => {
    const h = await started({ reload: true, load: async () => ({ appliedIndex: 42 }) });

    expect(h.value()).toEqual({ running: 'reloading' });
    expect(h.runnerInputs).toEqual([{ mode: 'reload', appliedIndex: 42 }]);
  });

  it('goes on to tailing on runner.reconciled without restarting the runner', async () => {
    const h = await started({ reload: true, load: async () => ({ appliedIndex: null }) });

    h.fromRunner({ type: 'runner.reconciled', etcdIndex: 2007 });

    expect(h.value()).toEqual({ running: 'tailing' });
    expect(h.runnerInputs).toHaveLength(1);
    expect(h.runnerStops).toBe(0);
    expect(h.context()).toMatchObject({ mode: 'tail', appliedIndex: 2007, attempt: 0 });
    expect(h.context().reason).toContain('2007');
  });

  it('ignores runner.reconciled while tailing', async () => {
    const h = await started();

    h.fromRunner({ type: 'runner.reconciled', etcdIndex: 9999 });

    expect(h.value()).toEqual({ running: 'tailing' });
    expect(h.context().appliedIndex).toBe(42);
  });
});

describe('lifecycle: out of the history window (errorCode 401)', () => {
  it('goes to outOfWindow, then after 250 ms to running.recovering with runner mode recover', async () => {
    const h = await started();

    h.fromRunner({ type: 'runner.fault', fault: outOfWindowFault });

    expect(h.value()).toBe('outOfWindow');
    expect(h.runnerStops).toBe(1);
    expect(h.context().lastFault).toEqual(outOfWindowFault);
    expect(h.context().mode).toBe('recover');

    h.clock.increment(249);
    expect(h.value()).toBe('outOfWindow');

    h.clock.increment(1);
    expect(h.value()).toEqual({ running: 'recovering' });
    expect(h.runnerInputs).toEqual([
      { mode: 'tail', appliedIndex: 42 },
      { mode: 'recover', appliedIndex: 42 },
    ]);
  });

  it('takes 401 as out-of-window even when the fault claims to be retryable', async () => {
    const h = await started();

    h.fromRunner({ type: 'runner.fault', fault: { ...outOfWindowFault, retryable: true } });

    expect(h.value()).toBe('outOfWindow');
  });

  it('tails again after the recovery reconciled, without restarting the runner', async () => {
    const h = await started();
    h.fromRunner({ type: 'runner.fault', fault: outOfWindowFault });
    h.clock.increment(250);

    h.fromRunner({ type: 'runner.reconciled', etcdIndex: 1204 });

    expect(h.value()).toEqual({ running: 'tailing' });
    expect(h.runnerInputs).toHaveLength(2);
    expect(h.context()).toMatchObject({ mode: 'tail', appliedIndex: 1204 });
  });
});

describe('lifecycle: stalled and backoff', () => {
  it('stalls on a retryable fault, then resumes tailing after 500 ms with a fresh runner', async () => {
    const h = await started();

    h.fromRunner({ type: 'runner.fault', fault: retryableFault });

    expect(h.value()).toBe('stalled');
    expect(h.runnerStops).toBe(1);
    expect(h.context()).toMatchObject({ attempt: 1, lastFault: retryableFault, reason: 'ECONNRESET' });

    h.clock.increment(499);
    expect(h.value()).toBe('stalled');

    h.clock.increment(1);
    expect(h.value()).toEqual({ running: 'tailing' });
    expect(h.runnerInputs).toEqual([
      { mode: 'tail', appliedIndex: 42 },
      { mode: 'tail', appliedIndex: 42 },
    ]);
  });

  it('doubles the backoff on each failed attempt and caps it at 30 s', async () => {
    const h = await started();
    const expected = [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000];

    for (const [i, delay] of expected.entries()) {
      h.fromRunner({ type: 'runner.fault', fault: retryableFault });
      expect(h.context().attempt).toBe(i + 1);

      h.clock.increment(delay - 1);
      expect(h.value(), `attempt ${i + 1} left stalled before ${delay} ms`).toBe('stalled');
      h.clock.increment(1);
      expect(h.value(), `attempt ${i + 1} still stalled after ${delay} ms`).toEqual({ running: 'tailing' });
    }
  });

  it('resumes reloading (runner mode reload) after a retryable fault while reloading', async () => {
    const h = await started({ reload: true, load: async () => ({ appliedIndex: null }) });

    h.fromRunner({ type: 'runner.fault', fault: retryableFault });
    expect(h.value()).toBe('stalled');
    h.clock.increment(500);

    expect(h.value()).toEqual({ running: 'reloading' });
    expect(h.runnerInputs.map((i) => i.mode)).toEqual(['reload', 'reload']);
  });

  it('resumes recovering (runner mode recover) after a retryable fault while recovering', async () => {
    const h = await started();
    h.fromRunner({ type: 'runner.fault', fault: outOfWindowFault });
    h.clock.increment(250);

    h.fromRunner({ type: 'runner.fault', fault: retryableFault });
    expect(h.value()).toBe('stalled');
    h.clock.increment(500);

    expect(h.value()).toEqual({ running: 'recovering' });
    expect(h.runnerInputs.map((i) => i.mode)).toEqual(['tail', 'recover', 'recover']);
  });

  it('tails after a retryable fault that came after a reload reconciled', async () => {
    const h = await started({ reload: true, load: async () => ({ appliedIndex: null }) });
    h.fromRunner({ type: 'runner.reconciled', etcdIndex: 2007 });

    h.fromRunner({ type: 'runner.fault', fault: retryableFault });
    h.clock.increment(500);

    expect(h.value()).toEqual({ running: 'tailing' });
    expect(h.runnerInputs).toEqual([
      { mode: 'reload', appliedIndex: null },
      { mode: 'tail', appliedIndex: 2007 },
    ]);
  });

  it('stalls (does not fail) on EM_ERR_MASS_DELETE_REFUSED, and retries the reload after the backoff', async () => {
    const h = await started({ reload: true, load: async () => ({ appliedIndex: null }) });
    const refused: FaultInfo = { code: 'EM_ERR_MASS_DELETE_REFUSED', message: 'would delete 90% of the replica', retryable: false };

    h.fromRunner({ type: 'runner.fault', fault: refused });

    expect(h.value()).toBe('stalled');
    expect(h.context().lastFault).toEqual(refused);
    h.clock.increment(500);
    expect(h.value()).toEqual({ running: 'reloading' });
  });

  it('fails for good on a non-retryable fault', async () => {
    const h = await started();

    h.fromRunner({ type: 'runner.fault', fault: fatalFault });

    expect(h.value()).toBe('failed');
    expect(h.actor.getSnapshot().status).toBe('done');
    expect(h.runnerStops).toBe(1);
    expect(h.context()).toMatchObject({ lastFault: fatalFault, reason: 'etcd refused the credentials' });

    h.clock.increment(60_000);
    expect(h.value()).toBe('failed');
    expect(h.runnerInputs).toHaveLength(1);
  });
});

describe('lifecycle: loadIndex failures', () => {
  it('stalls on a retryable rejection and starts again after the backoff', async () => {
    const h = await started({
      load: async (call) => {
        if (call === 1) throw { code: 'X', message: 'm', retryable: true };
        return { appliedIndex: 7 };
      },
    });

    expect(h.value()).toBe('stalled');
    expect(h.context()).toMatchObject({ attempt: 1, reason: 'm', lastFault: { code: 'X', message: 'm', retryable: true } });

    h.clock.increment(499);
    expect(h.value()).toBe('stalled');
    h.clock.increment(1);
    expect(h.value()).toBe('starting');
    expect(h.loadInputs).toHaveLength(2);

    await flush();
    expect(h.value()).toEqual({ running: 'tailing' });
    expect(h.runnerInputs).toEqual([{ mode: 'tail', appliedIndex: 7 }]);
  });

  it('fails on a non-retryable rejection', async () => {
    const h = await started({
      load: async () => {
        throw { code: 'EM_ERR_BAD_INDEX', message: 'not a decimal number', retryable: false };
      },
    });

    expect(h.value()).toBe('failed');
    expect(h.context().reason).toBe('not a decimal number');
    expect(h.context().lastFault).toMatchObject({ code: 'EM_ERR_BAD_INDEX' });
  });

  it('fails on a plain Error (no code/retryable), keeping its message', async () => {
    const h = await started({
      load: async () => {
        throw new Error('disk on fire');
      },
    });

    expect(h.value()).toBe('failed');
    expect(h.context().lastFault).toEqual({ code: 'EM_ERR', message: 'disk on fire', retryable: false });
  });
});

describe('lifecycle: progress', () => {
  it('records appliedIndex and sourceIndex from runner.progress, keeping sourceIndex when null', async () => {
    const h = await started();

    h.fromRunner({ type: 'runner.progress', appliedIndex: 50, sourceIndex: 60 });
    expect(h.context()).toMatchObject({ appliedIndex: 50, sourceIndex: 60 });

    h.fromRunner({ type: 'runner.progress', appliedIndex: 55, sourceIndex: null });
    expect(h.context()).toMatchObject({ appliedIndex: 55, sourceIndex: 60 });
    expect(h.value()).toEqual({ running: 'tailing' });
  });

  it('resets the attempt counter, so the next backoff is 500 ms again', async () => {
    const h = await started();
    h.fromRunner({ type: 'runner.fault', fault: retryableFault });
    h.clock.increment(500);
    h.fromRunner({ type: 'runner.fault', fault: retryableFault });
    h.clock.increment(1_000);
    expect(h.context().attempt).toBe(2);

    h.fromRunner({ type: 'runner.progress', appliedIndex: 43, sourceIndex: 43 });
    expect(h.context().attempt).toBe(0);

    h.fromRunner({ type: 'runner.fault', fault: retryableFault });
    h.clock.increment(499);
    expect(h.value()).toBe('stalled');
    h.clock.increment(1);
    expect(h.value()).toEqual({ running: 'tailing' });
  });

  it('restarts the runner from the progressed index after a stall', async () => {
    const h = await started();
    h.fromRunner({ type: 'runner.progress', appliedIndex: 100, sourceIndex: 120 });

    h.fromRunner({ type: 'runner.fault', fault: retryableFault });
    h.clock.increment(500);

    expect(h.runnerInputs[1]).toEqual({ mode: 'tail', appliedIndex: 100 });
  });
});

describe('lifecycle: stop', () => {
  it('operator.stop from tailing: stopping (runner stopped, drain invoked), then stopped', async () => {
    const gate = deferred<void>();
    const h = await started({ drain: () => gate.promise });

    h.actor.send({ type: 'operator.stop', reason: 'SIGTERM' });

    expect(h.value()).toBe('stopping');
    expect(h.runnerStops).toBe(1);
    expect(h.drains).toBe(1);
    expect(h.context().reason).toBe('SIGTERM');

    gate.resolve();
    await flush();

    expect(h.value()).toBe('stopped');
    expect(h.actor.getSnapshot().status).toBe('done');
  });

  it('uses a default reason', async () => {
    const h = await started();
    h.actor.send({ type: 'operator.stop' });
    expect(h.context().reason).toBe('stop requested');
  });

  it('reaches stopped even if draining fails', async () => {
    const h = await started({
      drain: async () => {
        throw new Error('drain timed out');
      },
    });

    h.actor.send({ type: 'operator.stop' });
    await flush();

    expect(h.value()).toBe('stopped');
  });

  it.each([
    ['idle', async () => start()],
    ['starting', async () => {
      const h = start({ load: () => new Promise(() => {}) });
      h.actor.send({ type: 'operator.start' });
      return h;
    }],
    ['stalled', async () => {
      const h = await started();
      h.fromRunner({ type: 'runner.fault', fault: retryableFault });
      return h;
    }],
    ['outOfWindow', async () => {
      const h = await started();
      h.fromRunner({ type: 'runner.fault', fault: outOfWindowFault });
      return h;
    }],
  ])('operator.stop from %s → stopping → stopped, and no timer fires afterwards', async (state, make) => {
    const h = await make();
    expect(JSON.stringify(h.value())).toContain(state);

    h.actor.send({ type: 'operator.stop' });
    await flush();

    expect(h.value()).toBe('stopped');
    const runners = h.runnerInputs.length;
    h.clock.increment(60_000);
    expect(h.value()).toBe('stopped');
    expect(h.runnerInputs).toHaveLength(runners);
  });

  // The root-level operator.stop transition targets '.stopping' from any state, including stopping itself: it
  // exits and re-enters stopping, cancelling the running drain actor and invoking drain a second time.
  // (src/daemon/main.ts exits on a second signal, so only MirrorHandle.stop() callers can hit this today.)
  it('a second operator.stop while stopping does not start a second drain', async () => {
    const gate = deferred<void>();
    const h = await started({ drain: () => gate.promise });
    h.actor.send({ type: 'operator.stop' });

    h.actor.send({ type: 'operator.stop', reason: 'second signal' });

    expect(h.value()).toBe('stopping');
    expect(h.drains).toBe(1);
    gate.resolve();
    await flush();
    expect(h.value()).toBe('stopped');
  });
});

describe('lifecycle: snapshot and helpers', () => {
  it('keeps a JSON-serializable persisted snapshot (served on /state)', async () => {
    const h = await started();
    h.fromRunner({ type: 'runner.fault', fault: outOfWindowFault });

    const persisted = h.actor.getPersistedSnapshot();

    expect(() => JSON.stringify(persisted)).not.toThrow();
    expect(JSON.parse(JSON.stringify(h.context()))).toEqual(h.context());
  });

  it('backoffMs: 500 ms doubling per attempt, capped at 30 s', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7, 8, 100].map(backoffMs)).toEqual([500, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]);
  });

  it('the placeholder actors throw when not provided', async () => {
    const actor = createActor(lifecycle, { input: { reload: false }, clock: new SimulatedClock() }).start();

    actor.send({ type: 'operator.start' });
    await flush();

    expect(actor.getSnapshot().value).toBe('failed');
    expect(actor.getSnapshot().context.reason).toMatch(/actor not provided/);
  });
});
