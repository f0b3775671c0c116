// The statechart laid out by ELK's layered algorithm over the whole hierarchy at once, so that the edges into and
// out of `running` and `standby` are routed with all the others and every edge label is placed by the engine. It
// runs where the SVG is made (the daemon, the CLI): the /ui page gets the finished drawing and loads nothing new.
import type { ElkExtendedEdge, ElkNode, ElkPoint } from 'elkjs/lib/elk.bundled.js';
import { allStates, type VizGraph, type VizState, type VizTransition } from './graph.js';

export const SANS = 'DejaVu Sans, Liberation Sans, Arial, sans-serif';
export const MONO = 'DejaVu Sans Mono, Liberation Mono, monospace';
export const NAME_PX = 13;
export const SMALL_PX = 11;
export const LINE_PX = 14;
// The layout cannot measure text, so widths are estimated. Edge labels are monospace, whose advance is 0.602 em
// (DejaVu Sans Mono; Liberation Mono: 0.600); the sans-serif figures are upper bounds for DejaVu Sans.
const MONO_EM = 0.602;
const SANS_EM = 0.62;
const BOLD_EM = 0.7;
export const LABEL_PAD = 3;
/** A compound state's title strip: name on the left, what it invokes on the right. */
export const HEADER_PX = 26;
/** Room for the "▶ " the /ui page puts before the current state's name. */
const MARKER_PX = Math.ceil(2 * NAME_PX * BOLD_EM);
const ROOT = '*root';

const width = (s: string, px: number, em: number) => Math.ceil(s.length * px * em);

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
