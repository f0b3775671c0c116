// The lifecycle statechart as plain data, read from the machine definition itself so that no drawing can drift
// from what runs, and its renderings: JSON, Mermaid (README) and SVG (the /ui page and `etcd-mirror viz`).
// Pure (no I/O): the daemon, the CLI and the tests share it.
import type { AnyStateMachine, AnyStateNode } from 'xstate';
import type { ElkExtendedEdge, ElkNode, ElkPoint } from 'elkjs/lib/elk.bundled.js';

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

// Laid out by ELK's layered algorithm over the whole hierarchy at once, so that the edges into and out of `running`
// and `standby` are routed with all the others and every edge label is placed by the engine. It runs where the SVG
// is made (the daemon, the CLI): the /ui page gets the finished drawing and loads nothing new.

const SANS = 'DejaVu Sans, Liberation Sans, Arial, sans-serif';
const MONO = 'DejaVu Sans Mono, Liberation Mono, monospace';
const NAME_PX = 13;
const SMALL_PX = 11;
const LINE_PX = 14;
// The layout cannot measure text, so widths are estimated. Edge labels are monospace, whose advance is 0.602 em
// (DejaVu Sans Mono; Liberation Mono: 0.600); the sans-serif figures are upper bounds for DejaVu Sans.
const MONO_EM = 0.602;
const SANS_EM = 0.62;
const BOLD_EM = 0.7;
const LABEL_PAD = 3;
/** A compound state's title strip: name on the left, what it invokes on the right. */
export const HEADER_PX = 26;
/** Room for the "▶ " the /ui page puts before the current state's name. */
const MARKER_PX = Math.ceil(2 * NAME_PX * BOLD_EM);
const ROOT = '*root';

const width = (s: string, px: number, em: number) => Math.ceil(s.length * px * em);
const esc = (s: string) => s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;');

/** Breaks a line at spaces. */
function wrap(text: string, max: number): string[] {
  const lines: string[] = [];
  for (const word of text.split(' ')) {
    const last = lines.length - 1;
    if (last >= 0 && lines[last]!.length + 1 + word.length <= max) lines[last] += ` ${word}`;
    else lines.push(word);
  }
  return lines;
}

export interface ChartNode {
  /** `choice`: where one trigger's guarded alternatives part (UML's choice pseudo-state). */
  kind: 'state' | 'compound' | 'initial' | 'any' | 'choice';
  state: VizState | null;
  /** Text under a state's name (what it invokes), or an "any state" box's text. */
  lines: string[];
}

export interface ChartEdge {
  /** The declaring state (the machine's id for machine-level transitions), as in VizTransition; null for the
   * arrow from an initial-state dot. */
  source: string | null;
  /** The target state; null for the arrow into a choice. */
  target: string | null;
  /** The label, one line per transition (or guard) it stands for. */
  lines: string[];
  /** The transitions this edge draws, all or part of. */
  transitions: VizTransition[];
}

export interface Chart {
  /** ELK's output. Every coordinate in it is absolute (elk.json.shapeCoords and edgeCoords ROOT). */
  layout: ElkNode;
  nodes: Map<string, ChartNode>;
  edges: Map<string, ChartEdge>;
}

/** For every graph of the hierarchy: ELK reads these per container, also when laying out the whole hierarchy. */
const LAYERED: Record<string, string> = {
  'elk.algorithm': 'layered',
  'elk.direction': 'DOWN',
  'elk.edgeRouting': 'ORTHOGONAL',
  // Cycles are broken by the order of the nodes (see chartInput): an edge pointing back in it points up.
  'elk.layered.cycleBreaking.strategy': 'MODEL_ORDER',
  'elk.layered.nodePlacement.strategy': 'NETWORK_SIMPLEX',
  'elk.layered.compaction.postCompaction.strategy': 'EDGE_LENGTH',
  'elk.edgeLabels.placement': 'CENTER',
  'elk.spacing.nodeNode': '16',
  'elk.layered.spacing.nodeNodeBetweenLayers': '16',
  'elk.spacing.edgeNode': '10',
  'elk.layered.spacing.edgeNodeBetweenLayers': '8',
  'elk.spacing.edgeEdge': '10',
  'elk.layered.spacing.edgeEdgeBetweenLayers': '10',
  'elk.spacing.edgeLabel': '3',
  'elk.spacing.labelLabel': '4',
  // Crossing minimisation starts from a random order; with this seed the loops between running, stalled and
  // outOfWindow come out shortest (compared by route length and crossings over seeds 1 to 25).
  'elk.randomSeed': '25',
};

