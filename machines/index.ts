export { lifecycle, backoffMs } from './lifecycle.js';
export type { LifecycleMachine } from './lifecycle.js';
export type * from './types.js';
