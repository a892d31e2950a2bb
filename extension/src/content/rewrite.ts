// In-place rewrite of the focused input, textarea or contenteditable: a small panel in a
// closed-off shadow root offers Rewriter-API-like options, streams a preview, and on
// "Replace" inserts the text with execCommand('insertText'), so the page sees real input
// events and Ctrl+Z brings the original back. Injected on demand only.
import { runTask, RunningTask } from '../shared/client';
import { cleanReply } from '../shared/prompts';
import type { RewriteOptions } from '../shared/protocol';

type Field = HTMLInputElement | HTMLTextAreaElement | HTMLElement;

interface Target { el: Field; start: number; end: number; range: Range | null; text: string }

const TEXT_INPUTS = /^(text|search|email|url|tel|)$/;

function editableOf(el: Element | null): Field | null {
  if (!el) return null;
  if (el instanceof HTMLTextAreaElement) return el;
  if (el instanceof HTMLInputElement && TEXT_INPUTS.test(el.type)) return el;
  const host = el instanceof HTMLElement ? el.closest('[contenteditable=""], [contenteditable="true"], [contenteditable="plaintext-only"]') : null;
  return host as HTMLElement | null;
}

/** The selected text of the field, or all of it when nothing is selected. */
function captureTarget(): Target | null {
  let active = document.activeElement;
  while (active?.shadowRoot?.activeElement) active = active.shadowRoot.activeElement;
  const el = editableOf(active);
  if (!el) return null;
  if (el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement) {
    let start = el.selectionStart ?? 0, end = el.selectionEnd ?? 0;
    if (start === end) { start = 0; end = el.value.length; }
    return { el, start, end, range: null, text: el.value.slice(start, end) };
  }
  const sel = getSelection();
  let range = sel && sel.rangeCount ? sel.getRangeAt(0).cloneRange() : null;
  if (!range || range.collapsed || !el.contains(range.commonAncestorContainer)) {
    range = document.createRange();
    range.selectNodeContents(el);
  }
  return { el, start: 0, end: 0, range, text: range.toString() };
}

/** Replaces the captured text through the editing pipeline (input events, undo stack). */
function apply(t: Target, text: string) {
  t.el.focus();
  if (t.el instanceof HTMLInputElement || t.el instanceof HTMLTextAreaElement) {
    t.el.setSelectionRange(t.start, t.end);
  } else if (t.range) {
    const sel = getSelection()!;
    sel.removeAllRanges();
    sel.addRange(t.range);
  }
  if (!document.execCommand('insertText', false, text)) {
    // Fields that refuse execCommand still get the text and an input event.
    if (t.el instanceof HTMLInputElement || t.el instanceof HTMLTextAreaElement) t.el.setRangeText(text, t.start, t.end, 'end');
    else t.range?.deleteContents(), t.range?.insertNode(document.createTextNode(text));
    t.el.dispatchEvent(new InputEvent('input', { bubbles: true, inputType: 'insertText', data: text }));
  }
}

/** Reply tokens for a rewrite: room for twice the original (~4 characters a token). */
function rewriteBudget(text: string) {
  return Math.min(1024, Math.ceil(text.length / 2) + 32);
}

const STYLE = `
  :host { all: initial; }
  .panel { position: fixed; z-index: 2147483647; width: 340px; max-width: calc(100vw - 16px); box-sizing: border-box;
    font: 13px/1.4 system-ui, sans-serif; color: #1d1d1f; background: #fff; border: 1px solid #c9c9d1; border-radius: 10px;
    box-shadow: 0 8px 28px rgba(0,0,0,.18); padding: 10px; }
  .row { display: flex; gap: 6px; margin-bottom: 6px; }
  select, input { flex: 1; min-width: 0; font: inherit; padding: 3px 4px; border: 1px solid #c9c9d1; border-radius: 6px; }
  .preview { white-space: pre-wrap; max-height: 180px; overflow: auto; background: #f5f5f7; border-radius: 6px; padding: 6px; min-height: 2.8em; margin-bottom: 6px; }
  .status { color: #6e6e73; font-size: 12px; min-height: 1.2em; margin-bottom: 6px; }
  .status.error { color: #b3261e; }
  button { font: inherit; padding: 4px 10px; border-radius: 6px; border: 1px solid #c9c9d1; background: #fff; cursor: pointer; }
  button.primary { background: #3b5bdb; border-color: #3b5bdb; color: #fff; }
  button:disabled { opacity: .5; cursor: default; }
  .title { font-weight: 600; margin-bottom: 6px; }
`;

function option(select: HTMLSelectElement, value: string, label: string) {
  const o = document.createElement('option');
  o.value = value;
  o.textContent = label;
  select.append(o);
}

