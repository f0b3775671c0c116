#!/usr/bin/env node
// Runs the compiled CLI (npm ci / npm run build produce dist/): the bundle of it (scripts/bundle.mjs: a few files
// instead of ~90 modules, tens of ms less before a restarted daemon's first request) when it was built after the
// compiled modules, otherwise dist/ as tsc wrote it (a tsc run alone leaves the bundle behind: never run that).
import { statSync } from 'node:fs';

const mtime = (path) => statSync(new URL(path, import.meta.url), { throwIfNoEntry: false })?.mtimeMs ?? -1;
const bundled = mtime('../dist/src/bundle/cli.js') >= mtime('../dist/src/cli/cli.js');
const { main } = await import(bundled ? '../dist/src/bundle/cli.js' : '../dist/src/cli/cli.js');

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
