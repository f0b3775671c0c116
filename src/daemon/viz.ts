// The lifecycle statechart as plain data, read from the machine definition itself so that no drawing can drift
// from what runs, and its renderings: JSON, Mermaid (README) and SVG (the /ui page and `etcd-mirror viz`).
// Pure (no I/O): the daemon, the CLI and the tests share it.
import type { AnyStateMachine, AnyStateNode } from 'xstate';

export interface VizState {
  /** Dotted path below the machine, as in a snapshot value: `running.tailing`. The /ui page highlights by it. */
  id: string;
  key: string;
  type: 'atomic' | 'compound' | 'parallel' | 'final' | 'history';
  /** Id of the initial child, for compound states. */
  initial: string | null;
  /** Actor sources invoked while the state is active. */
  invokes: string[];
  children: VizState[];
}

export interface VizTransition {
  /** Id of the declaring state; null when declared on the machine itself. */
  source: string | null;
  /** The states it leaves: [source]; or, when it targets a state inside the one that declares it (the machine, or
   * a compound state), each child of the declaring state that is not final and does not handle the event itself. */
  from: string[];
  target: string;
  /** Trigger in words: an event type, `loadIndex done`, `after backoff`. */
  event: string;
  guard: string | null;
}

export interface VizGraph {
  id: string;
  initial: string;
  states: VizState[];
  transitions: VizTransition[];
}

export type VizFormat = 'json' | 'mermaid' | 'svg';
export const VIZ_FORMATS: readonly VizFormat[] = ['json', 'mermaid', 'svg'];

const idOf = (node: AnyStateNode): string => node.path.join('.');

function guardLabel(guard: unknown): string | null {
  if (guard === undefined) return null;
  if (typeof guard === 'string') return guard;
  if (typeof guard === 'object' && guard !== null && 'type' in guard) return String(guard.type);
  return typeof guard === 'function' && guard.name ? guard.name : 'guarded';
}

/** xstate names done/error/after events after internal ids; say which actor or delay they are about instead. */
function triggerLabel(node: AnyStateNode, eventType: string, delays: Record<string, unknown>): string {
  const delayed = node.after.find((t) => t.eventType === eventType);
  if (delayed) {
    const d = delayed.delay;
    if (typeof d === 'number') return `after ${d} ms`;
    if (typeof d === 'string') return typeof delays[d] === 'number' ? `after ${d} (${delays[d]} ms)` : `after ${d}`;
    return 'after delay';
  }
  for (const [prefix, outcome] of [['xstate.done.actor.', 'done'], ['xstate.error.actor.', 'error']] as const) {
    if (!eventType.startsWith(prefix)) continue;
    const invoked = node.invoke.find((i) => i.id === eventType.slice(prefix.length));
    return `${invoked && typeof invoked.src === 'string' ? invoked.src : 'actor'} ${outcome}`;
  }
  return eventType;
}

/** Walks the machine's state nodes. Transitions without a target only run actions (runner.progress) and are left out. */
export function machineGraph(machine: AnyStateMachine): VizGraph {
  const delays = (machine.implementations.delays ?? {}) as Record<string, unknown>;
  const transitions: VizTransition[] = [];

  const visit = (node: AnyStateNode): VizState => {
    const isRoot = node === machine.root;
    const children = Object.values(node.states) as AnyStateNode[];
    const inside = (target: AnyStateNode) => target.path.length > node.path.length && target.path.slice(0, node.path.length).join('.') === node.path.join('.');
    const own: [string, readonly { target?: readonly AnyStateNode[] | undefined; guard?: unknown }[]][] = [
      ...node.transitions,
      ['always', node.always ?? []],
    ];
    for (const [eventType, defs] of own) {
      for (const def of defs) {
        for (const target of def.target ?? []) {
          transitions.push({
            source: isRoot ? null : idOf(node),
            from: inside(target) ? children.filter((c) => c.type !== 'final' && !c.transitions.has(eventType)).map(idOf) : [idOf(node)],
            target: idOf(target),
            event: eventType === 'always' ? 'always' : triggerLabel(node, eventType, delays),
            guard: guardLabel(def.guard),
          });
        }
      }
    }
    return {
      id: idOf(node),
      key: node.key,
      type: node.type,
      initial: node.initial?.target[0] ? idOf(node.initial.target[0]) : null,
      invokes: node.invoke.map((i) => (typeof i.src === 'string' ? i.src : i.id)),
      children: children.map(visit),
    };
  };
  const root = visit(machine.root);
  return { id: machine.id, initial: root.initial ?? '', states: root.children, transitions };
}

