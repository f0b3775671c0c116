// The lifecycle statechart as plain data, read from the machine definition itself so that no drawing can drift
// from what runs. Pure (no I/O): the daemon, the CLI and the tests share it; mermaid.ts and layout.ts/svg.ts draw it.
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
