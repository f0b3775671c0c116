// The laid-out statechart as SVG (the /ui page and `etcd-mirror viz --format svg`).
import type { ElkPoint } from 'elkjs/lib/elk.bundled.js';
import type { VizGraph } from './graph.js';
import { chartEdges, chartNodes, edgePoints, layoutChart, HEADER_PX, LABEL_PAD, LINE_PX, MONO, NAME_PX, SANS, SMALL_PX, type Chart } from './layout.js';

const esc = (s: string) => s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;');
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