// On its edge, which passes behind it: no doubt which arrow a label belongs to.
const INLINE: Record<string, string> = { 'elk.edgeLabels.inline': 'true' };

const ROOT_OPTIONS: Record<string, string> = {
  ...LAYERED,
  'elk.hierarchyHandling': 'INCLUDE_CHILDREN',
  'elk.json.shapeCoords': 'ROOT',
  'elk.json.edgeCoords': 'ROOT',
  'elk.padding': '[top=12,left=12,bottom=12,right=12]',
};

/**
 * The ELK input for the graph, with the transitions bundled where the machine has bundles:
 * - a transition into the state that declares it (the machine's `operator.stop`, `running`'s `runner.reconciled`)
 *   is drawn once, from an "any state" box inside the declaring state, one box per set of states it applies in;
 * - one trigger's guarded alternatives towards different states leave through a choice (a small diamond): the
 *   trigger labels the arrow into it, each guard the arrow out of it (numbered when the order matters);
 * - otherwise, transitions between the same two boxes share one arrow, one label line each.
 */
function chartInput(graph: VizGraph): { root: ElkNode; nodes: Map<string, ChartNode>; edges: Map<string, ChartEdge> } {
  const nodes = new Map<string, ChartNode>();
  const ends = new Map<string, [string, string]>();
  const edges = new Map<string, ChartEdge>();
  const parentOf = new Map<string, string>();
  const containers = new Map<string, ElkNode>();
  const byId = new Map(allStates(graph).map((s) => [s.id, s]));
  const root: ElkNode = { id: ROOT, layoutOptions: ROOT_OPTIONS, children: [], edges: [] };
  containers.set(ROOT, root);

  /** Adds a node to a container, at the end or (the "any state" boxes) at the start. */
  const place = (parent: string, node: ElkNode, info: ChartNode, first = false) => {
    const children = containers.get(parent)!.children!;
    if (first) children.unshift(node);
    else children.push(node);
    parentOf.set(node.id, parent);
    nodes.set(node.id, info);
  };
  /** Adds an edge, or a line to the edge already drawn between the same two boxes. */
  const link = (from: string, to: string, edge: ChartEdge) => {
    const key = `${from}→${to}`;
    const known = edges.get(key);
    if (known) {
      known.lines.push(...edge.lines);
      known.transitions.push(...edge.transitions);
    } else {
      edges.set(key, edge);
      ends.set(key, [from, to]);
    }
  };
  const fill = (container: string, states: VizState[], initial: string | null) => {
    if (initial) {
      const id = `${container}/initial`;
      place(container, { id, width: 12, height: 12 }, { kind: 'initial', state: null, lines: [] });
      link(id, initial, { source: null, target: initial, lines: [], transitions: [] });
    }
    for (const s of states) {
      const lines = s.invokes.map((src) => `invokes ${src}`);
      const info: ChartNode = { kind: s.children.length > 0 ? 'compound' : 'state', state: s, lines };
      const name = width(s.key, NAME_PX, BOLD_EM) + MARKER_PX;
      if (s.children.length === 0) {
        const w = Math.max(name + 20, ...lines.map((l) => width(l, SMALL_PX, SANS_EM) + 20), 90);
        place(container, { id: s.id, width: w, height: 30 + lines.length * 15 + (s.type === 'final' ? 4 : 0) }, info);
        continue;
      }
      const title = name + width(lines.join(', '), SMALL_PX, SANS_EM) + 40;
      const node: ElkNode = {
        id: s.id,
        layoutOptions: {
          ...LAYERED,
          // ELK's model-order cycle breaking fails inside a compound node in hierarchical mode; depth first
          // from the initial state follows the node order too.
          'elk.layered.cycleBreaking.strategy': 'DEPTH_FIRST',
          'elk.padding': `[top=${HEADER_PX + 12},left=14,bottom=14,right=14]`,
          'elk.nodeSize.constraints': 'MINIMUM_SIZE',
          'elk.nodeSize.minimum': `(${title}, ${HEADER_PX + 40})`,
        },
        children: [],
        edges: [],
      };
      containers.set(s.id, node);
      place(container, node, info);
      fill(s.id, s.children, s.initial);
    }
  };
  fill(ROOT, graph.states, graph.initial);

  const anyBoxes = new Map<string, string>();
  const anyBox = (container: string, from: string[]): string => {
    const key = `${container}|${[...from].sort().join(',')}`;
    const known = anyBoxes.get(key);
    if (known) return known;
    const id = `${container}/any${anyBoxes.size}`;
    anyBoxes.set(key, id);
    const states = container === ROOT ? graph.states : byId.get(container)!.children;
    const except = states.filter((s) => s.type !== 'final' && !from.includes(s.id)).map((s) => s.key);
    const lines = [container === ROOT ? 'any state' : `any ${byId.get(container)!.key} state`, ...(except.length ? wrap(`except ${except.join(', ')}`, 24) : [])];
    const w = Math.max(...lines.map((l) => width(l, NAME_PX, SANS_EM))) + 20;
    place(container, { id, width: w, height: 12 + lines.length * 16 }, { kind: 'any', state: null, lines }, true);
    return id;
  };

  // One trigger of one box, with its alternatives in the order xstate tries them.
  const triggers = new Map<string, { origin: string; event: string; alternatives: VizTransition[] }>();
  for (const t of graph.transitions) {
    const intoItself = t.source === null || t.target.startsWith(`${t.source}.`);
    const origin = intoItself ? anyBox(t.source ?? ROOT, t.from) : t.source!;
    const key = `${origin}|${t.event}`;
    const trigger = triggers.get(key) ?? { origin, event: t.event, alternatives: [] };
    trigger.alternatives.push(t);
    triggers.set(key, trigger);
  }
  let choices = 0;
  const originOf = new Map<string, string>();
  for (const { origin, event, alternatives } of triggers.values()) {
    const source = alternatives[0]!.source ?? graph.id;
    const guarded = alternatives.filter((t) => t.guard).length;
    // Guards are tried in order: when more than one could hold, the number says which wins.
    const guardText = (t: VizTransition) => (t.guard ? `${guarded > 1 ? `${alternatives.indexOf(t) + 1}: ` : ''}[${t.guard}]` : '[else]');
    if (new Set(alternatives.map((t) => t.target)).size < 3) {
      for (const t of alternatives) link(origin, t.target, { source, target: t.target, lines: [`${event}${guarded ? ` ${guardText(t)}` : ''}`], transitions: [t] });
      continue;
    }
    const choice = `${origin}/choice${choices++}`;
    originOf.set(choice, origin);
    place(parentOf.get(origin)!, { id: choice, width: 24, height: 24 }, { kind: 'choice', state: null, lines: [] });
    link(origin, choice, { source, target: null, lines: [event], transitions: [...alternatives] });
    for (const t of alternatives) link(choice, t.target, { source, target: t.target, lines: [guardText(t)], transitions: [t] });
  }

  // ELK breaks cycles by the order of the nodes (edges pointing back in it point up): the definition's order,
  // except that a state which a compound state's transitions lead to and which leads back into its children
  // (stalled and outOfWindow for running) goes just before the compound state, so that the way back points down
  // and the chart reads from idle to running. A choice follows the state it belongs to.
  const ownerIn = (container: string, id: string): string | null => {
    for (let n: string | undefined = id; n !== undefined; n = parentOf.get(n)) {
      const owner = originOf.get(n) ?? n;
      if (parentOf.get(owner) === container) return owner;
    }
    return null;
  };
  for (const [id, container] of containers) {
    const kids = container.children!;
    const states = kids.map((k) => k.id).filter((k) => !originOf.has(k));
    const links = [...ends.values()].map(([a, b]) => ({ from: ownerIn(id, a), to: ownerIn(id, b), into: b }));
    const leadsBack = (s: string, c: string) =>
      links.some((l) => l.from === c && l.to === s) && links.some((l) => l.from === s && l.to === c && l.into !== c);
    const order: string[] = [];
    for (const c of states) {
      if (order.includes(c)) continue;
      if (nodes.get(c)!.kind === 'compound') order.push(...states.filter((s) => s !== c && !order.includes(s) && leadsBack(s, c)));
      order.push(c);
    }
    const rank = (k: string) => 2 * order.indexOf(originOf.get(k) ?? k) + (originOf.has(k) ? 1 : 0);
    kids.sort((a, b) => rank(a.id) - rank(b.id));
  }

  // Each edge goes into the innermost container holding both ends, where ELK expects it.
  const chain = (id: string): string[] => (id === ROOT ? [ROOT] : [id, ...chain(parentOf.get(id)!)]);
  for (const [key, e] of edges) {
    const [from, to] = ends.get(key)!;
    const outer = chain(parentOf.get(to)!);
    const container = chain(parentOf.get(from)!).find((c) => outer.includes(c))!;
    const label = {
      id: `${key}/label`,
      text: e.lines.join('\n'), // ELK skips a label without text
      width: Math.max(...e.lines.map((l) => width(l, SMALL_PX, MONO_EM))) + 2 * LABEL_PAD,
      height: e.lines.length * LINE_PX + 2 * LABEL_PAD,
      layoutOptions: INLINE,
    };
    const labels = e.lines.length ? [label] : [];
    containers.get(container)!.edges!.push({ id: key, sources: [from], targets: [to], labels });
  }
  return { root, nodes, edges };
}

