// Wiring for a v2 destination: the source and destination clients, the --ha lock and fence, the v2 source and
// destination (src/replication/v2/destination.ts: ordered writer, healer, TTL keeper) on the pipeline.
import { EtcdClient, type WriteTracker } from '../etcd/v2/client.js';
import { FencedError, KeyNotFoundError, SwitchoverFencedError } from '../etcd/errors.js';
import { FenceWatch, fenceKey } from './fence.js';
import type { Backend, BackendDeps } from './backend.js';
import { V2Fence, V2Lock } from './ha-lock.js';
import { KeyMap } from './keys.js';
import { OwnWrites } from './own-writes.js';
import type { HaGate } from './ports.js';
import { V2Target } from './v2/destination.js';
import { PipelineHost } from './pipeline.js';
import { v2SourceFor } from './v2-source.js';
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
  const target = new V2Target({ config, src, dst, map, log, metrics, own, ordering, fence, budget, trackers });
  let sourceRevision: number | null = null;
  const source = v2SourceFor({
    src,
    map,
    config,
    budget,
    log,
    metrics,
    treeSnapshots: true,
    onSourceIndex: (index) => {
      if (sourceRevision !== null && index <= sourceRevision) return;
      sourceRevision = index;
      metrics.sourceIndex.set(index);
      target.sourceIndexSeen(index);
    },
  });
  const host = new PipelineHost({ config, source, dst: target, log, metrics, sourceRevision: () => sourceRevision, trackers });
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
        heal: (ids) => host.heal(ids.map((id) => Buffer.from(id))),
      },
    },
    fence: switchover,
    loadIndex: () => target.readCheckpoint(),
    clockOffsetMs: () => src.clockOffsetMs(),
    close: async () => {
      switchover.stop();
      await Promise.all([src.close(), dst.close(), lockClient?.close()]);
    },
  };
}
