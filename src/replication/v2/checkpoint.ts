// The checkpoint of a v2 destination: the source index replicated up to, a decimal in one key. With --ha every
// write is a compare-and-swap on this instance's own previous one, so a second active instance is fenced out.
import type { EtcdClient } from '../../etcd/v2/client.js';
import { BadCheckpointError, CompareFailedError, FencedError, KeyNotFoundError, NodeExistError } from '../../etcd/errors.js';
import type { V2Fence } from '../ha-lock.js';

/** The stored checkpoint (null: none yet); with --ha, remembers what the first swap compares against. */
export async function readCheckpoint(dst: EtcdClient, key: string, fence: V2Fence | undefined): Promise<number | null> {
  try {
    const node = (await dst.get(key, { quorum: true })).body.node;
    // An instance that just became active writes its first checkpoint as a swap on what it read here.
    if (fence) fence.prevIndex = node.modifiedIndex;
    const raw = (node.value ?? '').trim();
    if (!/^\d+$/.test(raw)) throw new BadCheckpointError(`the replication index at ${key} is not a decimal number`);
    return Number(raw);
  } catch (err) {
    if (err instanceof KeyNotFoundError) {
      if (fence) fence.prevIndex = null;
      return null;
    }
    throw err;
  }
}

/** Writes the checkpoint; with --ha as a compare-and-swap on this instance's own previous write. */
export async function putCheckpoint(dst: EtcdClient, key: string, index: number, fence: V2Fence | undefined): Promise<void> {
  if (!fence) {
    await dst.put(key, { value: String(index) });
    return;
  }
  try {
    const cas = fence.prevIndex === null ? { prevExist: false } : { prevIndex: fence.prevIndex };
    fence.prevIndex = (await dst.put(key, { value: String(index), ...cas })).body.node.modifiedIndex;
  } catch (err) {
    if (err instanceof CompareFailedError || err instanceof NodeExistError || err instanceof KeyNotFoundError) {
      throw new FencedError('the replication index was written by someone else since this instance last wrote it: another instance is active');
    }
    throw err;
  }
}