/** Every state, depth first. */
export function allStates(graph: VizGraph): VizState[] {
  const out: VizState[] = [];
  const walk = (states: VizState[]) => {
    for (const s of states) {
      out.push(s);
      walk(s.children);
    }
  };
  walk(graph.states);
  return out;
}

const edgeLabel = (t: VizTransition): string => (t.guard ? `${t.event} [${t.guard}]` : t.event);

// ---------------------------------------------------------------------------------------------------- Mermaid

/** stateDiagram-v2. A transition into the state that declares it is drawn from each state it applies in (Mermaid
 * has no "any state", and an arrow from a composite state to its own child does not render). */
export function toMermaid(graph: VizGraph): string {
  const mid = (id: string) => id.replaceAll('.', '_');
  const parentOf = (id: string) => id.split('.').slice(0, -1).join('.');
  // A transition is written inside the composite that holds both ends, so Mermaid keeps inner states inside it.
  const containerOf = (a: string, b: string) => {
    const pa = parentOf(a).split('.');
    const pb = parentOf(b).split('.');
    const common: string[] = [];
    for (let i = 0; i < Math.min(pa.length, pb.length) && pa[i] === pb[i] && pa[i] !== ''; i++) common.push(pa[i]!);
    return common.join('.');
  };
  const edges = new Map<string, string[]>();
  // Machine-level transitions last: they repeat for every state and would bury the specific ones.
  const ordered = [...graph.transitions.filter((t) => t.source !== null), ...graph.transitions.filter((t) => t.source === null)];
  for (const t of ordered) {
    for (const from of t.from) {
      const where = containerOf(from, t.target);
      edges.set(where, [...(edges.get(where) ?? []), `${mid(from)} --> ${mid(t.target)} : ${edgeLabel(t)}`]);
    }
  }
  const lines = ['stateDiagram-v2'];
  const block = (container: string, states: VizState[], initial: string | null, pad: string) => {
    if (initial) lines.push(`${pad}[*] --> ${mid(initial)}`);
    for (const s of states) {
      // A `state : text` line would replace the name in the box, so what a state invokes goes into its label.
      const label = [s.key, ...s.invokes.map((src) => `invokes ${src}`)].join(' · ');
      if (label !== mid(s.id)) lines.push(`${pad}state "${label}" as ${mid(s.id)}`);
      if (s.children.length > 0) {
        lines.push(`${pad}state ${mid(s.id)} {`);
        block(s.id, s.children, s.initial, `${pad}  `);
        lines.push(`${pad}}`);
      }
      if (s.type === 'final') lines.push(`${pad}${mid(s.id)} --> [*]`);
    }
    for (const e of edges.get(container) ?? []) lines.push(`${pad}${e}`);
  };
  block('', graph.states, graph.initial, '  ');
  return `${lines.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------------------------- SVG

const FONT = 13;
const SMALL = 11;
const CHAR = 0.6; // average glyph width of a sans-serif font, in ems: the layout cannot measure text
const PAD = 10;
const GAP_X = 18;
const GAP_Y = 8;
const HEADER = 24;
const LABEL_CHARS = 22;
const ANY = '*any';
const INIT = '*init';

const textWidth = (s: string, size: number) => Math.ceil(s.length * size * CHAR);
const esc = (s: string) => s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;');

/** Breaks a label at spaces so that edge labels stay narrow. */
function wrap(text: string, max = LABEL_CHARS): string[] {
  const lines: string[] = [];
  for (const word of text.split(' ')) {
    const last = lines.length - 1;
    if (last >= 0 && lines[last]!.length + 1 + word.length <= max) lines[last] += ` ${word}`;
    else lines.push(word);
  }
  return lines;
}

interface Rect {
  x: number;
  y: number;
  w: number;
  h: number;
}

/** A box, an edge label or an edge's pass-through point, placed relative to its container's origin. */
interface Item extends Rect {
  id: string;
  kind: 'state' | 'init' | 'any' | 'label' | 'via' | 'port';
  layer: number;
  order: number;
  lines: string[];
}

/** Where an edge from outside enters a compound state: its border, above or below the children. */
interface Port {
  key: string;
  side: 'top' | 'bottom';
  /** The state inside that the edge starts or ends at. */
  inner: string;
}

interface Edge {
  key: string;
  /** Ids of the real endpoints (possibly nested deeper than this level). */
  source: string;
  target: string;
  label: string[];
  /** Items of this level the edge runs through, source side first. */
  chain: Item[];
  /** Port keys, when an end is nested inside a compound child. */
  sourcePort: string | null;
  targetPort: string | null;
}

interface Laid {
  w: number;
  h: number;
  items: Item[];
  edges: Edge[];
  nested: Map<string, Laid>;
  /** Layers holding a state taller than a plain one (a compound state), which edges must pass beside. */
  tall: Set<number>;
}

const item = (id: string, kind: Item['kind'], w: number, h: number, lines: string[] = []): Item => ({ id, kind, w, h, lines, x: 0, y: 0, layer: 0, order: 0 });

function stateItem(s: VizState): Item {
  const lines = s.invokes.map((src) => `invokes ${src}`);
  // Room for the "▶ " the /ui page puts before the current state's name.
  const w = Math.max(textWidth(s.key, FONT) + 2 * PAD + 20, ...lines.map((l) => textWidth(l, SMALL) + 2 * PAD), 96);
  return item(s.id, 'state', w, 30 + lines.length * 15 + (s.type === 'final' ? 4 : 0), lines);
}

/**
 * A simple layered (Sugiyama-style) layout of one level of the chart: ranks by longest path after reversing the
 * edges that close cycles, one slot per edge in every layer it crosses (its label in the least crowded one),
 * barycentric ordering, then x positions pulled towards neighbours. A compound child is laid out on its own,
 * with ports on its border for the edges that cross it, and placed as one box.
 */
function layoutLevel(graph: VizGraph, container: VizState | null, ports: Port[]): Laid {
  const states = container ? container.children : graph.states;
  const initial = container ? container.initial : graph.initial;
  const depth = states[0] ? states[0].id.split('.').length : 1;
  const lift = (id: string): string | null => {
    const lifted = id.split('.').slice(0, depth).join('.');
    return id.split('.').length >= depth && states.some((s) => s.id === lifted) ? lifted : null;
  };
  const items = new Map<string, Item>();
  const add = (it: Item) => items.set(it.id, it);
  if (initial) add(item(INIT, 'init', 12, 12));
  for (const s of states) add(stateItem(s));
  for (const p of ports) add(item(p.key, 'port', 6, 0));

  interface Drawn {
    key: string;
    from: string;
    to: string;
    source: string;
    target: string;
    label: string[];
  }
  const drawn: Drawn[] = [];
  if (initial) drawn.push({ key: INIT, from: INIT, to: lift(initial)!, source: INIT, target: initial, label: [] });
  for (const p of ports) drawn.push({ key: p.key, from: p.key, to: lift(p.inner)!, source: p.key, target: p.inner, label: [] });
  // Transitions declared on this level's container into itself leave from an "any state" box: they apply in
  // each of the states listed in `from`.
  const declaredHere = (t: VizTransition) => t.source === (container?.id ?? null) && lift(t.target) !== null;
  const fromAny = graph.transitions.filter(declaredHere);
  if (fromAny.length > 0) {
    const except = states.filter((s) => !fromAny.some((t) => t.from.includes(s.id))).map((s) => s.key);
    const lines = [container ? `any ${container.key} state` : 'any state', ...(except.length ? wrap(`except ${except.join(', ')}`, 26) : [])];
    add(item(ANY, 'any', Math.max(...lines.map((l) => textWidth(l, SMALL))) + 2 * PAD, 12 + lines.length * 14, lines));
  }
  const merged = new Map<string, Drawn>();
  for (const t of graph.transitions) {
    const source = t.source ?? graph.id;
    const from = declaredHere(t) ? ANY : t.source === null ? null : lift(t.source);
    const to = lift(t.target);
    if (!from || !to || from === to) continue;
    const key = `${source}→${t.target}`;
    const existing = merged.get(key);
    // Alternatives between the same two states share one arrow, one line per trigger.
    if (existing) existing.label.push(...wrap(edgeLabel(t)));
    else merged.set(key, { key, from, to, source, target: t.target, label: wrap(edgeLabel(t)) });
  }
  drawn.push(...merged.values());

  // Ranks, from the states' own edges, and for a transition from the "any state" box one edge from each state it
  // applies in, so that its target ranks below all of those.
  const ranked = [...items.values()].filter((it) => it.kind === 'state' || it.kind === 'init').map((it) => it.id);
  const rankEdges: [string, string][] = drawn.filter((e) => ranked.includes(e.from)).map((e) => [e.from, e.to]);
  for (const t of fromAny) for (const f of t.from) rankEdges.push([lift(f)!, lift(t.target)!]);
  const out = new Map<string, string[]>(ranked.map((id) => [id, []]));
  for (const [a, b] of rankEdges) out.get(a)!.push(b);
  const reversed = new Set<string>();
  const onStack = new Set<string>();
  const seen = new Set<string>();
  const dfs = (v: string) => {
    seen.add(v);
    onStack.add(v);
    for (const w of out.get(v)!) {
      if (onStack.has(w)) reversed.add(`${v}→${w}`);
      else if (!seen.has(w)) dfs(w);
    }
    onStack.delete(v);
  };
  for (const v of ranked) if (!seen.has(v)) dfs(v);
  const dag = rankEdges.filter(([a, b]) => a !== b).map(([a, b]): [string, string] => (reversed.has(`${a}→${b}`) ? [b, a] : [a, b]));
  const rank = new Map<string, number>(ranked.map((id) => [id, 0]));
  for (let changed = true; changed; ) {
    changed = false;
    for (const [a, b] of dag) {
      if (rank.get(b)! < rank.get(a)! + 1) {
        rank.set(b, rank.get(a)! + 1);
        changed = true;
      }
    }
  }
  // The "any state" box sits right above its targets; ports above or below everything.
  if (items.has(ANY)) rank.set(ANY, Math.min(...drawn.filter((e) => e.from === ANY).map((e) => rank.get(e.to)!)) - 1);
  const shift = Math.max(0, -Math.min(...rank.values()), ports.some((p) => p.side === 'top') ? 1 : 0);
  for (const [id, r] of rank) rank.set(id, r + shift);
  const bottom = Math.max(...rank.values()) + 1;
  for (const p of ports) rank.set(p.key, p.side === 'top' ? 0 : bottom);

  // Compound children, now that it is known from which side each crossing edge comes.
  const nested = new Map<string, Laid>();
  const portOf = new Set<string>();
  const childPorts = new Map<string, Port[]>();
  for (const e of drawn) {
    for (const [end, lifted, other] of [[e.source, e.from, e.to], [e.target, e.to, e.from]] as const) {
      if (end === lifted || !states.some((s) => s.id === lifted)) continue;
      const key = `${e.key}/${end === e.source ? 'out' : 'in'}`;
      portOf.add(key);
      const side = rank.get(other)! < rank.get(lifted)! ? 'top' : 'bottom';
      childPorts.set(lifted, [...(childPorts.get(lifted) ?? []), { key, side, inner: end }]);
    }
  }
  for (const s of states) {
    if (s.children.length === 0) continue;
    const inner = layoutLevel(graph, s, childPorts.get(s.id) ?? []);
    nested.set(s.id, inner);
    const it = items.get(s.id)!;
    it.w = Math.max(inner.w + 2 * PAD, textWidth(s.key, FONT) + textWidth(s.invokes.map((x) => `invokes ${x}`).join(', '), SMALL) + 4 * PAD);
    it.h = inner.h + HEADER + PAD;
  }

  const layers: Item[][] = [];
  const put = (it: Item, layer: number) => {
    it.layer = layer;
    (layers[layer] ??= []).push(it);
  };
  // States on every third layer; the two layers between ranks hold edge slots, so that labels can be staggered.
  for (const it of items.values()) put(it, 3 * rank.get(it.id)!);
  const load = (l: number) => (layers[l] ?? []).reduce((sum, it) => sum + it.w + GAP_X, 0);
  const edges: Edge[] = drawn.map((e, n) => {
    const a = items.get(e.from)!;
    const b = items.get(e.to)!;
    const step = b.layer > a.layer ? 1 : -1;
    // The label goes to the least crowded layer it crosses, preferably near the middle of the edge.
    const middle = (a.layer + b.layer) / 2;
    let labelLayer = a.layer + step;
    for (let l = a.layer + step; l !== b.layer; l += step) {
      const cost = (x: number) => load(x) + 60 * Math.abs(x - middle);
      if (cost(l) < cost(labelLayer)) labelLayer = l;
    }
    const slots: Item[] = [];
    for (let l = a.layer + step; l !== b.layer; l += step) {
      const slot =
        l === labelLayer && e.label.length > 0
          ? item(`label${n}`, 'label', Math.max(...e.label.map((t) => textWidth(t, SMALL))) + 8, e.label.length * 14 + 4, e.label)
          : item(`via${n}.${l}`, 'via', 6, 0);
      put(slot, l);
      slots.push(slot);
    }
    const port = (end: 'out' | 'in') => (portOf.has(`${e.key}/${end}`) ? `${e.key}/${end}` : null);
    return { key: e.key, source: e.source, target: e.target, label: e.label, chain: [a, ...slots, b], sourcePort: port('out'), targetPort: port('in') };
  });
  for (let l = 0; l < layers.length; l++) layers[l] ??= [];

  const nbrs = new Map<Item, Item[]>();
  const link = (p: Item, q: Item) => {
    nbrs.set(p, [...(nbrs.get(p) ?? []), q]);
    nbrs.set(q, [...(nbrs.get(q) ?? []), p]);
  };
  for (const e of edges) for (let i = 0; i + 1 < e.chain.length; i++) link(e.chain[i]!, e.chain[i + 1]!);
  layers.forEach((layer) => layer.forEach((it, i) => (it.order = i)));
  const sweep = (from: number, to: number, step: number) => {
    for (let l = from; l !== to; l += step) {
      const layer = layers[l]!;
      const bary = new Map<Item, number>();
      for (const it of layer) {
        const ns = (nbrs.get(it) ?? []).filter((n) => n.layer === l - step);
        bary.set(it, ns.length ? ns.reduce((s, n) => s + n.order, 0) / ns.length : it.order);
      }
      layer.sort((p, q) => bary.get(p)! - bary.get(q)!);
      layer.forEach((it, i) => (it.order = i));
    }
  };
  for (let i = 0; i < 6; i++) {
    sweep(1, layers.length, 1);
    sweep(layers.length - 2, -1, -1);
  }

  // x: pack each layer, then pull every item towards its neighbours while keeping order and spacing.
  const cx = new Map<Item, number>();
  for (const layer of layers) {
    let x = 0;
    for (const it of layer) {
      cx.set(it, x + it.w / 2);
      x += it.w + GAP_X;
    }
  }
  const sep = (p: Item, q: Item) => (p.w + q.w) / 2 + (p.kind === 'via' && q.kind === 'via' ? 8 : GAP_X);
  for (let round = 0; round < 16; round++) {
    const down = round % 2 === 0;
    // A weak pull towards the middle keeps loosely connected parts (the "any state" branch) from drifting off.
    const xs = [...cx.values()];
    const mid = (Math.min(...xs) + Math.max(...xs)) / 2;
    for (let k = 0; k < layers.length; k++) {
      const layer = layers[down ? k : layers.length - 1 - k]!;
      const want = layer.map((it) => {
        const ns = nbrs.get(it) ?? [];
        const pulled = ns.length ? ns.reduce((s, n) => s + cx.get(n)!, 0) / ns.length : cx.get(it)!;
        return 0.9 * pulled + 0.1 * mid;
      });
      const right = [...want];
      for (let i = 1; i < layer.length; i++) right[i] = Math.max(right[i]!, right[i - 1]! + sep(layer[i - 1]!, layer[i]!));
      const left = [...want];
      for (let i = layer.length - 2; i >= 0; i--) left[i] = Math.min(left[i]!, left[i + 1]! - sep(layer[i]!, layer[i + 1]!));
      const both = want.map((_, i) => (left[i]! + right[i]!) / 2);
      for (let i = 1; i < layer.length; i++) both[i] = Math.max(both[i]!, both[i - 1]! + sep(layer[i - 1]!, layer[i]!));
      layer.forEach((it, i) => cx.set(it, both[i]!));
    }
  }

  // Straighten each edge: its slots move to their common median x as far as their layer neighbours allow.
  for (let round = 0; round < 4; round++) {
    for (const e of edges) {
      const slots = e.chain.slice(1, -1);
      if (slots.length < 2) continue;
      const xs = slots.map((it) => cx.get(it)!).sort((p, q) => p - q);
      const target = xs[Math.floor(xs.length / 2)]!;
      for (const it of slots) {
        const layer = layers[it.layer]!;
        const before = layer[it.order - 1];
        const after = layer[it.order + 1];
        const lo = before ? cx.get(before)! + sep(before, it) : -Infinity;
        const hi = after ? cx.get(after)! - sep(it, after) : Infinity;
        cx.set(it, Math.min(Math.max(target, lo), hi));
      }
    }
  }

  let y = 0;
  for (const layer of layers) {
    const h = Math.max(4, ...layer.map((it) => it.h));
    for (const it of layer) it.y = y + (h - it.h) / 2;
    y += h + GAP_Y;
  }
  const all = layers.flat();
  const minX = Math.min(...all.map((it) => cx.get(it)! - it.w / 2));
  for (const it of all) it.x = cx.get(it)! - it.w / 2 - minX;
  const tall = new Set(all.filter((it) => it.kind === 'state' && nested.has(it.id)).map((it) => it.layer));
  return { w: Math.max(...all.map((it) => it.x + it.w)), h: y - GAP_Y, items: all, edges, nested, tall };
}

interface Point {
  x: number;
  y: number;
}

/** Catmull-Rom spline through the points, leaving and entering boxes vertically (the chart flows top to bottom). */
function curve(points: Point[]): string {
  const f = (n: number) => n.toFixed(1);
  const first = points[0]!;
  const last = points[points.length - 1]!;
  const pts = [
    { x: first.x, y: 2 * first.y - points[1]!.y },
    ...points,
    { x: last.x, y: 2 * last.y - points[points.length - 2]!.y },
  ];
  let d = `M${f(first.x)},${f(first.y)}`;
  for (let i = 1; i + 2 < pts.length; i++) {
    const [p0, p1, p2, p3] = [pts[i - 1]!, pts[i]!, pts[i + 1]!, pts[i + 2]!];
    d += ` C${f(p1.x + (p2.x - p0.x) / 6)},${f(p1.y + (p2.y - p0.y) / 6)} ${f(p2.x - (p3.x - p1.x) / 6)},${f(p2.y - (p3.y - p1.y) / 6)} ${f(p2.x)},${f(p2.y)}`;
  }
  return d;
}

/**
 * The statechart as a standalone SVG. Every state is a `<g class="sc-state" data-state="ID">` so that the /ui page
 * can highlight the current one; colours are presentation attributes, which the page's CSS overrides.
 */
export function toSvg(graph: VizGraph): string {
  const top = layoutLevel(graph, null, []);
  const margin = 12;
  const byId = new Map(allStates(graph).map((s) => [s.id, s]));
  const boxes: string[] = [];
  const paths: string[] = [];
  const labels: string[] = [];
  const text = (x: number, y: number, s: string, size: number, extra = '') =>
    `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" font-size="${size}"${extra}>${esc(s)}</text>`;
  const lineTexts = (r: Rect, lines: string[], first: number, step: number, size: (i: number) => number) =>
    lines.map((l, i) => text(r.x + r.w / 2, r.y + first + i * step, l, size(i), ' text-anchor="middle"')).join('');

  interface Placed {
    laid: Laid;
    ox: number;
    oy: number;
  }
  const abs = (p: Placed, it: Item): Rect => ({ x: p.ox + it.x, y: p.oy + it.y, w: it.w, h: it.h });
  const inside = (p: Placed, id: string): Placed => {
    const r = abs(p, p.laid.items.find((it) => it.id === id)!);
    const laid = p.laid.nested.get(id)!;
    return { laid, ox: r.x + (r.w - laid.w) / 2, oy: r.y + HEADER };
  };
  const centre = (r: Rect): Point => ({ x: r.x + r.w / 2, y: r.y + r.h / 2 });
  /** Where an edge meets a box: its top or bottom edge, at the x of the neighbouring point as far as the box allows. */
  const meet = (r: Rect, toward: Point): Point => ({
    x: Math.min(Math.max(toward.x, r.x + 8), r.x + r.w - 8),
    y: toward.y > r.y + r.h / 2 ? r.y + r.h : r.y,
  });

  /** Points of an edge from `from` (a point on the compound's border, or null) through its slots to its real end. */
  const route = (p: Placed, e: Edge): { start: Rect | Point; mids: Point[]; end: Rect | Point } => {
    const ends = (it: Item, port: string | null, outgoing: boolean): { box: Rect | Point; via: Point[] } => {
      if (!port) return { box: abs(p, it), via: [] };
      // Continue inside the compound child: border point, then the port edge's own slots to the inner state.
      const inner = inside(p, it.id);
      const portEdge = inner.laid.edges.find((x) => x.key === port)!;
      const portItem = abs(inner, portEdge.chain[0]!);
      const r = abs(p, it);
      const border = { x: portItem.x + portItem.w / 2, y: portItem.y < r.y + r.h / 2 ? r.y : r.y + r.h };
      const rest = route(inner, portEdge);
      const via = [border, ...rest.mids];
      return { box: rest.end, via: outgoing ? via.reverse() : via };
    };
    const chain = e.chain;
    const s = ends(chain[0]!, e.sourcePort, true);
    const t = ends(chain[chain.length - 1]!, e.targetPort, false);
    // Through labels, and through pass-through slots only where they steer around a state (on a state's layer
    // and the layers next to it): bending through every slot makes the curves wiggle.
    const steers = (it: Item) => [it.layer - 1, it.layer, it.layer + 1].some((l) => p.laid.tall.has(l));
    const slots = chain
      .slice(1, -1)
      .filter((it) => it.kind === 'label' || steers(it))
      .map((it) => centre(abs(p, it)));
    if (chain[0]!.kind === 'port') return { start: centre(abs(p, chain[0]!)), mids: slots, end: t.box };
    return { start: s.box, mids: [...s.via, ...slots, ...t.via], end: t.box };
  };
  const isRect = (x: Rect | Point): x is Rect => 'w' in x;

  const drawLevel = (p: Placed, scope: string) => {
    for (const it of p.laid.items) {
      const r = abs(p, it);
      if (it.kind === 'init') {
        boxes.push(`<circle class="sc-init" cx="${r.x + r.w / 2}" cy="${r.y + r.h / 2}" r="6" fill="#222"><title>initial state of ${esc(scope || graph.id)}</title></circle>`);
      } else if (it.kind === 'any') {
        const t = lineTexts(r, it.lines, 18, 14, (i) => (i === 0 ? FONT : SMALL));
        boxes.push(`<g class="sc-any"><rect x="${r.x}" y="${r.y}" width="${r.w}" height="${r.h}" rx="6" fill="#fff" stroke="#444" stroke-dasharray="5 3"/>${t}</g>`);
      } else if (it.kind === 'label') {
        const t = lineTexts(r, it.lines, 13, 14, () => SMALL);
        labels.push(`<g class="sc-label"><rect x="${r.x}" y="${r.y}" width="${r.w}" height="${r.h}" rx="3" fill="#fff" fill-opacity="0.92"/>${t}</g>`);
      } else if (it.kind === 'state') {
        const s = byId.get(it.id)!;
        const compound = p.laid.nested.has(it.id);
        const parts = [`<rect class="sc-box" x="${r.x}" y="${r.y}" width="${r.w}" height="${r.h}" rx="10" fill="${compound ? '#f4f4f4' : '#fff'}" stroke="#222" stroke-width="1.5"/>`];
        if (s.type === 'final') parts.push(`<rect x="${r.x + 3}" y="${r.y + 3}" width="${r.w - 6}" height="${r.h - 6}" rx="8" fill="none" stroke="#222"/>`);
        if (compound) {
          parts.push(text(r.x + PAD, r.y + 17, s.key, FONT, ' class="sc-name" font-weight="bold"'));
          parts.push(text(r.x + r.w - PAD, r.y + 17, s.invokes.map((x) => `invokes ${x}`).join(', '), SMALL, ' text-anchor="end"'));
        } else {
          parts.push(text(r.x + r.w / 2, r.y + 20, s.key, FONT, ' class="sc-name" text-anchor="middle" font-weight="bold"'));
          parts.push(lineTexts(r, it.lines, 36, 15, () => SMALL));
        }
        boxes.push(`<g class="sc-state${s.type === 'final' ? ' sc-final' : ''}" data-state="${esc(s.id)}"><title>${esc(s.id)} (${s.type})</title>${parts.join('')}</g>`);
        if (compound) drawLevel(inside(p, it.id), s.id);
      }
    }
    for (const e of p.laid.edges) {
      if (e.chain[0]!.kind === 'port') continue; // drawn as part of the edge that crosses the border
      const { start, mids, end } = route(p, e);
      const first = mids[0] ?? (isRect(end) ? centre(end) : end);
      const last = mids[mids.length - 1] ?? (isRect(start) ? centre(start) : start);
      const pts = [isRect(start) ? meet(start, first) : start, ...mids, isRect(end) ? meet(end, last) : end];
      const title = e.label.length ? `<title>${esc(e.label.join(' '))}</title>` : '';
      const cls = e.source === INIT ? 'sc-edge sc-initial' : 'sc-edge';
      paths.push(`<path class="${cls}" data-source="${esc(e.source)}" data-target="${esc(e.target)}" d="${curve(pts)}" fill="none" stroke="#555" stroke-width="1.4" marker-end="url(#sc-arrow)">${title}</path>`);
    }
  };
  drawLevel({ laid: top, ox: margin, oy: margin }, '');

  const width = Math.ceil(top.w + 2 * margin);
  const height = Math.ceil(top.h + 2 * margin);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" class="sc" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" font-family="DejaVu Sans, Liberation Sans, Arial, sans-serif" role="img" aria-label="${esc(graph.id)} lifecycle statechart">`,
    '<defs><marker id="sc-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
    ...boxes,
    ...paths,
    ...labels,
    '</svg>',
    '',
  ].join('\n');
}

export function renderViz(graph: VizGraph, format: VizFormat): string {
  if (format === 'json') return `${JSON.stringify(graph, null, 2)}\n`;
  return format === 'mermaid' ? toMermaid(graph) : toSvg(graph);
}