function openPanel() {
  document.getElementById('gloss-rewrite-host')?.remove();
  const target = captureTarget();
  const hostEl = document.createElement('div');
  hostEl.id = 'gloss-rewrite-host';
  const root = hostEl.attachShadow({ mode: 'open' });
  const style = document.createElement('style');
  style.textContent = STYLE;
  const panel = document.createElement('div');
  panel.className = 'panel';
  panel.setAttribute('role', 'dialog');
  panel.setAttribute('aria-label', 'Rewrite with Gloss');
  root.append(style, panel);
  document.documentElement.append(hostEl);

  const el = (tag: string, cls = '', text = '') => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text) e.textContent = text;
    return e;
  };
  panel.append(el('div', 'title', 'Rewrite with Gloss'));
  const status = el('div', 'status');
  if (!target || !target.text.trim()) {
    status.textContent = 'Put the cursor in a text field (or select text in it) first.';
    status.classList.add('error');
    const close = el('button', '', 'Close');
    close.onclick = () => hostEl.remove();
    panel.append(status, close);
    return;
  }
  const rect = target.el.getBoundingClientRect();
  panel.style.left = `${Math.max(8, Math.min(rect.left, innerWidth - 348))}px`;
  panel.style.top = `${rect.bottom + 240 < innerHeight ? rect.bottom + 6 : Math.max(8, rect.top - 250)}px`;

  const tone = el('select') as HTMLSelectElement;
  tone.name = 'tone';
  option(tone, 'as-is', 'Tone: as is'); option(tone, 'more-formal', 'More formal'); option(tone, 'more-casual', 'More casual');
  const length = el('select') as HTMLSelectElement;
  length.name = 'length';
  option(length, 'as-is', 'Length: as is'); option(length, 'shorter', 'Shorter'); option(length, 'longer', 'Longer');
  const format = el('select') as HTMLSelectElement;
  format.name = 'format';
  option(format, 'as-is', 'Format: as is'); option(format, 'plain-text', 'Plain text'); option(format, 'markdown', 'Markdown');
  const instruction = el('input') as HTMLInputElement;
  instruction.name = 'instruction';
  instruction.placeholder = 'Custom instruction (optional)';
  const row1 = el('div', 'row'); row1.append(tone, length, format);
  const row2 = el('div', 'row'); row2.append(instruction);
  const preview = el('div', 'preview');
  preview.setAttribute('aria-live', 'polite');
  const go = el('button', 'primary', 'Rewrite') as HTMLButtonElement;
  go.name = 'rewrite';
  const replace = el('button', '', 'Replace') as HTMLButtonElement;
  replace.name = 'replace';
  replace.disabled = true;
  const cancel = el('button', '', 'Close') as HTMLButtonElement;
  cancel.name = 'close';
  const row3 = el('div', 'row'); row3.append(go, replace, cancel);
  panel.append(row1, row2, preview, status, row3);

  let running: RunningTask | null = null;
  let result = '';
  go.onclick = async () => {
    if (running) { running.cancel(); return; }
    result = '';
    preview.textContent = '';
    replace.disabled = true;
    status.classList.remove('error');
    status.textContent = 'Starting…';
    go.textContent = 'Stop';
    const rewrite: RewriteOptions = { tone: tone.value as RewriteOptions['tone'], length: length.value as RewriteOptions['length'], format: format.value as RewriteOptions['format'], instruction: instruction.value };
    running = runTask({ kind: 'rewrite', text: target.text, rewrite, options: { max_tokens: rewriteBudget(target.text), sampling: { temperature: 0.3 } } }, {
      onText: (t) => { result += t; preview.textContent = cleanReply(result); },
      onStatus: (s, pos) => { status.textContent = s === 'queued' ? `Waiting (${pos} in line)…` : s === 'loading' ? 'Loading the model…' : 'Writing…'; },
    });
    try {
      const r = await running.result;
      result = cleanReply(r.text);
      preview.textContent = result;
      status.textContent = r.stop_reason === 'cancelled' ? 'Stopped.' : 'Done. Replace the text, or rewrite again.';
      replace.disabled = !result;
    } catch (e) {
      status.textContent = (e as Error).message;
      status.classList.add('error');
    } finally {
      running = null;
      go.textContent = 'Rewrite';
    }
  };
  replace.onclick = () => {
    hostEl.remove();
    apply(target, result);
  };
  cancel.onclick = () => { running?.cancel(); hostEl.remove(); };
  root.addEventListener('keydown', (e) => { if ((e as KeyboardEvent).key === 'Escape') cancel.click(); });
  go.focus();
}

openPanel();
