// Links the compiled CLI (dist/src/cli/cli.js, from tsc), every module of ours it loads and the npm packages they
// import into a few files in dist/src/bundle/: Node's module loaders resolve, read and link each module on its own,
// and the ~90 of ours plus pino's and xstate's cost a restarting daemon tens of ms before its first request
// (start-up time, bench/RESULTS.md). Each dynamic import stays a chunk of its own, loaded only when that path runs
// (v3, the subcommands); gRPC, protobufjs and elkjs stay outside (loaded from node_modules when a v3 side or the
// chart needs them), and so do undici and prom-client, whose classes are loaded by path (createRequire): one copy
// of each, whichever module asks. bin/etcd-mirror.js
// runs the bundle when it is newer than dist/src/cli/cli.js, otherwise dist/ as tsc wrote it.
// Usage: node scripts/bundle.mjs [dist directory, default dist]
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';

const dist = process.argv[2] ?? 'dist';
const outdir = join(dist, 'src/bundle');
rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: { cli: join(dist, 'src/cli/cli.js') },
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: ['@grpc/*', 'protobufjs', 'protobufjs/*', 'elkjs', 'elkjs/*', 'undici', 'undici/*', 'prom-client', 'prom-client/*'],
  // The CommonJS packages inside (pino and its streams) require Node's built-in modules.
  banner: { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" },
  // Chunks sit at the depth of dist/src/cli/, so paths relative to a module (../ui/, ../../../bin/) still hold.
  chunkNames: '[name]-[hash]',
  logLevel: 'warning',
});
