// The mirror binary as the benchmark runs it: the same entry as bin/etcd-mirror.js, but importing the CLI
// compiled into dist-bench/ by `npm run bench`, so the benchmarked code is always the tree it was built from
// (dist/ may be stale while src/ changes). `--bin bin/etcd-mirror.js` runs the installed binary instead.
import { main } from '../src/cli/cli.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.stdout.write('', () => process.exit(code));
  },
  (err: unknown) => {
    process.stderr.write(`etcd-mirror: fatal: ${(err as Error)?.message ?? String(err)}\n`);
    process.exit(1);
  },
);
