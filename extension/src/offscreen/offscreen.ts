// The offscreen document: hosts the wasm engine (WebGPU needs a document) and the model
// store, serves task ports from the side panel and content scripts, and answers model
// requests. Created on demand by the service worker.
import {
  ClientMessage, HOST_PORT, HostEvent, ModelsState, Reply, Request, WORKER_REQUESTS,
  allowedFromContentScript, fromExtensionPage, fromThisExtension, toErrorInfo,
} from '../shared/protocol';
import { EngineHost, Job } from './engine_host';
import { ModelStore } from './model_store';

function broadcast(e: HostEvent) {
  chrome.runtime.sendMessage(e).catch(() => { /* no page is listening */ });
}

let modelsTimer: ReturnType<typeof setTimeout> | null = null;
const store = new ModelStore(() => {
  // Progress arrives per part; coalesce UI updates.
  modelsTimer ??= setTimeout(async () => {
    modelsTimer = null;
    broadcast({ type: 'event/models', state: await modelsState() });
  }, 100);
});
const host = new EngineHost(
  (id) => store.open(id),
  () => store.activeId(),
  (state, extra) => broadcast({ type: 'event/engine', state, model: store.activeId(), ...extra }),
);

function modelsState(): Promise<ModelsState> {
  return store.state(host.info());
}

async function handle(req: Request): Promise<unknown> {
  switch (req.type) {
    case 'models/list': return modelsState();
    case 'models/download':
      // Runs in the background; progress and failure arrive as events.
      store.download(req.modelId).catch(() => {});
      return modelsState();
    case 'models/cancel': store.cancel(req.modelId); return modelsState();
    case 'models/delete': await store.delete(req.modelId); return modelsState();
    case 'models/select': await store.select(req.modelId); return modelsState();
    case 'models/add': return store.add(req.name, req.url, req.sha256);
    default: throw new Error(`unhandled request ${req.type}`);
  }
}

store.init();

chrome.runtime.onMessage.addListener((msg: Request, sender, sendResponse) => {
  if (!msg || typeof msg.type !== 'string' || WORKER_REQUESTS.has(msg.type) || !msg.type.startsWith('models/')) return false;
  // Model management is for the extension's own pages only.
  if (!fromExtensionPage(sender)) {
    sendResponse({ ok: false, error: { code: 'forbidden', message: 'not allowed from this context' } } satisfies Reply);
    return false;
  }
  handle(msg).then((value) => sendResponse({ ok: true, value } satisfies Reply), (e) => sendResponse({ ok: false, error: toErrorInfo(e) } satisfies Reply));
  return true;
});

let clients = 0;
chrome.runtime.onConnect.addListener((port) => {
  if (port.name !== HOST_PORT) return;
  const sender = port.sender;
  if (!sender || !fromThisExtension(sender)) {
    port.disconnect();
    return;
  }
  const fromContent = !fromExtensionPage(sender);
  const client = `client-${++clients}`;
  let open = true;
  port.onDisconnect.addListener(() => {
    open = false;
    host.dropClient(client);
  });
  port.onMessage.addListener((m: ClientMessage) => {
    if (fromContent && !allowedFromContentScript(m)) {
      port.postMessage({ type: 'error', id: m.id, seq: 1, error: { code: 'forbidden', message: 'content scripts may only ask for rewrites' } });
      return;
    }
    if (m.type === 'cancel') {
      host.cancel(client, m.id);
      return;
    }
    const job: Job = { id: m.id, client, task: m.task, cancelled: false, seq: 0, send: (msg) => open && port.postMessage(msg) };
    host.submit(job);
  });
});
