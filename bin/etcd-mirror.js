#!/usr/bin/env node
// Runs the compiled CLI (npm ci / npm run build produce dist/).
import { main } from '../dist/src/cli/cli.js';

main(process.argv.slice(2)).then(
  (code) => {
    // Let pino's asynchronous stdout drain before exiting.
    process.stdout.write('', () => process.exit(code));
  },
  (err) => {
    process.stderr.write(`etcd-mirror: fatal: ${err?.message ?? String(err)}\n`);
    process.exit(1);
  },
);
