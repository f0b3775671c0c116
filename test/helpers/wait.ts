// Waiting for an observable condition instead of a fixed time: a test then takes as long as the system needs on
// this machine, no more, and does not fail because the machine is slow.

/** Polls `fn` every 50 ms until it returns something other than undefined or false; throws after `timeoutMs`. */
export async function waitFor<T>(fn: () => Promise<T | undefined | false> | T | undefined | false, what: string, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what} ${last ? String(last) : ''}`);
}
