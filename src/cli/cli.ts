// Entry point: subcommands first (demo, viz, verify, audit, index, switchover, status), otherwise the reference-compatible daemon command line.
// Each path imports only what it runs: --version and --help load no daemon, client or metrics module (start-up time,
// bench/RESULTS.md).
import { HELP, parseConfig } from './config.js';
import { ConfigError } from '../etcd/errors.js';
import { VERSION } from '../daemon/version.js';

export async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'demo') {
    const { runDemo } = await import('./demo.js');
    return oneLineErrors(() => runDemo(argv.slice(1)));
  }
  if (argv[0] === 'viz') {
    const { vizCommand } = await import('./viz-command.js');
    return vizCommand(argv.slice(1));
  }
  if (argv[0] === 'verify' || argv[0] === 'index' || argv[0] === 'audit') {
    const { verifyCommand, indexCommand, auditCommand } = await import('./operator.js');
    const run = { verify: verifyCommand, index: indexCommand, audit: auditCommand }[argv[0]];
    return oneLineErrors(() => run(argv.slice(1)));
  }
  if (argv[0] === 'switchover') {
    const { switchoverCommand } = await import('./switchover.js');
    return oneLineErrors(() => switchoverCommand(argv.slice(1)));
  }
  if (argv[0] === 'status') {
    const { statusCommand } = await import('./status.js');
    return oneLineErrors(() => statusCommand(argv.slice(1)));
  }
  let parsed;
  try {
    parsed = parseConfig(argv);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`etcd-mirror: error: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  if (parsed.kind === 'help') {
    process.stdout.write(HELP);
    return 0;
  }
  if (parsed.kind === 'version') {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  // Each side's cost probe is opened (and asks its side) before the rest of the daemon loads: the first request to
  // each side goes out while it does (start-up time, bench/RESULTS.md).
  const { openCostProbes } = await import('../daemon/request-cost.js');
  let daemon;
  let mirror;
  try {
    const probes = await openCostProbes(parsed.config);
    daemon = await import('../daemon/main.js');
    mirror = await daemon.startMirror(parsed.config, { signals: true, probes });
  } catch (err) {
    process.stderr.write(`etcd-mirror: error: ${(err as Error).message}\n`);
    return 1;
  }
  const code = await mirror.done;
  const state = mirror.state();
  if (code !== 0) {
    const why = state.reason === daemon.MISSING_INDEX_MESSAGE ? daemon.MISSING_INDEX_MESSAGE : `stopped in state ${state.state}: ${state.reason}`;
    process.stderr.write(`etcd-mirror: ${why}\n`);
  }
  return code;
}

/** Runs an operator command: bad input exits 2, any other failure 1, each with one line on stderr. */
async function oneLineErrors(run: () => Promise<number>): Promise<number> {
  try {
    return await run();
  } catch (err) {
    process.stderr.write(`etcd-mirror: error: ${(err as Error).message}\n`);
    return err instanceof ConfigError ? 2 : 1;
  }
}
