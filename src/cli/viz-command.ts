// `etcd-mirror viz [--format mermaid|svg|json]`: prints the lifecycle statechart, drawn from the machine definition.
import { parseArgs } from 'node:util';
import { lifecycle } from '../../machines/index.js';
import { machineGraph } from '../daemon/viz/graph.js';
import { renderViz, VIZ_FORMATS, type VizFormat } from '../daemon/viz.js';

export async function vizCommand(argv: string[]): Promise<number> {
  let format: string;
  try {
    const { values } = parseArgs({ args: argv, options: { format: { type: 'string', default: 'mermaid' } }, strict: true });
    format = values.format;
  } catch (err) {
    process.stderr.write(`etcd-mirror: error: ${(err as Error).message}\n`);
    return 2;
  }
  if (!(VIZ_FORMATS as readonly string[]).includes(format)) {
    process.stderr.write(`etcd-mirror: error: --format must be one of ${VIZ_FORMATS.join(', ')}, not ${JSON.stringify(format)}\n`);
    return 2;
  }
  process.stdout.write(await renderViz(machineGraph(lifecycle), format as VizFormat));
  return 0;
}
