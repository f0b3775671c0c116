// The statechart as ELK lays it out, checked on ELK's own output (src/daemon/viz/layout.ts has ELK give every coordinate
// relative to the root, so nested states need no offsets added): no edge label on another label or on a state, no
// edge through a state, every state and every transition of the machine in the SVG. Label sizes are checked
// against the text they hold, so a layout that reserved no room for labels fails here too.
import type { ElkExtendedEdge, ElkLabel, ElkNode, ElkPoint } from 'elkjs/lib/elk.bundled.js';
import { beforeAll, describe, expect, it } from 'vitest';
import { lifecycle } from '../../machines/lifecycle.js';
import { allStates, machineGraph } from '../../src/daemon/viz/graph.js';
import { chartEdges, chartNodes, edgePoints, HEADER_PX, layoutChart, type Chart } from '../../src/daemon/viz/layout.js';
import { chartSvg } from '../../src/daemon/viz/svg.js';

interface Rect {
  x: number;
  y: number;
  w: number;
  h: number;
}
const rectOf = (s: ElkNode | ElkLabel): Rect => ({ x: s.x ?? NaN, y: s.y ?? NaN, w: s.width ?? NaN, h: s.height ?? NaN });

// Edge labels are 11 px DejaVu Sans Mono, whose advance is 1233/2048 em; a line needs about 1.2 em of height.
const LABEL_PX = 11;
const MONO_ADVANCE = 1233 / 2048;
const EPS = 0.5; // px: rounding, not overlap

/** Whether the interiors of two rectangles overlap. */
const overlap = (a: Rect, b: Rect) =>
  Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x) > EPS && Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y) > EPS;
const contains = (outer: Rect, inner: Rect) =>
  inner.x >= outer.x - EPS && inner.y >= outer.y - EPS && inner.x + inner.w <= outer.x + outer.w + EPS && inner.y + inner.h <= outer.y + outer.h + EPS;

/** The part of segment ab inside the interior of r, as parameters 0 ≤ t0 < t1 ≤ 1 (Liang–Barsky), or null. */
function clip(a: ElkPoint, b: ElkPoint, r: Rect): [number, number] | null {
  const [x0, x1, y0, y1] = [r.x + EPS, r.x + r.w - EPS, r.y + EPS, r.y + r.h - EPS];
  const [dx, dy] = [b.x - a.x, b.y - a.y];
  let [t0, t1] = [0, 1];
  for (const [p, q] of [[-dx, a.x - x0], [dx, x1 - a.x], [-dy, a.y - y0], [dy, y1 - a.y]] as const) {
    if (p === 0) {
      if (q < 0) return null;
      continue;
    }
    if (p < 0) t0 = Math.max(t0, q / p);
    else t1 = Math.min(t1, q / p);
  }
  return t1 > t0 ? [t0, t1] : null;
}

/** The stretches of a route inside r, as distances along the route, joined where they meet at a bend. */
function stretchesInside(points: ElkPoint[], r: Rect): [number, number][] {
  const out: [number, number][] = [];
  let at = 0;
  for (let i = 0; i + 1 < points.length; i++) {
    const [a, b] = [points[i]!, points[i + 1]!];
    const len = Math.hypot(b.x - a.x, b.y - a.y);
    const part = clip(a, b, r);
    if (part) {
      const last = out[out.length - 1];
      if (last && at + part[0] * len - last[1] < 1e-6) last[1] = at + part[1] * len;
      else out.push([at + part[0] * len, at + part[1] * len]);
    }
    at += len;
  }
  return out;
}
const routeLength = (points: ElkPoint[]) => points.slice(1).reduce((sum, p, i) => sum + Math.hypot(p.x - points[i]!.x, p.y - points[i]!.y), 0);

/** Distance from p to the border of r (0 on it). */
const toBorder = (p: ElkPoint, r: Rect) => {
  const dx = Math.max(r.x - p.x, 0, p.x - (r.x + r.w));
  const dy = Math.max(r.y - p.y, 0, p.y - (r.y + r.h));
  const outside = Math.hypot(dx, dy);
  return outside > 0 ? outside : Math.min(p.x - r.x, r.x + r.w - p.x, p.y - r.y, r.y + r.h - p.y);
};

