import { describe, expect, it } from 'vitest';
import { OrderingPolicy } from '../../src/replication/v2/ordering.js';

describe('OrderingPolicy', () => {
  it('strict and key never change', () => {
    const strict = new OrderingPolicy('strict');
    const key = new OrderingPolicy('key');
    for (const h of [1000, 10, 0, 900]) {
      expect(strict.update(h)).toBe(false);
      expect(key.update(h)).toBe(false);
    }
    expect(strict.writerOrdering).toBe('strict');
    expect(key.writerOrdering).toBe('key');
  });

  it('adaptive reorders below 250 headroom and returns to strict only above 500, reporting each change once', () => {
    let t = 0;
    const changes: boolean[] = [];
    const p = new OrderingPolicy('adaptive', (c) => changes.push(c.reordering), () => t);
    expect(p.writerOrdering).toBe('strict');
    expect(p.update(300)).toBe(false);
    expect(p.update(249)).toBe(true);
    t = 1_000;
    expect(p.writerOrdering).toBe('key');
    for (const h of [100, 300, 500, 260]) expect(p.update(h)).toBe(false);
    expect(p.reorderingMs()).toBe(1_000);
    t = 3_000;
    expect(p.update(501)).toBe(true);
    expect(p.writerOrdering).toBe('strict');
    t = 10_000;
    expect(p.reorderingMs()).toBe(3_000);
    expect(p.update(null)).toBe(false);
    expect(changes).toEqual([true, false]);
  });
});
