// `etcd-mirror viz` and the /ui page's statechart: the machine as data (viz/graph.ts), drawn as Mermaid
// (viz/mermaid.ts) or laid out by ELK (viz/layout.ts) into SVG (viz/svg.ts).
import type { VizGraph } from './viz/graph.js';
import { toMermaid } from './viz/mermaid.js';
import { toSvg } from './viz/svg.js';

export type VizFormat = 'json' | 'mermaid' | 'svg';
export const VIZ_FORMATS: readonly VizFormat[] = ['json', 'mermaid', 'svg'];

export async function renderViz(graph: VizGraph, format: VizFormat): Promise<string> {
  if (format === 'json') return `${JSON.stringify(graph, null, 2)}\n`;
  return format === 'mermaid' ? toMermaid(graph) : toSvg(graph);
}
