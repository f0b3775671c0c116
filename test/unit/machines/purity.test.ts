// machines/ must stay pure: it imports only 'xstate' and its own files, so the visualizer can bundle it and
// no I/O (node:*, undici, pino, prom-client, src/) can leak into the statechart.
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const machinesDir = new URL('../../../machines/', import.meta.url);
const files = readdirSync(machinesDir).filter((f) => f.endsWith('.ts'));

/** Every module specifier in static imports/exports, dynamic import() and require(). */
function specifiers(source: string): string[] {
  const found: string[] = [];
  const patterns = [
    /\bimport\s+(?:type\s+)?(?:[^'";]*?\s+from\s+)?['"]([^'"]+)['"]/g,
    /\bexport\s+(?:type\s+)?(?:\*|\{[^}]*\}|\*\s+as\s+\w+)\s+from\s+['"]([^'"]+)['"]/g,
    /\bimport\s*\(\s*['"`]([^'"`]+)['"`]\s*\)/g,
    /\brequire\s*\(\s*['"`]([^'"`]+)['"`]\s*\)/g,
  ];
  for (const re of patterns) for (const m of source.matchAll(re)) found.push(m[1]!);
  return found;
}

describe('machines/ purity', () => {
  it('has machine files to check', () => {
    expect(files).toEqual(expect.arrayContaining(['lifecycle.ts', 'types.ts', 'index.ts']));
  });

  it.each(files)('%s imports only xstate and ./ files', (file) => {
    const source = readFileSync(new URL(file, machinesDir), 'utf8');

    const bad = specifiers(source).filter((s) => s !== 'xstate' && !/^\.\/[^/]+$/.test(s));

    expect(bad).toEqual([]);
  });

  it.each(files)('%s has no dynamic import, require or process/global I/O', (file) => {
    const source = readFileSync(new URL(file, machinesDir), 'utf8');

    expect(source).not.toMatch(/\bimport\s*\(/);
    expect(source).not.toMatch(/\brequire\s*\(/);
    expect(source).not.toMatch(/\bprocess\./);
    expect(source).not.toMatch(/\bconsole\./);
    expect(source).not.toMatch(/\b(?:setTimeout|setInterval|Date\.now|Math\.random)\s*\(/);
  });

  it('finds the imports that are there (the scan is not vacuous)', () => {
    const read = (f: string) => specifiers(readFileSync(new URL(f, machinesDir), 'utf8'));
    expect(read('lifecycle.ts')).toEqual(expect.arrayContaining(['xstate', './types.js']));
    expect(read('index.ts')).toEqual(expect.arrayContaining(['./lifecycle.js', './types.js']));
  });

  it('the import scanner catches what it must catch', () => {
    const sample = [
      "import { setup } from 'xstate';",
      "import type { A } from './types.js';",
      "import { request } from 'undici';",
      "import * as fs from 'node:fs';",
      "import '../src/log.js';",
      "export * from './lifecycle.js';",
      "export { x } from '../src/x.js';",
      "const m = await import('pino');",
    ].join('\n');

    expect(specifiers(sample).sort()).toEqual(
      ['../src/log.js', '../src/x.js', './lifecycle.js', './types.js', 'node:fs', 'pino', 'undici', 'xstate'].sort(),
    );
  });
});
