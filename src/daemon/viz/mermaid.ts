// The statechart as a Mermaid stateDiagram-v2 (the README's drawing).
import type { VizGraph, VizState, VizTransition } from './graph.js';

const edgeLabel = (t: VizTransition): string => (t.guard ? `${t.event} [${t.guard}]` : t.event);

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