/** Runs the layout. */
export async function layoutChart(graph: VizGraph): Promise<Chart> {
  const { root, nodes, edges } = chartInput(graph);
  // Loaded on first use: 1.6 MB of JavaScript (about 0.3 s and 30 MB to load) that a daemon nobody looks at, and
  // `viz --format mermaid`, need not load. A CommonJS bundle: its namespace's default is `module.exports`, which
  // its typings describe as the module, so the constructor is one `.default` further (the bundle sets
  // `ELK.default = ELK` for this).
  const elk = await import('elkjs/lib/elk.bundled.js');
  const layout = await new elk.default.default().layout(root);
  return { layout, nodes, edges };
}

/** Every node of the layout below the root, parents before their children. */
export function chartNodes(layout: ElkNode): ElkNode[] {
  return (layout.children ?? []).flatMap((n) => [n, ...chartNodes(n)]);
}

/** Every edge of the layout, wherever ELK keeps it. */
export function chartEdges(layout: ElkNode): ElkExtendedEdge[] {
  return [layout, ...chartNodes(layout)].flatMap((n) => n.edges ?? []);
}

/** An edge's route: ELK's sections joined, from the source's border to the target's. */
export function edgePoints(edge: ElkExtendedEdge): ElkPoint[] {
  return (edge.sections ?? []).flatMap((s, i) => [...(i === 0 ? [s.startPoint] : []), ...(s.bendPoints ?? []), s.endPoint]);
}

