import { describe, expect, it } from 'vitest';
import { safeUrl } from './markdown';

describe('safeUrl', () => {
  it('keeps http, https and mailto', () => {
    expect(safeUrl('https://example.com/a?b=1')).toBe('https://example.com/a?b=1');
    expect(safeUrl(' http://example.com ')).toBe('http://example.com');
    expect(safeUrl('mailto:ada@example.com')).toBe('mailto:ada@example.com');
  });
  it('refuses every other scheme, relative urls and non-strings', () => {
    for (const bad of ['javascript:alert(1)', 'JaVaScRiPt:alert(1)', ' javascript:alert(1)', 'java\tscript:alert(1)',
      'data:text/html,<script>alert(1)</script>', 'vbscript:x', 'file:///etc/passwd', '/relative', '//host/x', '', null, 42, {}]) {
      expect(safeUrl(bad)).toBeNull();
    }
  });
});
