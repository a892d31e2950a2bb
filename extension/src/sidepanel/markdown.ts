// Model output to DOM, safely: Markdown rendered by `marked`, then sanitised by DOMPurify
// into a fragment (never assigned as an HTML string). Media and forms are dropped so a reply
// cannot make the browser fetch anything (`![](https://…)` would leak that the page was read).
import DOMPurify from 'dompurify';
import { marked } from 'marked';

const FORBID = ['img', 'picture', 'source', 'video', 'audio', 'iframe', 'object', 'embed', 'form', 'input', 'button', 'style', 'link', 'meta', 'svg', 'math'];

export function renderMarkdown(text: string): DocumentFragment {
  const html = marked.parse(text, { async: false, gfm: true, breaks: true }) as string;
  const frag = DOMPurify.sanitize(html, { RETURN_DOM_FRAGMENT: true, FORBID_TAGS: FORBID, FORBID_ATTR: ['style', 'srcset', 'src'] });
  for (const a of frag.querySelectorAll('a')) {
    const href = a.getAttribute('href') ?? '';
    if (!/^https?:/i.test(href)) a.removeAttribute('href');
    a.target = '_blank';
    a.rel = 'noopener noreferrer';
  }
  return frag;
}
