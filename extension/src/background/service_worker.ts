// The service worker: starts the offscreen engine host on demand, owns the context menus
// and keyboard commands, and reads page text (on demand only, via chrome.scripting).
import { PageText, PendingSummary, Reply, Request, WORKER_REQUESTS, fromExtensionPage, fromThisExtension, toErrorInfo, GlossError } from '../shared/protocol';

const OFFSCREEN_URL = 'offscreen/offscreen.html';
export const MENU_SUMMARIZE = 'gloss-summarize';
export const MENU_REWRITE = 'gloss-rewrite';

let creating: Promise<void> | null = null;

/** Makes sure the offscreen document exists (it is recreated if it died or was closed). */
async function ensureHost(): Promise<void> {
  const contexts = await chrome.runtime.getContexts({ contextTypes: [chrome.runtime.ContextType.OFFSCREEN_DOCUMENT] });
  if (contexts.length > 0) return;
  creating ??= chrome.offscreen
    .createDocument({
      url: OFFSCREEN_URL,
      reasons: [chrome.offscreen.Reason.WORKERS],
      justification: 'Runs the on-device language model (WebAssembly + WebGPU) and stores model files.',
    })
    .finally(() => { creating = null; });
  await creating;
}

async function activeTab(): Promise<chrome.tabs.Tab> {
  const [tab] = await chrome.tabs.query({ active: true, lastFocusedWindow: true });
  if (!tab?.id) throw new GlossError('no_tab', 'There is no active tab to read.');
  return tab;
}

/** The readable text of a tab, extracted in the page by content/page_text.js. */
async function pageText(tabId?: number): Promise<PageText> {
  const tab = tabId ? await chrome.tabs.get(tabId) : await activeTab();
  const target = { tabId: tab.id! };
  try {
    await chrome.scripting.executeScript({ target, files: ['content/page_text.js'] });
    const [res] = await chrome.scripting.executeScript({ target, func: () => (globalThis as unknown as { glossExtractPage: () => unknown }).glossExtractPage() });
    const page = res?.result as PageText | undefined;
    if (!page || !page.text.trim()) throw new GlossError('no_text', 'This page has no readable text.');
    return page;
  } catch (e) {
    if (e instanceof GlossError) throw e;
    throw new GlossError('page_unreadable', `Gloss cannot read this page (${(e as Error).message}). Browser pages and the Web Store are off limits to extensions.`);
  }
}

async function openRewrite(tabId: number, frameId: number) {
  await chrome.scripting.executeScript({ target: { tabId, frameIds: [frameId] }, files: ['content/rewrite.js'] });
}

/** Context-menu clicks (also the test suite's way in, since headless menus cannot be clicked). */
export async function onMenuClick(info: chrome.contextMenus.OnClickData, tab?: chrome.tabs.Tab) {
  if (!tab?.id) return;
  if (info.menuItemId === MENU_SUMMARIZE && info.selectionText) {
    // open() must run inside the user gesture, before any await.
    const opened = chrome.sidePanel.open({ tabId: tab.id }).catch(() => {});
    const pending: PendingSummary = { text: info.selectionText, title: tab.title ?? '', url: tab.url ?? '', at: Date.now() };
    await chrome.storage.session.set({ pendingSummary: pending });
    await opened;
  } else if (info.menuItemId === MENU_REWRITE) {
    await openRewrite(tab.id, info.frameId ?? 0);
  }
}

chrome.runtime.onInstalled.addListener(() => {
  chrome.contextMenus.removeAll(() => {
    chrome.contextMenus.create({ id: MENU_SUMMARIZE, title: 'Summarize selection with Gloss', contexts: ['selection'] });
    chrome.contextMenus.create({ id: MENU_REWRITE, title: 'Rewrite with Gloss', contexts: ['editable'] });
  });
  chrome.sidePanel.setPanelBehavior({ openPanelOnActionClick: true }).catch(() => {});
  // Session storage (pending summaries) is for extension pages only.
  chrome.storage.session.setAccessLevel({ accessLevel: 'TRUSTED_CONTEXTS' }).catch(() => {});
});

chrome.contextMenus.onClicked.addListener((info, tab) => { void onMenuClick(info, tab); });

chrome.commands.onCommand.addListener(async (command, tab) => {
  if (command === 'rewrite-field') {
    const t = tab?.id ? tab : await activeTab();
    await openRewrite(t.id!, 0);
  }
});

async function handle(req: Request): Promise<unknown> {
  switch (req.type) {
    case 'host/ensure': return ensureHost();
    case 'page/text': return pageText(req.tabId);
    case 'rewrite/open': return openRewrite(req.tabId, req.frameId);
    default: throw new Error(`unhandled ${req.type}`);
  }
}

chrome.runtime.onMessage.addListener((msg: Request, sender, sendResponse) => {
  if (!msg || typeof msg.type !== 'string' || !WORKER_REQUESTS.has(msg.type)) return false;
  // Content scripts may start the host (for their rewrite port); all else is for our pages.
  const allowed = msg.type === 'host/ensure' ? fromThisExtension(sender) : fromExtensionPage(sender);
  if (!allowed) {
    sendResponse({ ok: false, error: { code: 'forbidden', message: 'not allowed from this context' } } satisfies Reply);
    return false;
  }
  handle(msg).then(
    (value) => sendResponse({ ok: true, value: value ?? null } satisfies Reply),
    (e) => sendResponse({ ok: false, error: toErrorInfo(e) } satisfies Reply),
  );
  return true;
});

// Debugging and tests reach the menu handler here (headless Chromium cannot click menus).
Object.assign(globalThis, { gloss: { onMenuClick, ensureHost, pageText } });
