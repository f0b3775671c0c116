// The layering rule, checked on the import graph of src/ and machines/ (every import and export ... from, type-only
// and dynamic ones included, as TypeScript's own pre-processor reads them): layers only look down, no module takes
// part in an import cycle, and each command path loads only what it runs.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

function tsFiles(dir: string): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? tsFiles(join(dir, e.name)) : e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [join(dir, e.name)] : [],
  );
}

interface Imports {
  /** Files of this repository, relative to its root (src/x/y.ts). */
  files: string[];
  /** Package names (xstate, @grpc/grpc-js, node:fs). */
  packages: string[];
  /** The same, for static imports only (what loading the module loads). */
  staticFiles: string[];
  staticPackages: string[];
}

/** Module specifiers in `text`, each with whether it is a dynamic import() (the specifier follows a parenthesis). */
function specifiers(text: string): { name: string; dynamic: boolean }[] {
  return ts.preProcessFile(text, true, true).importedFiles.map(({ fileName, pos }) => {
    let at = pos - 1;
    while (at > 0 && /\s/.test(text[at]!)) at--;
    return { name: fileName, dynamic: text[at] === '(' };
  });
}

function importsOf(file: string): Imports {
  const text = readFileSync(join(root, file), 'utf8');
  // What loading the module loads: the emitted JavaScript's static imports (type-only ones are gone there).
  const js = ts.transpileModule(text, { compilerOptions: { module: ts.ModuleKind.NodeNext, target: ts.ScriptTarget.ES2022 } }).outputText;
  const out: Imports = { files: [], packages: [], staticFiles: [], staticPackages: [] };
  const add = (fileName: string, files: string[], packages: string[]) => {
    if (fileName.startsWith('.')) files.push(relative(root, resolve(root, dirname(file), fileName.replace(/\.js$/, '.ts'))));
    else packages.push(fileName.startsWith('@') ? fileName.split('/').slice(0, 2).join('/') : fileName.split('/')[0]!);
  };
  for (const { name } of specifiers(text)) add(name, out.files, out.packages);
  for (const { name, dynamic } of specifiers(js)) if (!dynamic) add(name, out.staticFiles, out.staticPackages);
  return out;
}

const files = [...tsFiles('src'), ...tsFiles('machines')].filter((f) => !f.startsWith('src/ui/') || f === 'src/ui/wire.ts');
const graph = new Map(files.map((f) => [f, importsOf(f)]));

/** Everything loading `entry` loads (static imports, transitively): files and packages. */
function loadedBy(entry: string): { files: Set<string>; packages: Set<string> } {
  const seen = new Set<string>();
  const packages = new Set<string>();
  const visit = (f: string) => {
    if (seen.has(f)) return;
    seen.add(f);
    const imports = graph.get(f);
    if (!imports) throw new Error(`${f}: not a source file`);
    for (const p of imports.staticPackages) packages.add(p);
    for (const g of imports.staticFiles) visit(g);
  };
  visit(entry);
  return { files: seen, packages };
}

describe('layering', () => {
  it('reads the import graph (sanity: known edges are seen, type-only and dynamic ones too)', () => {
    expect(graph.get('src/replication/pipeline.ts')!.files).toContain('src/replication/ports.ts');
    expect(graph.get('src/cli/cli.ts')!.files).toContain('src/daemon/main.ts');
    expect(graph.get('src/cli/cli.ts')!.staticFiles).not.toContain('src/daemon/main.ts');
    expect(graph.get('src/daemon/metrics.ts')!.packages).toContain('prom-client');
  });

  it('src/etcd and src/replication import nothing from src/daemon, src/cli or src/ui; src/etcd nothing from src/replication', () => {
    const upward: string[] = [];
    for (const [file, { files: targets }] of graph) {
      const above = file.startsWith('src/etcd/')
        ? ['src/daemon/', 'src/cli/', 'src/ui/', 'src/replication/']
        : file.startsWith('src/replication/')
          ? ['src/daemon/', 'src/cli/', 'src/ui/']
          : [];
      for (const t of targets) if (above.some((a) => t.startsWith(a))) upward.push(`${file} → ${t}`);
    }
    expect(upward).toEqual([]);
  });

  it('has no import cycles among src/ and machines/ files', () => {
    // Tarjan's strongly connected components: any component of more than one file is a cycle.
    let next = 0;
    const index = new Map<string, number>();
    const low = new Map<string, number>();
    const stack: string[] = [];
    const onStack = new Set<string>();
    const cycles: string[][] = [];
    const connect = (v: string) => {
      index.set(v, next);
      low.set(v, next++);
      stack.push(v);
      onStack.add(v);
      for (const w of graph.get(v)!.files) {
        if (!graph.has(w)) continue;
        if (!index.has(w)) {
          connect(w);
          low.set(v, Math.min(low.get(v)!, low.get(w)!));
        } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
      if (low.get(v) === index.get(v)) {
        const component: string[] = [];
        let w: string;
        do {
          w = stack.pop()!;
          onStack.delete(w);
          component.push(w);
        } while (w !== v);
        if (component.length > 1 || graph.get(v)!.files.includes(v)) cycles.push(component.sort());
      }
    };
    for (const f of graph.keys()) if (!index.has(f)) connect(f);
    expect(cycles).toEqual([]);
  });

  it('imports resolve to source files', () => {
    const missing = [...graph].flatMap(([file, { files: targets }]) => targets.filter((t) => !graph.has(t) && !t.startsWith('src/ui/')).map((t) => `${file} → ${t}`));
    expect(missing).toEqual([]);
  });

  it('--version and --help load no daemon, client, metrics or statechart module', () => {
    const { files: loaded, packages } = loadedBy('src/cli/cli.ts');
    expect([...packages].filter((p) => !p.startsWith('node:'))).toEqual([]);
    expect([...loaded].filter((f) => f.startsWith('src/daemon/') && f !== 'src/daemon/version.ts')).toEqual([]);
  });

  it('a v2 destination loads neither gRPC nor the v3 client; a v3 destination not the v2 engine', () => {
    const daemon = loadedBy('src/daemon/main.ts');
    const v2 = loadedBy('src/replication/v2-backend.ts');
    const v3 = loadedBy('src/replication/v3-backend.ts');
    for (const { packages, files: loaded } of [daemon, v2]) {
      expect([...packages].filter((p) => p.startsWith('@grpc/'))).toEqual([]);
      expect(loaded.has('src/etcd/v3/client.ts')).toBe(false);
    }
    for (const { files: loaded } of [daemon, v3]) {
      expect([...loaded].filter((f) => f.startsWith('src/replication/v2/') || f === 'src/replication/v2-source.ts' || f === 'src/etcd/v2/client.ts')).toEqual(
        // Light v2 modules the daemon itself uses: the ordering policy and the source budget (no I/O of their own).
        [...loaded].filter((f) => f === 'src/replication/v2/ordering.ts' || f === 'src/replication/v2/source-budget.ts'),
      );
    }
  });
});
