// Wiring for a v2 destination: the source and destination clients, the --ha lock and fence, and the v2 runner
// (src/replication/v2/runner.ts) with its ordered writer, healer and TTL keeper.
import { EtcdClient, type WriteTracker } from '../etcd/v2/client.js';
import { BadCheckpointError, FencedError, KeyNotFoundError, SwitchoverFencedError } from '../etcd/errors.js';
import { FenceWatch, fenceKey } from './fence.js';
import type { Backend, BackendDeps } from './backend.js';
import { V2Fence, V2Lock } from './ha-lock.js';
import { KeyMap } from './keys.js';
import { OwnWrites } from './own-writes.js';
import type { HaGate } from './ports.js';
import { BodyGaps } from './v2/body-gaps.js';
import { RunnerHost } from './v2/runner.js';
import { v2TreeReader } from './audit-readers-v2.js';
import type { ChangeTracker } from './audit.js';

export function createV2Backend<H extends HaGate>({ config, log, metrics, ordering, budget, haController }: BackendDeps<H>): Backend<H> {
  const map = new KeyMap(config.srcPrefix, config.dstPrefix, config.strip, config.ignoreRegex);
  // Catch-up keeps up to 64 long-polls in flight, plus the stream, probes, guards and TTL reads.
  const src = new EtcdClient(config.src, { connections: 96 });
  const own = new OwnWrites();
  let ha: H | undefined;
  let fence: V2Fence | undefined;
  // The switchover fence is set by a poll of its key (v2 has no multi-key conditions); checked like the HA fence.
  const check = () => {
    if (switchover.reason) throw new SwitchoverFencedError(switchover.reason);
    if (fence && !fence.mayWrite()) throw new FencedError('not writing: the HA lock is not renewed');
  };
  // Every destination write — replayed events, heals, TTL refreshes, the index — passes the fence checks as it is
  // sent (the client calls begin() for each), so a fenced instance's healer or TTL keeper cannot write either.
  const writes: WriteTracker = {
    begin: () => {
      check();
      return own.begin();
    },
    end: (seq, index) => own.end(seq, index),
    // Checked again as the write goes onto its connection: one queued behind others (or in a process paused since
    // begin()) must not land after another instance took over.
    dispatching: check,
  };
  // A reconcile writes with 4 × --write-concurrency in flight; a few more for the index, healer and TTL keeper.
  const dst = new EtcdClient(config.dst, { connections: config.writeConcurrency * 4 + 4, writes });
  const key = fenceKey(map.dstRoot);
  const switchover = new FenceWatch(async () => {
    try {
      return (await dst.get(key, { quorum: true })).body.node.value ?? '';
    } catch (err) {
      if (err instanceof KeyNotFoundError) return null;
      throw err;
    }
  });
  // The lock has its own connections: its renewals never queue behind data writes, and are not fenced themselves.
  const lockClient = config.ha ? new EtcdClient(config.dst, { connections: 2 }) : null;
  if (lockClient) {
    const controller = haController(new V2Lock(lockClient, map.lockKey, config.instanceId, config.haTtl));
    ha = controller;
    fence = new V2Fence(() => controller.mayWrite());
  }
  const trackers = new Set<ChangeTracker>();
  const host = new RunnerHost({ config, src, dst, map, log, metrics, own, ordering, gaps: new BodyGaps(), fence, budget, trackers });
  return {
    host,
    ha,
    audit: {
      reader: v2TreeReader(src, dst, map, budget),
      engine: {
        trackers,
        applied: () => {
          const s = host.status();
          return s?.phase === 'tail' ? s.appliedIndex : null;
        },
        heal: (ids) => host.heal(ids),
      },
    },
    fence: switchover,
    async loadIndex() {
      try {
        const node = (await dst.get(map.indexKey, { quorum: true })).body.node;
        // An instance that just became active writes its first checkpoint as a swap on what it read here.
        if (fence) fence.prevIndex = node.modifiedIndex;
        const raw = node.value ?? '';
        if (!/^\d+$/.test(raw.trim())) {
          throw new BadCheckpointError(`the replication index at ${map.indexKey} is not a decimal number`);
        }
        return Number(raw.trim());
      } catch (err) {
        if (err instanceof KeyNotFoundError) {
          if (fence) fence.prevIndex = null;
          return null;
        }
        throw err;
      }
    },
    clockOffsetMs: () => src.clockOffsetMs(),
    close: async () => {
      switchover.stop();
      await Promise.all([src.close(), dst.close(), lockClient?.close()]);
    },
  };
}