const f = (n: number) => (Math.round(n * 10) / 10).toString();

/** Orthogonal route with slightly rounded bends, which are easier to follow than sharp ones. */
function route(points: ElkPoint[]): string {
  let d = `M${f(points[0]!.x)},${f(points[0]!.y)}`;
  for (let i = 1; i + 1 < points.length; i++) {
    const [a, b, c] = [points[i - 1]!, points[i]!, points[i + 1]!];
    const r = Math.min(5, Math.hypot(b.x - a.x, b.y - a.y) / 2, Math.hypot(c.x - b.x, c.y - b.y) / 2);
    const toward = (p: ElkPoint, q: ElkPoint) => {
      const len = Math.hypot(q.x - p.x, q.y - p.y) || 1;
      return `${f(p.x + ((q.x - p.x) * r) / len)},${f(p.y + ((q.y - p.y) * r) / len)}`;
    };
    d += ` L${toward(b, a)} Q${f(b.x)},${f(b.y)} ${toward(b, c)}`;
  }
  const last = points[points.length - 1]!;
  return `${d} L${f(last.x)},${f(last.y)}`;
}

/**
 * The laid-out chart as a standalone SVG. Every state is a `<g class="sc-state" data-state="ID">` whose direct
 * child `.sc-box` is its border and whose `.sc-name` is its name, so that the /ui page can mark the current one;
 * colours are presentation attributes, which the page's CSS overrides.
 */
