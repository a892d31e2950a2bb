// The one message protocol shared by every context: service worker, offscreen engine host,
// side panel and content scripts. Long work streams over ports (`HOST_PORT`) with request
// ids and sequence numbers; short requests go through chrome.runtime.sendMessage.

export const HOST_PORT = 'gloss-host';

export type Role = 'system' | 'user' | 'assistant';
export interface ChatMessage { role: Role; content: string }

/** Field names match the engine's (`GenerateOptions`, `Sampling`). */
export interface Sampling {
  temperature: number; top_k: number; top_p: number; min_p: number;
  repeat_penalty: number; presence_penalty: number; frequency_penalty: number; seed: number;
}
export interface GenerateOptions { max_tokens: number; sampling?: Partial<Sampling>; stop?: string[] }

/** Like Chrome's Summarizer API. */
export interface SummarizeOptions {
  type: 'tldr' | 'key-points' | 'teaser' | 'headline';
  length: 'short' | 'medium' | 'long';
  format: 'plain-text' | 'markdown';
}
/** Like Chrome's Rewriter API, plus a free instruction. */
export interface RewriteOptions {
  tone: 'as-is' | 'more-formal' | 'more-casual';
  length: 'as-is' | 'shorter' | 'longer';
  format: 'as-is' | 'plain-text' | 'markdown';
  instruction?: string;
}

export interface PageText { title: string; url: string; text: string }

/** A selection to summarize, left in session storage by the context menu for the side panel. */
export interface PendingSummary { text: string; title: string; url: string; at: number }

export type Task =
  | { kind: 'chat'; messages: ChatMessage[]; page?: PageText; options: GenerateOptions }
  | { kind: 'summarize'; text: string; summary: SummarizeOptions; options: GenerateOptions }
  | { kind: 'rewrite'; text: string; rewrite: RewriteOptions; options: GenerateOptions };

/** How a task's prompt fits the context window (shown to the user). */
export interface ContextUse {
  promptTokens: number;
  contextSize: number;
  /** Tokens of page/selection text that made it in, and whether some was cut. */
  sourceTokens: number;
  truncated: boolean;
}

export interface GenerationResult {
  text: string;
  stop_reason: 'end_of_text' | 'max_tokens' | 'stop_string' | 'cancelled' | 'context_full';
  prompt_tokens: number;
  reused_tokens: number;
  tokens: number[];
  prefill_ms: number;
  decode_ms: number;
  /** Per sampling step: CPU time to encode and submit it, and time waiting for its token. */
  step_encode_ms: number;
  step_wait_ms: number;
}

export interface ErrorInfo { code: string; message: string }

// Port messages, client -> host.
export type ClientMessage =
  | { type: 'run'; id: string; task: Task }
  | { type: 'cancel'; id: string };

// Port messages, host -> client. `seq` orders a request's messages.
export type HostMessage =
  | { type: 'status'; id: string; seq: number; state: 'queued' | 'loading' | 'running'; position?: number; context?: ContextUse }
  | { type: 'text'; id: string; seq: number; text: string }
  | { type: 'done'; id: string; seq: number; result: GenerationResult }
  | { type: 'error'; id: string; seq: number; error: ErrorInfo };

// Models.
export interface ModelEntry {
  id: string;
  name: string;
  url: string;
  family: string;
  quant: string;
  /** Approximate bytes, shown before download (0: unknown); the server's size counts. */
  size: number;
  sha256?: string;
  /** Packed into the extension: always installed, never downloaded. */
  packed?: boolean;
  custom?: boolean;
}
export type ModelStatus =
  | { state: 'absent' }
  | { state: 'partial'; bytes: number; total: number }
  | { state: 'downloading'; bytes: number; total: number; rate: number; etaSeconds: number }
  | { state: 'installed'; bytes: number }
  | { state: 'failed'; bytes: number; total: number; error: ErrorInfo };
export interface ModelsState {
  models: (ModelEntry & { status: ModelStatus })[];
  active: string;
  storage: { usage: number; quota: number; persisted: boolean };
  engine?: { model: string; contextSize: number; adapter: string } | null;
}

// One-shot requests (chrome.runtime.sendMessage), each answered with `Reply<T>`.
export type Request =
  | { type: 'host/ensure' }
  | { type: 'page/text'; tabId?: number }
  | { type: 'models/list' }
  | { type: 'models/download'; modelId: string }
  | { type: 'models/cancel'; modelId: string }
  | { type: 'models/delete'; modelId: string }
  | { type: 'models/select'; modelId: string }
  | { type: 'models/add'; name: string; url: string; sha256?: string }
  | { type: 'rewrite/open'; tabId: number; frameId: number };
export type Reply<T = unknown> = { ok: true; value: T } | { ok: false; error: ErrorInfo };

/** Broadcasts from the host to every open extension page. */
export type HostEvent =
  | { type: 'event/models'; state: ModelsState }
  | { type: 'event/engine'; state: 'idle' | 'loading' | 'ready' | 'failed'; model?: string; progress?: number; error?: ErrorInfo };

/** Requests only the service worker answers; the rest go to the offscreen host. */
export const WORKER_REQUESTS = new Set<Request['type']>(['host/ensure', 'page/text', 'rewrite/open']);

/** What a content script may ask for: rewriting its own field, nothing else. */
export function allowedFromContentScript(m: ClientMessage): boolean {
  return m.type === 'cancel' || (m.type === 'run' && m.task.kind === 'rewrite');
}

/** True if `sender` is this extension itself (its pages, worker or content scripts). */
export function fromThisExtension(sender: chrome.runtime.MessageSender): boolean {
  return sender.id === chrome.runtime.id;
}

/**
 * True if `sender` is one of this extension's own pages (side panel, offscreen document),
 * not a content script: content scripts share the id but report the web page's URL.
 */
export function fromExtensionPage(sender: chrome.runtime.MessageSender): boolean {
  return fromThisExtension(sender) && (sender.url ?? '').startsWith(`chrome-extension://${chrome.runtime.id}/`);
}

export class GlossError extends Error {
  constructor(public code: string, message: string) {
    super(message);
    this.name = 'GlossError';
  }
}

export function toErrorInfo(e: unknown): ErrorInfo {
  if (e && typeof e === 'object' && 'message' in e) {
    const code = 'code' in e && typeof e.code === 'string' ? e.code : 'internal';
    return { code, message: String(e.message) };
  }
  return { code: 'internal', message: String(e) };
}

/** Sends a one-shot request; throws `GlossError` for an error reply or no reply. */
export async function request<T>(req: Request): Promise<T> {
  const reply = (await chrome.runtime.sendMessage(req)) as Reply<T> | undefined;
  if (!reply) throw new GlossError('no_reply', `nothing answered ${req.type}`);
  if (!reply.ok) throw new GlossError(reply.error.code, reply.error.message);
  return reply.value;
}

let counter = 0;
export function newRequestId(): string {
  counter += 1;
  return `${Date.now().toString(36)}-${counter}-${Math.random().toString(36).slice(2, 8)}`;
}