const graph = machineGraph(lifecycle);
let chart: Chart;
let nodes: ElkNode[];
let byId: Map<string, ElkNode>;
let leaves: ElkNode[];
let compounds: ElkNode[];
let edges: ElkExtendedEdge[];
/** Each label as ELK placed it, and the size its text needs. */
let labels: { edge: ElkExtendedEdge; lines: string[]; laid: Rect; text: { w: number; h: number } }[];
/** Where a label's text is drawn: from ELK's corner, at least as large as the text. */
const drawnAt = (l: (typeof labels)[number]): Rect => ({ ...l.laid, w: Math.max(l.laid.w, l.text.w), h: Math.max(l.laid.h, l.text.h) });
/** Ids of the nodes inside each compound node, at any depth. */
const inside = new Map<string, Set<string>>();

beforeAll(async () => {
  chart = await layoutChart(graph);
  nodes = chartNodes(chart.layout);
  byId = new Map(nodes.map((n) => [n.id, n]));
  leaves = nodes.filter((n) => !n.children?.length);
  compounds = nodes.filter((n) => n.children?.length);
  for (const c of compounds) inside.set(c.id, new Set(chartNodes(c).map((n) => n.id)));
  edges = chartEdges(chart.layout);
  labels = edges.flatMap((edge) =>
    (edge.labels ?? []).map((l) => {
      const lines = chart.edges.get(edge.id)!.lines;
      return { edge, lines, laid: rectOf(l), text: { w: Math.max(...lines.map((t) => t.length)) * LABEL_PX * MONO_ADVANCE, h: lines.length * LABEL_PX * 1.2 } };
    }),
  );
});

