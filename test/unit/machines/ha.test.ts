// --ha in the lifecycle: standby until the lock is ours, back to standby when it is lost or a write is fenced.
// Fake actors and a SimulatedClock: no sockets, no sleeping.
import { describe, expect, it } from 'vitest';
import { createActor, fromCallback, fromPromise, SimulatedClock } from 'xstate';
import { lifecycle } from '../../../machines/lifecycle.js';
import type { CampaignOutput, MirrorEvent, RunnerCommand, RunnerInput } from '../../../machines/types.js';

const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function start(campaigns: CampaignOutput[]) {
  const clock = new SimulatedClock();
  let campaignCalls = 0;
  let releasedWaits = 0;
  let releaseNow: (() => void) | null = null;
  let sendBack: ((e: MirrorEvent) => void) | undefined;
  let runnerStops = 0;
  const machine = lifecycle.provide({
    actors: {
      loadIndex: fromPromise(async () => ({ appliedIndex: 42 })),
      runner: fromCallback<RunnerCommand, RunnerInput>(({ sendBack: back }) => {
        sendBack = back;
        return () => void runnerStops++;
      }),
      drain: fromPromise(async () => {}),
      campaign: fromPromise<CampaignOutput, void>(async () => campaigns[Math.min(campaignCalls++, campaigns.length - 1)]!),
      lockReleased: fromPromise<void, void>(() => {
        releasedWaits++;
        return new Promise<void>((r) => (releaseNow = r));
      }),
    },
  });
  const actor = createActor(machine, { input: { reload: false, ha: true }, clock }).start();
  return {
    actor,
    clock,
    value: () => actor.getSnapshot().value,
    reason: () => actor.getSnapshot().context.reason,
    get campaignCalls() {
      return campaignCalls;
    },
    get releasedWaits() {
      return releasedWaits;
    },
    get runnerStops() {
      return runnerStops;
    },
    release: () => releaseNow?.(),
    fromRunner: (e: MirrorEvent) => sendBack!(e),
  };
}

describe('lifecycle with --ha', () => {
  it('starts in standby and becomes active (starting → tailing) once the campaign takes the lock', async () => {
    const h = start([{ acquired: true, holder: null }]);
    h.actor.send({ type: 'operator.start' });
    await flush();
    expect(h.value()).toEqual({ running: 'tailing' });
    expect(h.campaignCalls).toBe(1);
  });

  it('waits while another holds the lock, and campaigns again at once when it is released', async () => {
    const h = start([{ acquired: false, holder: 'host-a:8000' }, { acquired: true, holder: null }]);
    h.actor.send({ type: 'operator.start' });
    await flush();
    expect(h.value()).toEqual({ standby: 'waiting' });
    expect(h.reason()).toBe('standby: active is host-a:8000');
    h.release();
    await flush();
    await flush();
    expect(h.value()).toEqual({ running: 'tailing' });
    expect(h.campaignCalls).toBe(2);
  });

  it('campaigns again after the takeover delay when no release was seen (an expiry it missed)', async () => {
    const h = start([{ acquired: false, holder: 'host-a:8000' }, { acquired: true, holder: null }]);
    h.actor.send({ type: 'operator.start' });
    await flush();
    h.clock.increment(999);
    await flush();
    expect(h.value()).toEqual({ standby: 'waiting' });
    h.clock.increment(1);
    await flush();
    await flush();
    expect(h.value()).toEqual({ running: 'tailing' });
  });

  it('stands by at once when the lock is lost or a write is fenced: the runner is stopped, nothing retried', async () => {
    const h = start([{ acquired: true, holder: null }, { acquired: false, holder: 'host-b:8000' }]);
    h.actor.send({ type: 'operator.start' });
    await flush();
    h.actor.send({ type: 'lock.lost', reason: 'lock renewal missed its deadline' });
    await flush();
    expect(h.value()).toEqual({ standby: 'waiting' });
    expect(h.runnerStops).toBe(1);

    const again = start([{ acquired: true, holder: null }, { acquired: false, holder: 'host-b:8000' }]);
    again.actor.send({ type: 'operator.start' });
    await flush();
    again.fromRunner({ type: 'runner.fault', fault: { code: 'EM_ERR_FENCED', message: 'the lock is held by host-b:8000', retryable: false, fenced: true } });
    await flush();
    expect(again.value()).toEqual({ standby: 'waiting' });
    expect(again.actor.getSnapshot().context.attempt).toBe(0);
  });

  it('stops from standby without draining a runner it never had', async () => {
    const h = start([{ acquired: false, holder: 'host-a:8000' }]);
    h.actor.send({ type: 'operator.start' });
    await flush();
    h.actor.send({ type: 'operator.stop' });
    await flush();
    expect(h.value()).toBe('stopped');
    expect(h.runnerStops).toBe(0);
  });

  it('a switchover fence beats the lock: a fenced write or the fence poll idles an active or standby instance until stopped', async () => {
    const active = start([{ acquired: true, holder: null }]);
    active.actor.send({ type: 'operator.start' });
    await flush();
    active.fromRunner({ type: 'runner.fault', fault: { code: 'EM_ERR_SWITCHOVER_FENCED', message: 'fenced by a switchover at t', retryable: false, fenced: true, switchover: true } });
    await flush();
    expect([active.value(), active.reason(), active.runnerStops]).toEqual(['fenced', 'fenced by a switchover at t', 1]);
    active.actor.send({ type: 'lock.lost', reason: 'renewal missed' });
    await flush();
    expect(active.value()).toBe('fenced');

    const standby = start([{ acquired: false, holder: 'host-a:8000' }]);
    standby.actor.send({ type: 'operator.start' });
    await flush();
    standby.actor.send({ type: 'switchover.fenced', reason: 'fenced by a switchover at t' });
    await flush();
    expect(standby.value()).toBe('fenced');
    standby.clock.increment(60_000);
    await flush();
    expect([standby.value(), standby.campaignCalls]).toEqual(['fenced', 1]);
    standby.actor.send({ type: 'operator.stop' });
    await flush();
    expect(standby.value()).toBe('stopped');
  });
});
