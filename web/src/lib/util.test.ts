import { describe, expect, it } from 'vitest';
import { initials, toDate } from './util';

describe('util', () => {
  it('toDate reads seconds, milliseconds, microseconds and nanoseconds alike', () => {
    const ms = Date.UTC(2026, 10, 28, 9, 0, 0);
    for (const t of [ms / 1000, ms, ms * 1000, ms * 1e6]) expect(toDate(t).getTime()).toBe(ms);
  });

  it('initials takes the first letters of up to two words', () => {
    expect(initials('Ada Lovelace King')).toBe('AL');
    expect(initials('bob')).toBe('B');
    expect(initials('')).toBe('?');
    expect(initials(undefined)).toBe('?');
  });
});
