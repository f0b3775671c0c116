// Readiness and rates derived from the mirror's state: shared by /readyz, /state, /events and the /ui page.

/** Below this much headroom, a restart or a short outage could already fall out of the window: not ready. */
const READY_MIN_HEADROOM_EVENTS = 200;

/** `windowed`: the source is v2 (its 1000-event window); a v3 source only needs its position known. */
export function readiness(state: string, reason: string, headroomEvents: number | null, windowed = true): { ready: boolean; why: string } {
  // --ha: the reason names the active instance ("standby: active is host-a:8000").
  if (state === 'standby') return { ready: false, why: reason.startsWith('standby') ? reason : `standby: ${reason}` };
  if (state !== 'tailing') return { ready: false, why: `state ${state}: ${reason}` };
  if (!windowed) return { ready: true, why: 'tailing' };
  if (headroomEvents === null) return { ready: false, why: 'tailing, but the source store index is not known yet' };
  if (headroomEvents < READY_MIN_HEADROOM_EVENTS) {
    return { ready: false, why: `window headroom ${headroomEvents} events, below ${READY_MIN_HEADROOM_EVENTS}` };
  }
  return { ready: true, why: `tailing, window headroom ${headroomEvents} events` };
}

/** Rate of a growing count over a sliding time window of samples. */
export class RateMeter {
  #samples: { t: number; n: number }[] = [];

  constructor(private readonly windowMs: number) {}

  add(t: number, n: number): void {
    // A count that went down was restarted (a new reconcile): earlier samples say nothing about it.
    if (n < (this.#samples[this.#samples.length - 1]?.n ?? 0)) this.#samples = [];
    this.#samples.push({ t, n });
    // Keep one sample at or before the window's start, so the rate spans the whole window.
    while (this.#samples.length > 2 && this.#samples[1]!.t <= t - this.windowMs) this.#samples.shift();
  }

  reset(): void {
    this.#samples = [];
  }

  perSecond(): number {
    const first = this.#samples[0];
    const last = this.#samples[this.#samples.length - 1];
    if (!first || !last || last.t <= first.t) return 0;
    return (last.n - first.n) / ((last.t - first.t) / 1000);
  }
}
