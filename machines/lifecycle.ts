// The mirror's lifecycle: idle → starting → running.{reloading | recovering | tailing}, with stalled,
// outOfWindow, stopping, stopped and failed around it; with --ha, standby before (and after losing the lock);
// fenced once a switchover reversed the direction. Pure: real actors come from src/ through .provide().
import { assign, fromCallback, fromPromise, setup } from 'xstate';
import type {
  CampaignOutput,
  FaultInfo,
  LoadIndexInput,
  LoadIndexOutput,
  MirrorContext,
  MirrorEvent,
  MirrorInput,
  RunnerCommand,
  RunnerInput,
} from './types.js';

const notProvided = (): never => {
  throw new Error('actor not provided: supply it with lifecycle.provide({ actors })');
};

/** Backoff without jitter; src/ provides a jittered one. Capped so a long outage retries every 30 s. */
export const backoffMs = (attempt: number): number => Math.min(30_000, 500 * 2 ** Math.max(0, attempt - 1));

const faultOf = (event: MirrorEvent): FaultInfo | null => (event.type === 'runner.fault' ? event.fault : null);

const errorFault = (error: unknown): FaultInfo => {
  if (typeof error === 'object' && error !== null && 'code' in error && 'retryable' in error) return error as FaultInfo;
  return { code: 'EM_ERR', message: error instanceof Error ? error.message : String(error), retryable: false };
};

