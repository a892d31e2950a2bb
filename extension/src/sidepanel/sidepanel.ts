// The side panel: conversations with the model (optionally about the current page),
// summaries from the context menu, and the model manager's UI.
import { ask, runTask, RunningTask } from '../shared/client';
import {
  ChatMessage, ContextUse, GenerateOptions, HostEvent, ModelsState, PageText, PendingSummary, SummarizeOptions, Task,
  fromExtensionPage,
} from '../shared/protocol';
import { cleanReply } from '../shared/prompts';
import { renderMarkdown } from './markdown';

interface Conversation {
  id: string;
  title: string;
  messages: ChatMessage[];
  /** Page snapshot the conversation is about (taken when the user asked). */
  page?: PageText;
  /** A summary's source (shown quoted above it). */
  quote?: string;
  updated: number;
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const messagesEl = $<HTMLElement>('messages');
const input = $<HTMLTextAreaElement>('input');
const sendBtn = $<HTMLButtonElement>('send');
const usePage = $<HTMLInputElement>('use-page');
const meter = $<HTMLElement>('context-meter');
const engineStatus = $<HTMLElement>('engine-status');
const convSelect = $<HTMLSelectElement>('conversation');

/** The tab this panel reads (`?tab=ID`); otherwise the active tab of the focused window. */
const boundTab = Number(new URLSearchParams(location.search).get('tab')) || undefined;

let conversations: Conversation[] = [];
let current: Conversation;
let running: RunningTask | null = null;

function newConversation(): Conversation {
  return { id: crypto.randomUUID(), title: 'New conversation', messages: [], updated: Date.now() };
}

async function loadConversations() {
  const s = await chrome.storage.local.get(['conversations', 'settings']);
  conversations = (s.conversations as Conversation[] | undefined) ?? [];
  current = conversations[0] ?? newConversation();
  const settings = s.settings as Record<string, string> | undefined;
  for (const [k, v] of Object.entries(settings ?? {})) {
    const el = document.getElementById(k) as HTMLInputElement | null;
    if (el) el.value = v;
  }
}

async function saveConversations() {
  if (current.messages.length && !conversations.includes(current)) conversations.unshift(current);
  conversations.sort((a, b) => b.updated - a.updated);
  await chrome.storage.local.set({ conversations: conversations.slice(0, 100) });
  renderConversationList();
}

function renderConversationList() {
  convSelect.replaceChildren();
  const list = conversations.includes(current) ? conversations : [current, ...conversations];
  for (const c of list) {
    const o = document.createElement('option');
    o.value = c.id;
    o.textContent = c.title;
    o.selected = c === current;
    convSelect.append(o);
  }
}

function settingValue(id: string): number {
  return Number(($<HTMLInputElement>(id)).value);
}

function generateOptions(): GenerateOptions {
  return { max_tokens: settingValue('max-tokens'), sampling: { temperature: settingValue('temperature'), top_p: settingValue('top-p') } };
}

function summarizeOptions(): SummarizeOptions {
  return {
    type: $<HTMLSelectElement>('summary-type').value as SummarizeOptions['type'],
    length: $<HTMLSelectElement>('summary-length').value as SummarizeOptions['length'],
    format: $<HTMLSelectElement>('summary-format').value as SummarizeOptions['format'],
  };
}

function button(label: string, onClick: () => void, name = label.toLowerCase()) {
  const b = document.createElement('button');
  b.textContent = label;
  b.name = name;
  b.type = 'button';
  b.onclick = onClick;
  return b;
}

/** One message's element; assistant text is rendered as sanitised Markdown. */
function messageEl(m: ChatMessage, index: number): HTMLElement {
  const el = document.createElement('div');
  el.className = `msg ${m.role}`;
  const body = document.createElement('div');
  body.className = 'body';
  if (m.role === 'assistant') {
    body.append(renderMarkdown(m.content));
    const actions = document.createElement('div');
    actions.className = 'actions';
    actions.append(button('Copy', () => void navigator.clipboard.writeText(m.content)));
    if (index === current.messages.length - 1) actions.append(button('Regenerate', () => void regenerate()));
    el.append(body, actions);
  } else {
    body.textContent = m.content;
    el.append(body);
  }
  return el;
}

function render() {
  messagesEl.replaceChildren();
  if (current.quote) {
    const q = document.createElement('div');
    q.className = 'quote';
    q.textContent = current.quote;
    messagesEl.append(q);
  }
  current.messages.forEach((m, i) => messagesEl.append(messageEl(m, i)));
  messagesEl.scrollTop = messagesEl.scrollHeight;
  renderConversationList();
}

function showContext(c: ContextUse | undefined) {
  if (!c) return;
  const src = c.sourceTokens ? `; page ${c.sourceTokens} tokens${c.truncated ? ' (cut to fit)' : ''}` : '';
  meter.textContent = `${c.promptTokens} / ${c.contextSize} tokens${src}`;
  meter.title = c.truncated ? 'The page is longer than the model\'s context window; only its beginning was used.' : '';
}

function showError(e: unknown) {
  engineStatus.textContent = (e as Error).message;
  engineStatus.classList.add('error');
}

function setBusy(busy: boolean) {
  sendBtn.textContent = busy ? 'Stop' : 'Send';
  sendBtn.name = busy ? 'stop' : 'send';
  document.body.dataset.busy = String(busy);
}

/** Streams the model's reply to `task` into a new assistant message of `current`. */
async function stream(task: Task) {
  const conv = current;
  const reply: ChatMessage = { role: 'assistant', content: '' };
  const el = messageEl(reply, -1);
  const body = el.querySelector('.body')!;
  messagesEl.append(el);
  setBusy(true);
  engineStatus.classList.remove('error');
  let frame = 0;
  running = runTask(task, {
    onText: (t) => {
      reply.content += t;
      // Re-render at most once per frame: Markdown of a growing reply.
      frame ||= requestAnimationFrame(() => {
        frame = 0;
        body.replaceChildren(renderMarkdown(cleanReply(reply.content)));
        messagesEl.scrollTop = messagesEl.scrollHeight;
      });
    },
    onStatus: (state, position, context) => {
      engineStatus.textContent = state === 'queued' ? `Waiting for the engine (${position} in line)…` : state === 'loading' ? 'Loading the model…' : 'Generating…';
      showContext(context);
    },
  });
  try {
    const r = await running.result;
    reply.content = cleanReply(r.text);
    const tps = r.tokens.length > 1 ? ` · ${(r.tokens.length / (r.decode_ms / 1000)).toFixed(1)} tok/s` : '';
    engineStatus.textContent = `${r.stop_reason === 'cancelled' ? 'Stopped' : 'Done'} · ${r.tokens.length} tokens${tps}`;
  } catch (e) {
    showError(e);
  } finally {
    running = null;
    setBusy(false);
  }
  if (reply.content) conv.messages.push(reply);
  conv.updated = Date.now();
  await saveConversations();
  if (conv === current) render();
}

async function send(text: string) {
  if (!current.messages.length) current.title = text.slice(0, 60);
  if (usePage.checked && !current.page) {
    try {
      current.page = await ask<PageText>({ type: 'page/text', tabId: boundTab });
    } catch (e) {
      showError(e);
      return;
    }
  }
  current.messages.push({ role: 'user', content: text });
  render();
  await stream(chatTask());
}

function chatTask(): Task {
  return { kind: 'chat', messages: current.messages.filter((m) => m.role !== 'system'), page: usePage.checked ? current.page : undefined, options: generateOptions() };
}

async function regenerate() {
  if (running) return;
  const last = current.messages.at(-1);
  if (last?.role !== 'assistant') return;
  current.messages.pop();
  render();
  if (current.quote !== undefined && current.messages.length === 1) {
    await stream({ kind: 'summarize', text: current.quote, summary: summarizeOptions(), options: generateOptions() });
  } else {
    await stream(chatTask());
  }
}

async function summarize(text: string, title: string) {
  current = newConversation();
  current.title = `Summary: ${title || text.slice(0, 40)}`;
  current.quote = text;
  const o = summarizeOptions();
  current.messages.push({ role: 'user', content: `Summarize the selection (${o.type}, ${o.length}).` });
  render();
  await stream({ kind: 'summarize', text, summary: o, options: generateOptions() });
}

async function takePendingSummary() {
  const { pendingSummary } = (await chrome.storage.session.get('pendingSummary')) as { pendingSummary?: PendingSummary };
  if (!pendingSummary || running) return;
  await chrome.storage.session.remove('pendingSummary');
  await summarize(pendingSummary.text, pendingSummary.title);
}

// Models view.
function fmtBytes(b: number) {
  return b >= 1e9 ? `${(b / 1e9).toFixed(2)} GB` : `${(b / 1e6).toFixed(1)} MB`;
}

function renderModels(s: ModelsState) {
  $<HTMLElement>('storage').textContent = `Storage: ${fmtBytes(s.storage.usage)} used of ${fmtBytes(s.storage.quota)}${s.storage.persisted ? ' (persistent)' : ''}` +
    (s.engine ? ` · engine: ${s.engine.adapter}, ${s.engine.contextSize}-token context` : '');
  const list = $<HTMLUListElement>('model-list');
  list.replaceChildren();
  for (const m of s.models) {
    const li = document.createElement('li');
    li.dataset.model = m.id;
    const name = document.createElement('div');
    name.className = 'model-name';
    name.textContent = `${m.name}${m.id === s.active ? ' ✓' : ''}`;
    const meta = document.createElement('div');
    meta.className = 'model-meta';
    meta.textContent = `${m.family} · ${m.quant}${m.size ? ` · ~${fmtBytes(m.size)}` : ''}`;
    const actions = document.createElement('div');
    actions.className = 'model-actions';
    const st = m.status;
    const status = document.createElement('div');
    status.className = 'model-meta status';
    if (st.state === 'downloading') {
      const bar = document.createElement('progress');
      bar.max = st.total;
      bar.value = st.bytes;
      status.textContent = `${fmtBytes(st.bytes)} of ${fmtBytes(st.total)} · ${fmtBytes(st.rate)}/s · ${Math.ceil(st.etaSeconds)} s left`;
      li.append(name, meta, bar, status);
      actions.append(button('Pause', () => void ask({ type: 'models/cancel', modelId: m.id }), 'pause'));
    } else {
      if (st.state === 'installed') {
        status.textContent = m.packed ? 'Built in' : `Downloaded · ${fmtBytes(st.bytes)}`;
        if (m.id !== s.active) actions.append(button('Use', () => void modelAction({ type: 'models/select', modelId: m.id }), 'use'));
      } else if (st.state === 'partial') {
        status.textContent = `Paused at ${fmtBytes(st.bytes)} of ${fmtBytes(st.total)}`;
        actions.append(button('Resume', () => void modelAction({ type: 'models/download', modelId: m.id }), 'download'));
      } else {
        if (st.state === 'failed') {
          status.textContent = st.error.message;
          status.classList.add('error');
        }
        actions.append(button('Download', () => void modelAction({ type: 'models/download', modelId: m.id }), 'download'));
      }
      if (!m.packed && st.state !== 'absent') actions.append(button('Delete', () => void modelAction({ type: 'models/delete', modelId: m.id }), 'delete'));
      li.append(name, meta, status);
    }
    li.append(actions);
    list.append(li);
  }
}

async function modelAction(req: Parameters<typeof ask>[0]) {
  try {
    renderModels(await ask<ModelsState>(req));
  } catch (e) {
    showError(e);
  }
}

function toggle(buttonId: string, sectionId: string) {
  const b = $<HTMLButtonElement>(buttonId);
  b.onclick = async () => {
    const sec = $<HTMLElement>(sectionId);
    sec.hidden = !sec.hidden;
    b.setAttribute('aria-expanded', String(!sec.hidden));
    if (sectionId === 'models' && !sec.hidden) await modelAction({ type: 'models/list' });
  };
}

chrome.runtime.onMessage.addListener((e: HostEvent, sender) => {
  if (!fromExtensionPage(sender)) return;
  if (e.type === 'event/models') renderModels(e.state);
  if (e.type === 'event/engine') {
    engineStatus.classList.toggle('error', e.state === 'failed');
    engineStatus.textContent = e.state === 'loading' ? `Loading the model… ${Math.round((e.progress ?? 0) * 100)}%` : e.state === 'failed' ? `The model failed to load: ${e.error?.message}` : e.state === 'ready' ? 'Model ready.' : '';
  }
});

chrome.storage.session.onChanged.addListener((changes) => {
  if (changes.pendingSummary?.newValue) void takePendingSummary();
});

$<HTMLFormElement>('composer').onsubmit = (ev) => {
  ev.preventDefault();
  if (running) { running.cancel(); return; }
  const text = input.value.trim();
  if (!text) return;
  input.value = '';
  void send(text);
};
input.onkeydown = (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey) {
    ev.preventDefault();
    $<HTMLFormElement>('composer').requestSubmit();
  }
};
$<HTMLButtonElement>('summarize-page').onclick = async () => {
  if (running) return;
  try {
    const page = await ask<PageText>({ type: 'page/text', tabId: boundTab });
    await summarize(page.text, page.title);
  } catch (e) {
    showError(e);
  }
};
$<HTMLButtonElement>('new-chat').onclick = () => {
  if (running) return;
  current = newConversation();
  usePage.checked = false;
  meter.textContent = '';
  render();
};
convSelect.onchange = () => {
  const c = conversations.find((x) => x.id === convSelect.value);
  if (c && !running) {
    current = c;
    usePage.checked = !!c.page;
    render();
  }
};
usePage.onchange = () => {
  // A fresh snapshot of the page is taken with the next message.
  if (usePage.checked) current.page = undefined;
};
$<HTMLFormElement>('add-model').onsubmit = async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target as HTMLFormElement);
  try {
    await ask({ type: 'models/add', url: String(f.get('url')), name: String(f.get('name') ?? ''), sha256: String(f.get('sha256') ?? '') || undefined });
    (ev.target as HTMLFormElement).reset();
    await modelAction({ type: 'models/list' });
  } catch (e) {
    showError(e);
  }
};
const SETTINGS = ['temperature', 'max-tokens', 'top-p', 'summary-type', 'summary-length', 'summary-format'];
for (const id of SETTINGS) {
  $<HTMLInputElement>(id).onchange = () => {
    const settings = Object.fromEntries(SETTINGS.map((k) => [k, $<HTMLInputElement>(k).value]));
    void chrome.storage.local.set({ settings });
  };
}
toggle('show-models', 'models');
toggle('show-settings', 'settings');

await loadConversations();
render();
await takePendingSummary();
