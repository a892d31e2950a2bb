// Readability-style main-text extraction: find the block with the most prose (paragraph
// text, penalised for link density), prefer <article>/<main>, drop navigation, ads,
// forms and hidden elements, and keep headings, paragraphs and list items as lines.
import type { PageText } from '../shared/protocol';

const SKIP = new Set(['SCRIPT', 'STYLE', 'NOSCRIPT', 'TEMPLATE', 'SVG', 'CANVAS', 'IFRAME', 'NAV', 'ASIDE', 'FOOTER', 'HEADER', 'FORM', 'BUTTON', 'SELECT', 'INPUT', 'TEXTAREA', 'DIALOG', 'FIGURE']);
const NOISE = /(^|[-_ ])(nav|menu|sidebar|footer|header|banner|cookie|consent|advert|ads?|promo|share|social|comment|related|breadcrumb|subscribe|newsletter|popup|modal)([-_ ]|$)/i;
const BLOCK = new Set(['P', 'H1', 'H2', 'H3', 'H4', 'H5', 'H6', 'LI', 'PRE', 'BLOCKQUOTE', 'TD', 'TH', 'DT', 'DD', 'FIGCAPTION']);
const CONTAINERS = 'p, h1, h2, h3, h4, h5, h6, li, pre, blockquote, td, th, dt, dd, div, section, article, main, ul, ol, table';

function hidden(el: Element): boolean {
  if (el.hasAttribute('hidden') || el.getAttribute('aria-hidden') === 'true') return true;
  const s = getComputedStyle(el);
  return s.display === 'none' || s.visibility === 'hidden';
}

function isNoise(el: Element): boolean {
  if (SKIP.has(el.tagName)) return true;
  const role = el.getAttribute('role') ?? '';
  if (/^(navigation|banner|contentinfo|complementary|search|dialog|alert)$/.test(role)) return true;
  const tag = `${el.id} ${typeof el.className === 'string' ? el.className : ''}`;
  return NOISE.test(tag) && el.tagName !== 'ARTICLE' && el.tagName !== 'MAIN' && el.tagName !== 'BODY';
}

function norm(s: string) {
  return s.replace(/\s+/g, ' ').trim();
}

/** Prose score: text in paragraphs, minus text inside links. */
function score(el: Element): number {
  let prose = 0;
  for (const p of el.querySelectorAll('p, pre, blockquote, li, td')) prose += norm(p.textContent ?? '').length;
  const text = norm(el.textContent ?? '').length || 1;
  let linked = 0;
  for (const a of el.querySelectorAll('a')) linked += norm(a.textContent ?? '').length;
  return prose * (1 - Math.min(1, linked / text));
}

/** The element most likely to hold the main content. */
export function mainElement(doc: Document): Element {
  const body = doc.body ?? doc.documentElement;
  const candidates = [...doc.querySelectorAll('article, main, [role="main"]')].filter((e) => !hidden(e));
  let best: Element = body;
  let bestScore = score(body) * 0.5;
  for (const c of candidates) {
    const s = score(c) * 1.2;
    if (s > bestScore * 0.6 && s > 0) { best = c; bestScore = Math.max(bestScore, s); }
  }
  if (best === body) {
    // No semantic container: climb from the densest paragraph cluster.
    for (const div of doc.querySelectorAll('div, section, td')) {
      if (isNoise(div) || hidden(div)) continue;
      const s = score(div);
      if (s > bestScore) { best = div; bestScore = s; }
    }
  }
  return best;
}

function collect(el: Element, out: string[]) {
  for (const child of el.children) {
    if (isNoise(child) || hidden(child)) continue;
    if (BLOCK.has(child.tagName)) {
      const t = norm((child as HTMLElement).innerText ?? child.textContent ?? '');
      if (!t) continue;
      if (/^H[1-6]$/.test(child.tagName)) out.push(`${'#'.repeat(Number(child.tagName[1]))} ${t}`);
      else if (child.tagName === 'LI') out.push(`- ${t}`);
      else out.push(t);
    } else if (!child.querySelector(CONTAINERS)) {
      // Inline-only content (a div of text and links): one line if it is prose-sized.
      const t = norm((child as HTMLElement).innerText ?? child.textContent ?? '');
      if (t.length > 40) out.push(t);
    } else {
      collect(child, out);
    }
  }
}

export function extractPage(doc: Document): PageText {
  const root = mainElement(doc);
  const lines: string[] = [];
  collect(root, lines);
  // No fallback to the raw innerText: a page of menus alone has no text worth reading.
  const text = lines.filter((l, i) => l !== lines[i - 1]).join('\n');
  return { title: norm(doc.title), url: doc.location?.href ?? '', text };
}