export const lifecycle = setup({
  types: {
    context: {} as MirrorContext,
    events: {} as MirrorEvent,
    input: {} as MirrorInput,
  },
  actors: {
    loadIndex: fromPromise<LoadIndexOutput, LoadIndexInput>(notProvided),
    runner: fromCallback<RunnerCommand, RunnerInput>(notProvided),
    drain: fromPromise<void, void>(notProvided),
    /** --ha: one attempt to take the destination's lock. */
    campaign: fromPromise<CampaignOutput, void>(notProvided),
    /** --ha: resolves when the lock is released or expires (a standby takes over at once). */
    lockReleased: fromPromise<void, void>(notProvided),
  },
  guards: {
    reloadRequested: ({ context }) => context.reload,
    indexFound: ({ event }) => (event as unknown as { output: LoadIndexOutput }).output.appliedIndex !== null,
    /** The source's history from the stored index is gone (whatever the API), or a proof was contradicted. */
    outOfWindow: ({ event }) => faultOf(event)?.historyLost === true,
    retryable: ({ event }) => faultOf(event)?.retryable === true,
    fenced: ({ event }) => faultOf(event)?.fenced === true,
    switchoverFenced: ({ event }) => faultOf(event)?.switchover === true,
    haEnabled: ({ context }) => context.ha,
    acquired: ({ event }) => (event as unknown as { output: CampaignOutput }).output.acquired,
    massDeleteRefused: ({ event }) => faultOf(event)?.code === 'EM_ERR_MASS_DELETE_REFUSED',
    retryableError: ({ event }) => errorFault((event as unknown as { error: unknown }).error).retryable,
    reconciling: ({ context }) => context.mode === 'reload' || context.mode === 'recover',
    resumeStarting: ({ context }) => context.mode === 'start',
    resumeReloading: ({ context }) => context.mode === 'reload',
    resumeRecovering: ({ context }) => context.mode === 'recover',
  },
  delays: {
    backoff: ({ context }) => backoffMs(context.attempt),
    /** Long enough for the state to be seen on /state and in the visualizer, short enough not to matter. */
    outOfWindowPause: 250,
    /** --ha: how often a standby tries the lock again when no release was seen (src/ provides --ha-ttl / 2). */
    takeover: 1_000,
  },
}).createMachine({
  id: 'mirror',
  initial: 'idle',
  context: ({ input }) => ({
    mode: 'start',
    reload: input.reload,
    ha: input.ha ?? false,
    appliedIndex: null,
    sourceIndex: null,
    attempt: 0,
    lastFault: null,
    reason: 'created',
  }),
  on: {
    'operator.stop': { target: '.stopping', actions: assign({ reason: ({ event }) => event.reason ?? 'stop requested' }) },
    // --ha, in every active state: the runner is stopped by leaving `running`, its writes abandoned (they are fenced).
    'lock.lost': { target: '.standby', actions: assign({ reason: ({ event }) => event.reason, attempt: 0 }) },
    // A switchover's fence beats everything but a stop, the HA lock included.
    'switchover.fenced': { target: '.fenced', actions: assign({ reason: ({ event }) => event.reason }) },
  },
  states: {
    idle: {
      on: {
        'operator.start': [
          { guard: 'haEnabled', target: 'standby', actions: assign({ reason: 'start requested: competing for the lock' }) },
          { target: 'starting', actions: assign({ reason: 'start requested' }) },
        ],
        'lock.lost': {},
      },
    },
    // --ha: another instance is active; this one keeps its clients and HTTP surface up and takes over when the lock
    // is released or expires.
    standby: {
      initial: 'campaigning',
      on: { 'lock.lost': {} },
      states: {
        campaigning: {
          invoke: {
            src: 'campaign',
            onDone: [
              { guard: 'acquired', target: '#mirror.starting', actions: assign({ reason: 'took the lock: active' }) },
              { target: 'waiting', actions: assign({ reason: ({ event }) => `standby: active is ${event.output.holder ?? 'unknown'}` }) },
            ],
            onError: { target: 'waiting', actions: assign({ reason: ({ event }) => `standby: lock not reachable (${errorFault(event.error).message})` }) },
          },
        },
        waiting: {
          invoke: { src: 'lockReleased', onDone: 'campaigning', onError: 'campaigning' },
          after: { takeover: 'campaigning' },
        },
      },
    },
    starting: {
      entry: assign({ mode: 'start' }),
      invoke: {
        src: 'loadIndex',
        input: ({ context }) => ({ reload: context.reload }),
        onDone: [
          {
            guard: 'reloadRequested',
            target: 'running.reloading',
            actions: assign({ mode: 'reload', appliedIndex: ({ event }) => event.output.appliedIndex, reason: '--reload requested' }),
          },
          {
            guard: 'indexFound',
            target: 'running.tailing',
            actions: assign({
              mode: 'tail',
              appliedIndex: ({ event }) => event.output.appliedIndex,
              reason: ({ event }) => `stored replication index ${event.output.appliedIndex}`,
            }),
          },
          {
            target: 'failed',
            actions: assign({
              reason: 'The replication key could not be found. Restart with --reload!',
              lastFault: { code: 'EM_ERR_NO_INDEX', message: 'replication index key missing', retryable: false },
            }),
          },
        ],
        onError: [
          {
            guard: 'retryableError',
            target: 'stalled',
            actions: assign({ lastFault: ({ event }) => errorFault(event.error), reason: ({ event }) => errorFault(event.error).message }),
          },
          {
            target: 'failed',
            actions: assign({ lastFault: ({ event }) => errorFault(event.error), reason: ({ event }) => errorFault(event.error).message }),
          },
        ],
      },
    },
    running: {
      initial: 'tailing',
      invoke: {
        src: 'runner',
        input: ({ context }): RunnerInput => ({
          mode: context.mode === 'reload' ? 'reload' : context.mode === 'recover' ? 'recover' : 'tail',
          appliedIndex: context.appliedIndex,
        }),
      },
      on: {
        // Sent by a reloading or recovering runner once the destination matches its source snapshot.
        'runner.reconciled': {
          guard: 'reconciling',
          target: '.tailing',
          actions: assign({
            mode: 'tail',
            appliedIndex: ({ event }) => event.etcdIndex,
            attempt: 0,
            reason: ({ context, event }) =>
              `${context.mode === 'recover' ? 'recovered' : 'reloaded'}: destination reconciled to source index ${event.etcdIndex}`,
          }),
        },
        'runner.progress': {
          actions: assign({
            appliedIndex: ({ event }) => event.appliedIndex,
            sourceIndex: ({ context, event }) => event.sourceIndex ?? context.sourceIndex,
            attempt: 0,
          }),
        },
        'runner.fault': [
          {
            guard: 'outOfWindow',
            target: 'outOfWindow',
            actions: assign({
              lastFault: ({ event }) => event.fault,
              reason: ({ event }) => (event.type === 'runner.fault' ? event.fault.message : 'out of window'),
            }),
          },
          {
            guard: 'switchoverFenced',
            target: 'fenced',
            actions: assign({ lastFault: ({ event }) => event.fault, reason: ({ event }) => event.fault.message }),
          },
          {
            guard: 'fenced',
            target: 'standby',
            actions: assign({ lastFault: ({ event }) => event.fault, reason: ({ event }) => `fenced: ${event.fault.message}`, attempt: 0 }),
          },
          {
            guard: 'massDeleteRefused',
            target: 'stalled',
            actions: assign({ lastFault: ({ event }) => event.fault, reason: ({ event }) => event.fault.message }),
          },
          {
            guard: 'retryable',
            target: 'stalled',
            actions: assign({ lastFault: ({ event }) => event.fault, reason: ({ event }) => event.fault.message }),
          },
          { target: 'failed', actions: assign({ lastFault: ({ event }) => event.fault, reason: ({ event }) => event.fault.message }) },
        ],
      },
      // `mode` is set by the transitions that enter these states: the runner's input is read on entering `running`,
      // before any child state's entry actions run.
      states: {
        reloading: {},
        recovering: {},
        tailing: {},
      },
    },
    outOfWindow: {
      entry: assign({ mode: 'recover' }),
      after: { outOfWindowPause: { target: 'running.recovering', actions: assign({ reason: 'recovering from a source snapshot' }) } },
    },
    stalled: {
      entry: assign({ attempt: ({ context }) => context.attempt + 1 }),
      after: {
        backoff: [
          { guard: 'resumeStarting', target: 'starting', actions: assign({ reason: 'retrying after backoff' }) },
          { guard: 'resumeReloading', target: 'running.reloading', actions: assign({ reason: 'retrying after backoff' }) },
          { guard: 'resumeRecovering', target: 'running.recovering', actions: assign({ reason: 'retrying after backoff' }) },
          { target: 'running.tailing', actions: assign({ reason: 'retrying after backoff' }) },
        ],
      },
    },
    // The direction was switched over: writes nothing, stays up (HTTP, /state) so that operators see why, until
    // stopped. Not final: exiting would let a supervisor restart it, only to be refused.
    fenced: {
      on: { 'lock.lost': {}, 'switchover.fenced': {} },
    },
    stopping: {
      invoke: { src: 'drain', onDone: 'stopped', onError: 'stopped' },
      // Already stopping: a second request must not restart the drain.
      on: { 'operator.stop': {}, 'lock.lost': {}, 'switchover.fenced': {} },
    },
    stopped: { type: 'final' },
    failed: { type: 'final' },
  },
});

export type LifecycleMachine = typeof lifecycle;
