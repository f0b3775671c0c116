// The statechart renderings are read from the machine definition: every state and every transition of the
// lifecycle machine must show up in each of them. The expected sets are collected here straight from xstate's
// state nodes, not through src/viz.ts, so a state the walker missed cannot go unnoticed.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { AnyStateNode } from 'xstate';
import { lifecycle } from '../../machines/lifecycle.js';
import { renderViz } from '../../src/daemon/viz.js';
import { allStates, machineGraph } from '../../src/daemon/viz/graph.js';
import { toMermaid } from '../../src/daemon/viz/mermaid.js';
import { toSvg } from '../../src/daemon/viz/svg.js';

function definitionStates(node: AnyStateNode = lifecycle.root): AnyStateNode[] {
  return (Object.values(node.states) as AnyStateNode[]).flatMap((child) => [child, ...definitionStates(child)]);
}
const stateIds = definitionStates().map((n) => n.path.join('.'));
const targetsOf = (node: AnyStateNode) =>
  [...node.transitions.values()].flat().flatMap((t) => (t.target ?? []).map((target) => target.path.join('.')));

describe('machineGraph', () => {
  const graph = machineGraph(lifecycle);

  it('has the states of the definition, nested as in the definition', () => {
    expect(stateIds.length).toBeGreaterThanOrEqual(10);
    expect(allStates(graph).map((s) => s.id).sort()).toEqual([...stateIds].sort());
    const running = graph.states.find((s) => s.id === 'running');
    expect(running?.children.map((c) => c.key).sort()).toEqual(Object.keys(lifecycle.root.states.running!.states).sort());
    expect(running?.initial).toBe('running.tailing');
    expect(graph.initial).toBe('idle');
  });

  it('has every transition with a target, from the state that declares it', () => {
    for (const node of definitionStates()) {
      const drawn = graph.transitions.filter((t) => t.source === node.path.join('.')).map((t) => t.target);
      expect(drawn.sort()).toEqual(targetsOf(node).sort());
    }
  });

  it('names done/error/after triggers after the actor or delay, not xstate internals', () => {
    const events = graph.transitions.map((t) => t.event);
    expect(events).toEqual(expect.arrayContaining(['loadIndex done', 'loadIndex error', 'drain done', 'after backoff', 'after outOfWindowPause (250 ms)']));
    expect(events.join(' ')).not.toContain('xstate.');
    const starting = graph.transitions.filter((t) => t.source === 'starting' && t.event === 'loadIndex done').map((t) => t.guard);
    expect(starting).toEqual(['reloadRequested', 'indexFound', null]);
  });

  it('says in which states a transition into the declaring state applies: its children that do not override it', () => {
    const stop = graph.transitions.find((t) => t.source === null && t.event === 'operator.stop');
    expect(stop?.target).toBe('stopping');
    // `stopping` handles operator.stop itself; final states take no events.
    expect(stop?.from.sort()).toEqual(['fenced', 'idle', 'outOfWindow', 'running', 'stalled', 'standby', 'starting']);
    // --ha: losing the lock sends every active state to standby; idle, standby and stopping ignore it.
    const lost = graph.transitions.find((t) => t.source === null && t.event === 'lock.lost');
    expect(lost?.target).toBe('standby');
    expect(lost?.from.sort()).toEqual(['outOfWindow', 'running', 'stalled', 'starting']);
    for (const t of graph.transitions.filter((x) => x.source === 'running')) {
      expect(t.from).toEqual(t.target.startsWith('running.') ? ['running.reloading', 'running.recovering', 'running.tailing'] : ['running']);
    }
  });
});

describe('renderings', () => {
  const graph = machineGraph(lifecycle);

  it('mermaid: every state and every transition', () => {
    const text = toMermaid(graph);
    expect(text.startsWith('stateDiagram-v2\n')).toBe(true);
    const mid = (id: string) => id.replaceAll('.', '_');
    for (const id of stateIds) expect(text).toMatch(new RegExp(`(^|\\s)${mid(id)}(\\s|$)`, 'm'));
    for (const t of graph.transitions) for (const from of t.from) expect(text).toContain(`${mid(from)} --> ${mid(t.target)} : ${t.event}`);
    for (const from of ['idle', 'starting', 'running', 'outOfWindow', 'stalled']) expect(text).toContain(`${from} --> stopping : operator.stop`);
  });

  it('svg: one group per state with its id and name, an arrow into every target of every declaring state', async () => {
    const svg = await toSvg(graph);
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    for (const id of stateIds) expect(svg).toContain(`data-state="${id}"`);
    expect(svg.match(/class="sc-state/g)).toHaveLength(stateIds.length);
    // The /ui page marks the current state through these: its border is a direct child, its name a text of its own.
    for (const g of svg.match(/<g class="sc-state[^>]*>.*?<\/g>/g) ?? []) {
      expect(g).toMatch(/^<g class="sc-state[^"]*" data-state="[^"]+"><title>[^<]*<\/title><rect [^>]*class="sc-box"/);
      expect(g.match(/class="sc-name"[^>]*>([^<]+)<\/text>/)?.[1]).toBe(g.match(/data-state="(?:[^".]*\.)*([^".]+)"/)?.[1]);
    }
    for (const node of definitionStates()) {
      for (const target of targetsOf(node)) expect(svg).toContain(`data-source="${node.path.join('.')}" data-target="${target}"`);
    }
    // Self-contained: nothing fetched from elsewhere.
    expect(svg).not.toMatch(/href="http|@import|url\(http/);
  });

  it('json: parses back to the graph', async () => {
    expect(JSON.parse(await renderViz(graph, 'json'))).toEqual(graph);
  });
});

describe('README', () => {
  it('embeds the current Mermaid statechart (regenerate with `node bin/etcd-mirror.js viz --format mermaid`)', () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const block = /```mermaid\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(block).toBe(toMermaid(machineGraph(lifecycle)));
  });
});
