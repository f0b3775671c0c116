// Wiring for a v3 destination: the source (v2 through the bridge, or v3), the destination, the lease mirror
// and the pipeline host. A v2 source's modules are loaded only for the bridge.
import { V3Client } from '../etcd/v3/client.js';
import type { Backend, BackendDeps } from './backend.js';
import { V3Destination } from './v3-destination.js';
import { V3Source } from './v3-source.js';
import { KeyMap } from './keys.js';
import { V3Lock } from './ha-lock.js';
import { FenceWatch } from './fence.js';
import { OwnWrites } from './own-writes.js';
import { ByteKeyMap } from './keyspace.js';
import { LeaseMirror } from './leases.js';
import { PipelineHost } from './pipeline.js';
import { V3Target } from './v3-writer.js';
import type { HaGate } from './ports.js';
import type { LeaseRef, Source } from './types.js';
import { v3PinnedReader } from './audit-readers.js';
import type { AuditReader, ChangeTracker } from './audit.js';

/** Prefetched source changes before the source's reader waits for the pipeline. */
const SOURCE_HIGH_WATER = 10_000;

export async function createV3Backend<H extends HaGate>({ config, log, metrics, budget, haController }: BackendDeps<H>): Promise<Backend<H>> {
  const map = new KeyMap(config.srcPrefix, config.dstPrefix, config.strip, config.ignoreRegex);
  const keys = new ByteKeyMap(map);
  let sourceRevision: number | null = null;
  const seen = (revision: number) => {
    if (sourceRevision === null || revision > sourceRevision) {
      sourceRevision = revision;
      metrics.sourceIndex.set(revision);
    }
  };
  const client = new V3Client(config.dst);
  let clockOffsetMs = (): number | null => null;
  let source: Source;
  let reader: AuditReader;
  if (config.srcApi === 'v2') {
    const [{ EtcdClient }, { v2SourceFor }, { v2BridgeReader }] = await Promise.all([
      import('../etcd/v2/client.js'),
      import('./v2-source.js'),
      import('./audit-readers-v2.js'),
    ]);
    const v2Client = new EtcdClient(config.src, { connections: 96 });
    clockOffsetMs = () => v2Client.clockOffsetMs();
    reader = v2BridgeReader(v2Client, map, client, keys, budget);
    source = v2SourceFor({ src: v2Client, map, config, budget, log, metrics, onSourceIndex: seen });
  } else {
    const srcV3 = new V3Client(config.src);
    reader = v3PinnedReader(srcV3, client, keys, budget, 'checkpoint');
    source = new V3Source({ client: srcV3, map: keys, highWater: SOURCE_HIGH_WATER, progressEveryMs: config.quietRearmMs, onSourceRevision: seen });
  }
  const own = new OwnWrites();
  const dst = new V3Destination(client, keys, config.dstMaxTxnOps, own);
  const leases = new LeaseMirror(source, client, log, (n) => metrics.leasesTracked.set(n));
  // A destination key found on a lease stands for: a v3 source lease of the same id, or the v2 key's TTL.
  const leaseFor = (dstKey: Buffer, dstLease: string): LeaseRef =>
    config.srcApi === 'v3'
      ? { id: dstLease, grantedTtl: 1 }
      : { id: `v2:0:${keys.toSrc(dstKey).toString('utf8')}`, grantedTtl: 1 };
  let ha: H | undefined;
  if (config.ha) {
    const lock = new V3Lock(client, Buffer.from(map.lockKey), config.instanceId, config.haTtl);
    dst.fence = () => lock.fence();
    ha = haController(lock);
  }
  const trackers = new Set<ChangeTracker>();
  const target = new V3Target({ config, dst, keys, leases, log, metrics, own, leaseFor, trackers });
  const host = new PipelineHost({ config, source, dst: target, log, metrics, sourceRevision: () => sourceRevision, trackers });
  const fence = new FenceWatch(async () => (await client.range(dst.fenceKey)).kvs[0]?.value.toString('utf8') ?? null);
  return {
    host,
    ha,
    fence,
    audit: {
      reader,
      engine: {
        trackers,
        applied: () => {
          const s = host.status();
          return s?.phase === 'tail' ? s.appliedIndex : null;
        },
        heal: (ids) => host.heal(ids.map((id) => Buffer.from(id, 'latin1'))),
        checkpoint: () => host.checkpointNow(),
      },
    },
    clockOffsetMs: () => clockOffsetMs(),
    loadIndex: () => dst.readCheckpoint(),
    async close() {
      fence.stop();
      leases.stop();
      await Promise.all([source.close(), client.close()]);
    },
  };
}
