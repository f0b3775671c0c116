// undici's Client and Pool with its request API, without the rest of its index (fetch, WebSocket, caches, mocks):
// the index costs ~120 ms at every start, which a restarting mirror spends while the source's history window moves
// on. This does what the index does for them (index.js: `Object.assign(Dispatcher.prototype, api)`); the classes
// are the very ones it exports, and the lockfile pins the version.
import { createRequire } from 'node:module';
import type { Client as UndiciClient, Dispatcher as UndiciDispatcher, Pool as UndiciPool } from 'undici';

const cjs = createRequire(import.meta.url); // not `require`: the bundle (scripts/bundle.mjs) declares that
const Dispatcher = cjs('undici/lib/dispatcher/dispatcher.js') as typeof UndiciDispatcher;
Object.assign(Dispatcher.prototype, cjs('undici/lib/api/index.js'));

export const Client = cjs('undici/lib/dispatcher/client.js') as typeof UndiciClient;
export type Client = UndiciClient;
export const Pool = cjs('undici/lib/dispatcher/pool.js') as typeof UndiciPool;
export type Pool = UndiciPool;
