// Client side of the protocol, for the side panel and content scripts: one-shot requests
// that make sure the engine host exists first, and streaming tasks over a port.
import {
  ClientMessage, GenerationResult, GlossError, HOST_PORT, HostMessage, Request, Task,
  ContextUse, WORKER_REQUESTS, newRequestId, request,
} from './protocol';

/** Sends `req` to whoever serves it, starting the offscreen host if it is needed. */
export async function ask<T>(req: Request): Promise<T> {
  if (!WORKER_REQUESTS.has(req.type)) await request({ type: 'host/ensure' });
  return request<T>(req);
}

export interface TaskHandlers {
  onText?: (text: string) => void;
  onStatus?: (state: 'queued' | 'loading' | 'running', position?: number, context?: ContextUse) => void;
}

/** A running task: `result` settles with the generation or a `GlossError`. */
export interface RunningTask { id: string; result: Promise<GenerationResult>; cancel: () => void }

/**
 * Runs `task` on the engine host, streaming text. If the host dies mid-task (the port
 * drops before `done`), the task fails with code `engine_restarted`, never silence.
 */
export function runTask(task: Task, handlers: TaskHandlers = {}): RunningTask {
  const id = newRequestId();
  let port: chrome.runtime.Port | null = null;
  let settled = false;
  let cancelled = false;
  const result = (async () => {
    await request({ type: 'host/ensure' });
    return new Promise<GenerationResult>((resolve, reject) => {
      let seq = -1;
      port = chrome.runtime.connect({ name: HOST_PORT });
      port.onMessage.addListener((m: HostMessage) => {
        if (m.id !== id || m.seq <= seq) return;
        seq = m.seq;
        if (m.type === 'text') handlers.onText?.(m.text);
        else if (m.type === 'status') handlers.onStatus?.(m.state, m.position, m.context);
        else {
          settled = true;
          port?.disconnect();
          if (m.type === 'done') resolve(m.result);
          else reject(new GlossError(m.error.code, m.error.message));
        }
      });
      port.onDisconnect.addListener(() => {
        if (!settled) {
          settled = true;
          reject(new GlossError('engine_restarted', 'The engine stopped while working on this request (it restarts on the next one). Please try again.'));
        }
      });
      const msg: ClientMessage = { type: 'run', id, task };
      port.postMessage(msg);
      if (cancelled) port.postMessage({ type: 'cancel', id } satisfies ClientMessage);
    });
  })();
  return {
    id,
    result,
    cancel: () => {
      cancelled = true;
      if (port && !settled) port.postMessage({ type: 'cancel', id } satisfies ClientMessage);
    },
  };
}