export function chartSvg(graph: VizGraph, chart: Chart): string {
  const text = (x: number, y: number, s: string, px: number, extra = '') => `<text x="${f(x)}" y="${f(y)}" font-size="${px}"${extra}>${esc(s)}</text>`;
  const boxes: string[] = [];
  for (const n of chartNodes(chart.layout)) {
    const info = chart.nodes.get(n.id)!;
    const [x, y, w, h] = [n.x ?? 0, n.y ?? 0, n.width ?? 0, n.height ?? 0];
    const rect = (extra: string) => `<rect x="${f(x)}" y="${f(y)}" width="${f(w)}" height="${f(h)}"${extra}/>`;
    if (info.kind === 'choice') {
      const d = `M${f(x + w / 2)},${f(y)} L${f(x + w)},${f(y + h / 2)} L${f(x + w / 2)},${f(y + h)} L${f(x)},${f(y + h / 2)} Z`;
      boxes.push(`<path class="sc-choice" d="${d}" fill="#fff" stroke="#222" stroke-width="1.5"><title>choice: the first alternative whose guard holds</title></path>`);
    } else if (info.kind === 'initial') {
      boxes.push(`<circle class="sc-init" cx="${f(x + w / 2)}" cy="${f(y + h / 2)}" r="6" fill="#222"><title>initial state</title></circle>`);
    } else if (info.kind === 'any') {
      const lines = info.lines.map((l, i) => text(x + w / 2, y + 19 + i * 16, l, i === 0 ? NAME_PX : SMALL_PX, ' text-anchor="middle"'));
      boxes.push(`<g class="sc-any">${rect(' rx="6" fill="#fff" stroke="#444" stroke-dasharray="5 3"')}${lines.join('')}</g>`);
    } else {
      const s = info.state!;
      const parts = [rect(` class="sc-box" rx="10" fill="${info.kind === 'compound' ? '#f4f4f4' : '#fff'}" stroke="#222" stroke-width="1.5"`)];
      if (s.type === 'final') parts.push(`<rect x="${f(x + 3)}" y="${f(y + 3)}" width="${f(w - 6)}" height="${f(h - 6)}" rx="8" fill="none" stroke="#222"/>`);
      if (info.kind === 'compound') {
        parts.push(text(x + 10, y + 18, s.key, NAME_PX, ' class="sc-name" font-weight="bold"'));
        if (info.lines.length) parts.push(text(x + w - 10, y + 18, info.lines.join(', '), SMALL_PX, ' text-anchor="end"'));
        parts.push(`<line x1="${f(x)}" y1="${f(y + HEADER_PX)}" x2="${f(x + w)}" y2="${f(y + HEADER_PX)}" stroke="#bbb"/>`);
      } else {
        parts.push(text(x + w / 2, y + 20, s.key, NAME_PX, ' class="sc-name" text-anchor="middle" font-weight="bold"'));
        parts.push(...info.lines.map((l, i) => text(x + w / 2, y + 36 + i * 15, l, SMALL_PX, ' text-anchor="middle"')));
      }
      boxes.push(`<g class="sc-state${s.type === 'final' ? ' sc-final' : ''}" data-state="${esc(s.id)}"><title>${esc(s.id)} (${s.type})</title>${parts.join('')}</g>`);
    }
  }
  const paths: string[] = [];
  const labels: string[] = [];
  for (const e of chartEdges(chart.layout)) {
    const info = chart.edges.get(e.id)!;
    const title = info.lines.length ? `<title>${esc(info.lines.join('; '))}</title>` : '';
    const ends = `${info.source === null ? '' : ` data-source="${esc(info.source)}"`}${info.target === null ? '' : ` data-target="${esc(info.target)}"`}`;
    const cls = info.source === null ? 'sc-edge sc-initial' : 'sc-edge';
    paths.push(`<path class="${cls}"${ends} d="${route(edgePoints(e))}" fill="none" stroke="#555" stroke-width="1.4" marker-end="url(#sc-arrow)">${title}</path>`);
    for (const l of e.labels ?? []) {
      const [x, y, w, h] = [l.x ?? 0, l.y ?? 0, l.width ?? 0, l.height ?? 0];
      const lines = info.lines.map((t, i) => text(x + LABEL_PAD, y + LABEL_PAD + i * LINE_PX + 10.5, t, SMALL_PX));
      labels.push(`<g class="sc-label"${ends}><rect x="${f(x)}" y="${f(y)}" width="${f(w)}" height="${f(h)}" rx="3" fill="#fff"/>${lines.join('')}</g>`);
    }
  }
  const w = Math.ceil(chart.layout.width ?? 0);
  const h = Math.ceil(chart.layout.height ?? 0);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" class="sc" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" font-family="${SANS}" role="img" aria-label="${esc(graph.id)} lifecycle statechart">`,
    '<defs><marker id="sc-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
    ...boxes,
    ...paths,
    `<g font-family="${MONO}">`,
    ...labels,
    '</g>',
    '</svg>',
    '',
  ].join('\n');
}

export async function toSvg(graph: VizGraph): Promise<string> {
  return chartSvg(graph, await layoutChart(graph));
}

export async function renderViz(graph: VizGraph, format: VizFormat): Promise<string> {
  if (format === 'json') return `${JSON.stringify(graph, null, 2)}\n`;
  return format === 'mermaid' ? toMermaid(graph) : toSvg(graph);
}
