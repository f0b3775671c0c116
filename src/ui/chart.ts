// The history charts on /ui, drawn as SVG from GET /history: a strip of lifecycle states above four panels that
// share one time axis. Meaning never rests on colour alone: each band has a pattern as well as a colour and is
// named (inside it, or in a callout beside it when it is too narrow, with the key above for the rest), and each
// curve is named in its panel's legend and told apart by its dash as well as its colour.
import type { BandJson, HistoryJson, SeriesName } from './wire.js';

const SVG_NS = 'http://www.w3.org/2000/svg';
/** Average advance of DejaVu Sans at 11 px (the CSS size), slightly generous: a label never overflows its box. */
const CHAR_PX = 6.8;
export const textWidth = (s: string): number => s.length * CHAR_PX;

/** How each state is drawn. Unlisted states (idle, starting, standby, stopping...) look like `other`. */
const BAND_STYLE: Record<string, string> = {
  tailing: 'tailing',
  stalled: 'stalled',
  outOfWindow: 'outOfWindow',
  recovering: 'reconcile',
  reloading: 'reconcile',
};
const KEY: readonly [style: string, label: string][] = [
  ['tailing', 'tailing'],
  ['stalled', 'stalled'],
  ['outOfWindow', 'outOfWindow'],
  ['reconcile', 'recovering / reloading'],
  ['other', 'other'],
];
const styleOf = (state: string): string => BAND_STYLE[state] ?? 'other';
/** States shaded behind the curves too: the ones an operator looks for. */
const SHADED = new Set(['stalled', 'outOfWindow', 'reconcile']);
/** Callouts go to the states that matter first. */
const PRIORITY: Record<string, number> = { outOfWindow: 0, stalled: 1, reconcile: 2, other: 3, tailing: 4 };

interface SeriesSpec {
  name: SeriesName;
  label: string;
  /** 'a' solid, 'b' dashed: curves sharing a panel differ by dash, not by colour only. */
  line: 'a' | 'b';
  /** The legend's word for a null latest value. */
  none: string;
}

interface PanelSpec {
  title: string;
  unit: string;
  series: SeriesSpec[];
  /** The y axis reaches at least this far (the 1000-event window on the lag panel). */
  floor: (h: HistoryJson) => number;
  format: (v: number) => string;
}

const fixed = (digits: number) => (v: number) => v.toFixed(digits);

function panels(position: DrawOptions['position']): PanelSpec[] {
  const lag: SeriesSpec = { name: 'lagEvents', label: 'lag', line: 'a', none: 'unknown' };
  return [
    {
      title: 'Lag',
      // A v3 source counts revisions and has no event window to run out of.
      unit: position === 'revision' ? 'revisions' : 'events',
      series: position === 'revision' ? [lag] : [lag, { name: 'headroomEvents', label: 'window headroom', line: 'b', none: 'unknown' }],
      // Scaled to the window while there is one, so that the headroom line reads against it.
      floor: (h) => (h.series.headroomEvents.some((v) => v !== null) ? 1000 : 10),
      format: fixed(0),
    },
    { title: 'Lag', unit: 's', series: [{ name: 'lagSeconds', label: 'lag', line: 'a', none: 'unknown' }], floor: () => 1, format: fixed(1) },
    { title: 'Applied', unit: 'events/s', series: [{ name: 'eventsPerSecond', label: 'applied', line: 'a', none: 'unknown' }], floor: () => 10, format: fixed(1) },
    {
      title: 'Destination write latency',
      unit: 'ms',
      series: [{ name: 'writeP99Ms', label: 'p99', line: 'a', none: '– (no writes)' }],
      floor: () => 1,
      format: (v) => (v < 10 ? v.toFixed(2) : v.toFixed(0)),
    },
  ];
}

/** The smallest 1, 2, 2.5 or 5 × 10^k at or above v. */
export function niceCeil(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v * (1 - 1e-12)) return m * p;
  return 10 * p;
}

const TICK_STEPS_MS = [5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000];

/** Round times between start and end, at most `maxTicks` of them, and whether their labels need seconds. */
export function timeTicks(start: number, end: number, maxTicks: number): { ticks: number[]; seconds: boolean } {
  const step = TICK_STEPS_MS.find((s) => (end - start) / s <= maxTicks) ?? TICK_STEPS_MS.at(-1)!;
  const ticks: number[] = [];
  for (let t = Math.ceil(start / step) * step; t <= end; t += step) ticks.push(t);
  return { ticks, seconds: step < 60_000 };
}

