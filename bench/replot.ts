// Redraws the SVG and reprints the table of a results file: node dist-bench/bench/replot.js bench/results/X.json
import { readFileSync, writeFileSync } from 'node:fs';
import { printTable, renderSvg } from './lib/report.js';
import type { BenchResults } from './lib/types.js';

const file = process.argv[2];
if (!file || !file.endsWith('.json')) {
  process.stderr.write('usage: node dist-bench/bench/replot.js RESULTS.json   (rewrites RESULTS.svg, prints the table)\n');
  process.exit(2);
}
const results = JSON.parse(readFileSync(file, 'utf8')) as BenchResults;
writeFileSync(file.replace(/\.json$/, '.svg'), renderSvg(results));
process.stdout.write(printTable(results));