describe('statechart layout (ELK)', () => {
  it('lays out every state, with a box for each, compound states around their children', () => {
    const ids = new Set(nodes.map((n) => n.id));
    for (const s of allStates(graph)) expect(ids).toContain(s.id);
    for (const n of nodes) expect(n.width! > 0 && n.height! > 0 && Number.isFinite(n.x) && Number.isFinite(n.y), n.id).toBe(true);
    for (const c of compounds) for (const id of inside.get(c.id)!) expect(contains(rectOf(c), rectOf(byId.get(id)!)), `${id} in ${c.id}`).toBe(true);
    expect(compounds.map((c) => c.id).sort()).toEqual(allStates(graph).filter((s) => s.children.length).map((s) => s.id).sort());
  });

  it('gives every edge label room for its text', () => {
    expect(labels.length).toBeGreaterThanOrEqual(20);
    for (const { edge, laid, text } of labels) {
      expect(laid.w >= text.w && laid.h >= text.h, `label of ${edge.id}: ${laid.w}x${laid.h} for ${text.w.toFixed(0)}x${text.h.toFixed(0)}`).toBe(true);
    }
  });

  it('puts no edge label on another label, on a state, or on a compound state’s title', () => {
    const boxes = [...leaves.map((n) => ({ id: n.id, rect: rectOf(n) })), ...compounds.map((c) => ({ id: `${c.id} title`, rect: { ...rectOf(c), h: HEADER_PX } }))];
    const problems: string[] = [];
    labels.forEach((a, i) => {
      const r = drawnAt(a);
      for (const b of labels.slice(i + 1)) if (overlap(r, drawnAt(b))) problems.push(`label of ${a.edge.id} on label of ${b.edge.id}`);
      for (const box of boxes) if (overlap(r, box.rect)) problems.push(`label of ${a.edge.id} on ${box.id}`);
      // Inside a compound state or outside it, not across its border.
      for (const c of compounds) if (overlap(r, rectOf(c)) && !contains(rectOf(c), r)) problems.push(`label of ${a.edge.id} across ${c.id}`);
    });
    expect(problems).toEqual([]);
  });

  it('routes every edge from its source’s border to its target’s, through no state and under no other edge’s label', () => {
    const problems: string[] = [];
    for (const e of edges) {
      const points = edgePoints(e);
      expect(points.length, e.id).toBeGreaterThanOrEqual(2);
      const [source, target] = [byId.get(e.sources[0]!)!, byId.get(e.targets[0]!)!];
      if (toBorder(points[0]!, rectOf(source)) > 1) problems.push(`${e.id} does not start on ${source.id}`);
      if (toBorder(points[points.length - 1]!, rectOf(target)) > 1) problems.push(`${e.id} does not end on ${target.id}`);
      for (let i = 0; i + 1 < points.length; i++) {
        const [a, b] = [points[i]!, points[i + 1]!];
        for (const n of leaves) if (clip(a, b, rectOf(n))) problems.push(`${e.id} through ${n.id}`);
        for (const l of labels) if (l.edge !== e && clip(a, b, drawnAt(l))) problems.push(`${e.id} under the label of ${l.edge.id}`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('crosses a compound state’s border only to reach a state inside it: once, and never for an edge that has no end inside', () => {
    const problems: string[] = [];
    for (const c of compounds) {
      const within = inside.get(c.id)!;
      for (const e of edges) {
        const points = edgePoints(e);
        const [from, to] = [within.has(e.sources[0]!), within.has(e.targets[0]!)];
        const stretches = stretchesInside(points, rectOf(c));
        const length = routeLength(points);
        const [first, last] = [stretches[0], stretches[stretches.length - 1]];
        const ok =
          !from && !to
            ? stretches.length === 0
            : stretches.length === 1 && (!from || first![0] < 1e-6) && (!to || Math.abs(last![1] - length) < 1e-6);
        if (!ok) problems.push(`${e.id} (${from ? 'from' : 'not from'} inside, ${to ? 'to' : 'not to'} inside): ${JSON.stringify(stretches)} of ${length.toFixed(1)} inside ${c.id}`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('draws every state and every transition of the machine in the SVG, with its trigger and guard', () => {
    const svg = chartSvg(graph, chart);
    const esc = (s: string) => s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
    for (const s of allStates(graph)) expect(svg).toContain(`data-state="${s.id}"`);
    const drawn = [...chart.edges.values()];
    for (const t of graph.transitions) {
      const by = drawn.filter((e) => e.transitions.includes(t));
      const where = `${t.source} → ${t.target} on ${t.event}`;
      // The arrow that reaches the target carries the declaring state, for the /ui page and the tests above.
      expect(by.some((e) => e.target === t.target && e.source === (t.source ?? graph.id)), where).toBe(true);
      expect(svg, where).toContain(`data-source="${t.source ?? graph.id}" data-target="${t.target}"`);
      const text = by.flatMap((e) => e.lines).join('\n');
      expect(text, where).toContain(t.event);
      expect(text, where).toContain(t.guard ? `[${t.guard}]` : '');
      for (const line of by.flatMap((e) => e.lines)) expect(svg, where).toContain(`font-size="${LABEL_PX}">${esc(line)}</text>`);
    }
    // Every arrow ELK routed is drawn, each label with it.
    expect(svg.match(/<path class="sc-edge/g)).toHaveLength(edges.length);
    expect(svg.match(/<g class="sc-label"/g)).toHaveLength(labels.length);
  });

  it('draws operator.stop, which every state but stopping handles, as one arrow from one "any state" box', () => {
    const stop = [...chart.edges.values()].filter((e) => e.lines.some((l) => l.startsWith('operator.stop')));
    expect(stop).toHaveLength(1);
    expect(stop[0]).toMatchObject({ source: graph.id, target: 'stopping', lines: ['operator.stop'] });
    const from = edges.find((e) => chart.edges.get(e.id) === stop[0])!.sources[0]!;
    expect(chart.nodes.get(from)).toMatchObject({ kind: 'any', lines: ['any state', 'except stopping'] });
  });
});
