// Markdown for answers and channel messages: `marked` parses (GitHub flavour: tables, fenced code), highlight.js
// colours code blocks, and DOMPurify sanitizes the HTML. Only http, https and mailto links survive as links.

import DOMPurify from 'dompurify';
import { Marked, type Tokens } from 'marked';
import hljs from 'highlight.js/lib/core';
import bash from 'highlight.js/lib/languages/bash';
import css from 'highlight.js/lib/languages/css';
import go from 'highlight.js/lib/languages/go';
import javascript from 'highlight.js/lib/languages/javascript';
import json from 'highlight.js/lib/languages/json';
import python from 'highlight.js/lib/languages/python';
import rust from 'highlight.js/lib/languages/rust';
import sql from 'highlight.js/lib/languages/sql';
import typescript from 'highlight.js/lib/languages/typescript';
import xml from 'highlight.js/lib/languages/xml';
import yaml from 'highlight.js/lib/languages/yaml';

for (const [name, lang] of Object.entries({ bash, css, go, javascript, json, python, rust, sql, typescript, xml, yaml })) {
  hljs.registerLanguage(name, lang);
}
hljs.registerAliases(['sh', 'shell', 'zsh'], { languageName: 'bash' });
hljs.registerAliases(['js', 'jsx', 'mjs'], { languageName: 'javascript' });
hljs.registerAliases(['ts', 'tsx'], { languageName: 'typescript' });
hljs.registerAliases(['py'], { languageName: 'python' });
hljs.registerAliases(['html', 'svg'], { languageName: 'xml' });
hljs.registerAliases(['yml'], { languageName: 'yaml' });

const SAFE_SCHEMES = new Set(['http:', 'https:', 'mailto:']);

/** `url` if it is an absolute http, https or mailto URL; null for anything else (javascript:, data:, relative…). */
export function safeUrl(url: unknown): string | null {
  if (typeof url !== 'string') return null;
  const trimmed = url.trim();
  // Browsers drop tabs and newlines inside URLs ("java\tscript:"), so judge what the browser would see.
  if (/[\u0000-\u001f\u007f]/.test(trimmed)) return null;
  try {
    const parsed = new URL(trimmed);
    return SAFE_SCHEMES.has(parsed.protocol) ? trimmed : null;
  } catch {
    return null;
  }
}

const escapeHtml = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

function highlight(code: string, lang: string | undefined): string {
  const name = (lang ?? '').trim().split(/\s+/)[0]?.toLowerCase();
  if (name && hljs.getLanguage(name)) return hljs.highlight(code, { language: name, ignoreIllegals: true }).value;
  return escapeHtml(code);
}

function makeParser(breaks: boolean): Marked {
  const parser = new Marked({ gfm: true, breaks, async: false });
  parser.use({
    renderer: {
      code({ text, lang }: Tokens.Code): string {
        const label = (lang ?? '').trim().split(/\s+/)[0] ?? '';
        const cls = label ? ` class="hljs language-${escapeHtml(label)}"` : ' class="hljs"';
        const head = label ? `<div class="code-lang">${escapeHtml(label)}</div>` : '';
        return `<div class="code-block">${head}<pre><code${cls}>${highlight(text, lang)}</code></pre></div>`;
      },
      // Images would load from anywhere (and the CSP refuses them): show them as links to the picture.
      image({ href, text }: Tokens.Image): string {
        return `<a href="${escapeHtml(href ?? '')}">${escapeHtml(text || href || 'image')}</a>`;
      },
      // Raw HTML in a message is shown as typed, never interpreted.
      html({ text }: Tokens.HTML | Tokens.Tag): string {
        return escapeHtml(text);
      }
    }
  });
  return parser;
}

const parsers = { block: makeParser(false), chat: makeParser(true) };

let hooked = false;
function purifier(): typeof DOMPurify {
  if (!hooked) {
    hooked = true;
    DOMPurify.addHook('afterSanitizeAttributes', (node) => {
      if (node.nodeName !== 'A') return;
      const href = safeUrl(node.getAttribute('href'));
      if (!href) {
        // Not a link we allow: keep the text, drop the element.
        node.replaceWith(...Array.from(node.childNodes));
        return;
      }
      node.setAttribute('href', href);
      node.setAttribute('target', '_blank');
      node.setAttribute('rel', 'noopener noreferrer nofollow');
    });
  }
  return DOMPurify;
}

/**
 * Markdown to sanitized HTML. `breaks` turns single newlines into line breaks (channel messages are typed by
 * people; model answers follow CommonMark).
 */
export function renderMarkdown(source: string, { breaks = false }: { breaks?: boolean } = {}): string {
  const html = (breaks ? parsers.chat : parsers.block).parse(source ?? '') as string;
  return purifier().sanitize(html, {
    FORBID_TAGS: ['style', 'img', 'form', 'input', 'button', 'textarea', 'select', 'iframe', 'video', 'audio', 'svg', 'math'],
    FORBID_ATTR: ['style', 'srcset', 'action', 'formaction'],
    ALLOW_DATA_ATTR: false
  });
}
