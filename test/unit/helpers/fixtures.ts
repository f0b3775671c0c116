// Recorded etcd v2 bodies (copied from shared/etcd-v2-api-notes.md) under test/fixtures/v2.
import { readFileSync } from 'node:fs';
import type { EtcdEvent } from '../../../src/etcd/v2/decode.js';

const dir = new URL('../../fixtures/v2/', import.meta.url);

/** The raw body text, byte for byte as etcd sent it. */
export function fixtureText(name: string): string {
  return readFileSync(new URL(name, dir), 'utf8');
}

/** A recorded event body, parsed. */
export function fixtureEvent(name: string): EtcdEvent {
  return JSON.parse(fixtureText(`${name}.json`)) as EtcdEvent;
}