const pad = (n: number) => String(n).padStart(2, '0');
export function clock(t: number, seconds = true): string {
  const d = new Date(t);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}` + (seconds ? `:${pad(d.getSeconds())}` : '');
}

export interface BandBox {
  state: string;
  x0: number;
  x1: number;
}

export type LabelPlace = { at: 'inside'; x: number } | { at: 'callout'; x: number; row: number } | null;

const CALLOUT_ROWS = 2;
/** How far a callout may move sideways from its band to find room. */
const MAX_SHIFT_PX = 140;
/** Bands of one state closer than this share one name. */
const SAME_NAME_PX = 90;

/**
 * Where each band's name goes: inside the band when it fits; else in a callout row under the strip, as close to
 * the band as the other callouts leave room for (the current state, then trouble states claim room first); else
 * nowhere: the band's pattern, the key and its tooltip still say what it is.
 */
export function placeLabels(bands: readonly BandBox[], minX: number, maxX: number): LabelPlace[] {
  const half = (b: BandBox) => textWidth(b.state) / 2 + 4;
  const mid = (b: BandBox) => (b.x0 + b.x1) / 2;
  const places: LabelPlace[] = bands.map((b) => (2 * half(b) - 2 <= b.x1 - b.x0 ? { at: 'inside', x: mid(b) } : null));
  const taken: [number, number][][] = Array.from({ length: CALLOUT_ROWS }, () => []);
  // The state the mirror is in now comes first, whatever it is.
  const rank = (i: number) => (i === bands.length - 1 ? -1 : PRIORITY[styleOf(bands[i]!.state)]!);
  const order = bands.map((_, i) => i).sort((a, b) => rank(a) - rank(b) || a - b);
  for (const i of order) {
    const b = bands[i]!;
    if (places[i] !== null) continue;
    // A state retried over and over (stalled between short retries) is named once per stretch, not per band.
    const namedNearby = places.some((p, j) => p !== null && bands[j]!.state === b.state && Math.abs(p.x - mid(b)) < SAME_NAME_PX);
    if (namedNearby && i !== bands.length - 1) continue;
    const h = half(b);
    for (let row = 0; row < CALLOUT_ROWS && places[i] === null; row++) {
      const spans = taken[row]!;
      const free = (x: number) => x - h >= minX && x + h <= maxX && spans.every(([a, z]) => x + h <= a || z <= x - h);
      // The band's own position, or right beside a callout already there.
      const candidates = [Math.min(Math.max(mid(b), minX + h), maxX - h), ...spans.flatMap(([a, z]) => [a - h, z + h])];
      const x = candidates.filter((c) => Math.abs(c - mid(b)) <= MAX_SHIFT_PX && free(c)).sort((p, q) => Math.abs(p - mid(b)) - Math.abs(q - mid(b)))[0];
      if (x === undefined) continue;
      spans.push([x - h, x + h]);
      places[i] = { at: 'callout', x, row };
    }
  }
  return places;
}

type Attrs = Record<string, string | number>;

function el<K extends keyof SVGElementTagNameMap>(parent: Element, tag: K, attrs: Attrs = {}, text?: string): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  parent.append(node);
  return node;
}

/** Patterns: a hatch for stalled, a cross-hatch for outOfWindow, dots for a reconcile; the fills are in CSS. */
function defs(svg: SVGSVGElement): void {
  const d = el(svg, 'defs');
  const pattern = (id: string, draw: (p: SVGPatternElement) => void) => {
    const p = el(d, 'pattern', { id: `h-${id}`, width: 6, height: 6, patternUnits: 'userSpaceOnUse' });
    el(p, 'rect', { class: `fill-${id}`, width: 6, height: 6 });
    draw(p);
  };
  pattern('stalled', (p) => el(p, 'path', { class: 'ink', d: 'M-1,1 l2,-2 M0,6 l6,-6 M5,7 l2,-2' }));
  pattern('outOfWindow', (p) => el(p, 'path', { class: 'ink', d: 'M0,0 L6,6 M6,0 L0,6' }));
  pattern('reconcile', (p) => el(p, 'circle', { class: 'dot', cx: 3, cy: 3, r: 1.1 }));
}

const M = { left: 48, right: 10 };
const KEY_H = 18;
const STRIP_H = 20;
const CALLOUT_H = 16;
const TITLE_H = 17;
const GAP = 10;
const AXIS_H = 18;
const MIN_RANGE_MS = 10_000;

const MIN_WIDTH = 360;
const MIN_HEIGHT = 300;

export interface DrawOptions {
  /** Width of the time axis, ms, ending at the answer's `now`. */
  rangeMs: number;
  width: number;
  height: number;
  /** 'revision' for a v3 source. */
  position: 'index' | 'revision';
}

/** Redraws `svg` from scratch (a few hundred elements once a second: cheap next to layout); returns the time axis. */
export function drawHistory(svg: SVGSVGElement, h: HistoryJson, given: DrawOptions): { start: number; end: number } {
  // A container not laid out yet (or squeezed while the browser resizes it) must not give negative sizes.
  const o = { ...given, width: Math.max(given.width, MIN_WIDTH), height: Math.max(given.height, MIN_HEIGHT) };
  svg.replaceChildren();
  svg.setAttribute('viewBox', `0 0 ${o.width} ${o.height}`);
  svg.setAttribute('width', String(o.width));
  svg.setAttribute('height', String(o.height));
  defs(svg);
  const end = h.now;
  // A daemon younger than the range fills the width with its whole life rather than leave most of it empty.
  const born = Math.min(h.t[0] ?? end, h.bands[0]?.from ?? end);
  const start = Math.min(end - MIN_RANGE_MS, Math.max(end - o.rangeMs, born));
  const x0 = M.left;
  const x1 = o.width - M.right;
  const x = (t: number) => x0 + ((t - start) / (end - start)) * (x1 - x0);

  // The key: what each pattern stands for.
  let kx = x0;
  const key = el(svg, 'g', { class: 'key' });
  for (const [style, label] of KEY) {
    el(key, 'rect', { class: `band-${style}`, x: kx, y: 3, width: 12, height: 11 });
    el(key, 'text', { x: kx + 15, y: 12.5 }, label);
    kx += 15 + textWidth(label) + 10;
  }

  const boxes: (BandBox & { band: BandJson })[] = [];
  for (const band of h.bands) {
    const to = band.to ?? end;
    if (to < start) continue;
    let bx0 = x(Math.max(band.from, start));
    let bx1 = x(Math.min(to, end));
    // A state held for less than a pixel still shows, two pixels wide.
    if (bx1 - bx0 < 2) {
      const mid = (bx0 + bx1) / 2;
      bx0 = Math.max(x0, mid - 1);
      bx1 = Math.min(x1, bx0 + 2);
    }
    boxes.push({ state: band.state, x0: bx0, x1: bx1, band });
  }

  const stripY = KEY_H;
  const strip = el(svg, 'g', { class: 'states', 'aria-label': 'states' });
  el(strip, 'rect', { class: 'frame', x: x0, y: stripY, width: x1 - x0, height: STRIP_H });
  const places = placeLabels(boxes, x0, x1);
  boxes.forEach((b, i) => {
    const g = el(strip, 'g', { class: 'band', 'data-state': b.band.state, 'data-from': b.band.from, 'data-to': b.band.to ?? '' });
    const r = el(g, 'rect', { class: `band-${styleOf(b.state)}`, x: b.x0, y: stripY, width: b.x1 - b.x0, height: STRIP_H });
    el(r, 'title', {}, `${b.state}: ${clock(b.band.from)} – ${b.band.to === null ? 'now' : clock(b.band.to)}`);
    const place = places[i];
    if (place?.at === 'inside') {
      el(g, 'text', { class: 'band-label', x: place.x, y: stripY + 14, 'text-anchor': 'middle' }, b.state);
    } else if (place?.at === 'callout') {
      const mid = (b.x0 + b.x1) / 2;
      const rowY = stripY + STRIP_H + place.row * CALLOUT_H;
      el(g, 'line', { class: 'callout', x1: mid, y1: stripY + STRIP_H, x2: place.x, y2: rowY + 4 });
      el(g, 'text', { class: 'band-label', x: place.x, y: rowY + 14, 'text-anchor': 'middle' }, b.state);
    }
  });

  const specs = panels(o.position);
  const top = stripY + STRIP_H + CALLOUT_ROWS * CALLOUT_H + 6;
  const panelH = (o.height - top - AXIS_H - GAP * (specs.length - 1)) / specs.length;
  const plotH = panelH - TITLE_H;
  const { ticks, seconds } = timeTicks(start, end, Math.max(2, Math.floor((x1 - x0) / 70)));
  const visible = h.t.map((t) => t >= start);

  specs.forEach((spec, pi) => {
    const py = top + pi * (panelH + GAP) + TITLE_H;
    const g = el(svg, 'g', { class: 'panel' });
    let max = spec.floor(h);
    for (const s of spec.series) {
      h.series[s.name].forEach((v, i) => {
        if (visible[i] && v !== null) max = Math.max(max, v);
      });
    }
    const ymax = niceCeil(max);
    const y = (v: number) => py + plotH - (v / ymax) * plotH;

    // Legend: the curves' names with a sample of their line and their latest value.
    const title = `${spec.title}, ${spec.unit}`;
    el(g, 'text', { class: 'legend title', x: x0, y: py - 5 }, title);
    let lx = x0 + textWidth(title) + 18;
    for (const s of spec.series) {
      const last = h.series[s.name].at(-1);
      const text = `${s.label} ${last === null || last === undefined ? s.none : spec.format(last)}`;
      el(g, 'line', { class: `series line-${s.line}`, x1: lx, y1: py - 9, x2: lx + 18, y2: py - 9 });
      el(g, 'text', { class: 'legend', x: lx + 22, y: py - 5 }, text);
      lx += 22 + textWidth(text) + 12;
    }

    el(g, 'rect', { class: 'frame', x: x0, y: py, width: x1 - x0, height: plotH });
    for (const b of boxes) {
      const style = styleOf(b.state);
      if (SHADED.has(style)) el(g, 'rect', { class: `shade band-${style}`, x: b.x0, y: py, width: b.x1 - b.x0, height: plotH });
    }
    for (const t of ticks) el(g, 'line', { class: 'grid', x1: x(t), y1: py, x2: x(t), y2: py + plotH });
    for (const v of [0, ymax / 2, ymax]) {
      el(g, 'line', { class: 'grid', x1: x0, y1: y(v), x2: x1, y2: y(v) });
      // Three digits show every tick exactly (12.5 of 25, 1250 of 2500).
      el(g, 'text', { class: 'axis', x: x0 - 4, y: y(v) + 4, 'text-anchor': 'end' }, String(Number(v.toPrecision(3))));
    }

    for (const s of spec.series) {
      let d = '';
      let drawnMax: number | null = null;
      let points = 0;
      const values = h.series[s.name];
      const path = el(g, 'path', { class: `series line-${s.line}`, 'data-series': s.name });
      for (let i = 0; i < h.t.length; i++) {
        const v = values[i];
        if (!visible[i] || v === null || v === undefined) continue;
        const px = x(h.t[i]!).toFixed(1);
        const pv = y(v).toFixed(1);
        const before = visible[i - 1] ? values[i - 1] : null;
        const after = values[i + 1];
        const alone = (before === null || before === undefined) && (after === null || after === undefined);
        // Gaps (null: unknown, or no write in that second) break the line; a lone value is a dot.
        if (alone) el(g, 'circle', { class: `dot-${s.line}`, cx: px, cy: pv, r: 2.2 });
        else d += before === null || before === undefined ? `M${px},${pv}` : `L${px},${pv}`;
        points++;
        drawnMax = Math.max(drawnMax ?? v, v);
      }
      path.setAttribute('d', d);
      path.dataset.points = String(points);
      path.dataset.max = drawnMax === null ? '' : String(drawnMax);
      const last = values.at(-1);
      path.dataset.last = last === null || last === undefined ? '' : String(last);
    }
  });

  const axisY = top + specs.length * panelH + (specs.length - 1) * GAP;
  const axis = el(svg, 'g', { class: 'time-axis' });
  for (const t of ticks) {
    el(axis, 'line', { class: 'tick', x1: x(t), y1: axisY, x2: x(t), y2: axisY + 4 });
    const tx = Math.min(Math.max(x(t), x0 + 20), x1 - 20);
    el(axis, 'text', { class: 'axis', x: tx, y: axisY + 15, 'text-anchor': 'middle' }, clock(t, seconds));
  }
  // For a screen reader: what the chart covers and which states it shows.
  const states = [...new Set(boxes.map((b) => b.state))];
  svg.setAttribute('aria-label', `history from ${clock(start)} to ${clock(end)}: states ${states.join(', ') || 'none yet'}`);
  return { start, end };
}
