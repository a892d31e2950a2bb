// The engine host: one wasm engine, many clients. Requests from all ports wait in one
// fair queue (job_queue.ts), each cancellable while queued or running. The model loads on
// first use and reloads when the user picks another.
import init, { GlossEngine } from 'gloss-wasm';
import { buildMessages, fitSource } from '../shared/prompts';
import { ChatMessage, ContextUse, GenerationResult, GlossError, HostMessage, Task, toErrorInfo } from '../shared/protocol';
import { FairQueue } from './job_queue';

export interface Job {
  id: string;
  client: string;
  task: Task;
  send: (m: HostMessage) => void;
  cancelled: boolean;
  seq: number;
}

const NOT_STARTED = 'Cancelled before it started.';

/** Tokens kept free for the answer when fitting page text into the context. */
function answerReserve(task: Task, context: number) {
  return Math.min(task.options.max_tokens, Math.floor(context / 2));
}

export class EngineHost {
  private engine: GlossEngine | null = null;
  private loadedId: string | null = null;
  private queue = new FairQueue<Job>();
  private running: Job | null = null;
  private wasmReady: Promise<unknown> | null = null;

  constructor(
    private openModel: (id: string) => Promise<Blob>,
    private activeModel: () => string,
    private onEngine: (state: 'loading' | 'ready' | 'failed', extra?: { progress?: number; error?: { code: string; message: string } }) => void,
  ) {}

  info() {
    if (!this.engine || !this.loadedId) return null;
    const i = this.engine.info();
    return { model: this.loadedId, contextSize: i.context as number, adapter: `${i.adapter.name} (${i.adapter.backend})` };
  }

  submit(job: Job) {
    this.queue.push(job);
    this.reportPositions();
    void this.pump();
  }

  cancel(client: string, id: string) {
    if (this.running?.id === id && this.running.client === client) {
      this.running.cancelled = true;
      return;
    }
    const job = this.queue.remove(client, id);
    if (job) {
      emit(job, { type: 'error', error: { code: 'cancelled', message: NOT_STARTED } });
      this.reportPositions();
    }
  }

  /** A client went away: drop its queued jobs and stop its running one. */
  dropClient(client: string) {
    this.queue.dropClient(client);
    if (this.running?.client === client) this.running.cancelled = true;
  }

  private reportPositions() {
    this.queue.waiting().forEach((job, i) => emit(job, { type: 'status', state: 'queued', position: i + 1 }));
  }

  private async pump() {
    if (this.running) return;
    const job = this.queue.next();
    if (!job) return;
    this.running = job;
    this.reportPositions();
    try {
      const result = await this.run(job);
      emit(job, { type: 'done', result });
    } catch (e) {
      emit(job, { type: 'error', error: toErrorInfo(e) });
    } finally {
      this.running = null;
      void this.pump();
    }
  }

  async ensureLoaded(): Promise<GlossEngine> {
    const want = this.activeModel();
    if (this.engine && this.loadedId === want) return this.engine;
    this.engine?.free();
    this.engine = null;
    this.loadedId = null;
    this.wasmReady ??= init({ module_or_path: chrome.runtime.getURL('wasm/gloss_wasm_bg.wasm') });
    await this.wasmReady;
    this.onEngine('loading', { progress: 0 });
    try {
      const blob = await this.openModel(want);
      const engine: GlossEngine = await GlossEngine.load(blob, { context: 2048 }, (read: number, total: number) => this.onEngine('loading', { progress: read / total }));
      this.engine = engine;
      this.loadedId = want;
      this.onEngine('ready');
      return engine;
    } catch (e) {
      this.onEngine('failed', { error: toErrorInfo(e) });
      throw e;
    }
  }

  private async run(job: Job): Promise<GenerationResult> {
    if (job.cancelled) throw new GlossError('cancelled', NOT_STARTED);
    emit(job, { type: 'status', state: 'loading' });
    const engine = await this.ensureLoaded();
    const contextSize = engine.info().context as number;
    const count = (m: ChatMessage[]) => engine.countChatTokens(m);
    const budget = contextSize - answerReserve(job.task, contextSize);
    const fit = fitSource(job.task, count, budget);
    const messages = buildMessages(job.task, fit.source);
    const promptTokens = count(messages);
    if (promptTokens >= contextSize) {
      throw new GlossError('context_full', `The conversation needs ${promptTokens} tokens but the model's context holds ${contextSize}. Start a new conversation.`);
    }
    const bare = count(buildMessages(job.task, ''));
    const context: ContextUse = { promptTokens, contextSize, sourceTokens: promptTokens - bare, truncated: fit.truncated };
    emit(job, { type: 'status', state: 'running', context });
    const options = { ...job.task.options, max_tokens: Math.min(job.task.options.max_tokens, contextSize - promptTokens) };
    return (await engine.chat(messages, options, (text: string) => {
      emit(job, { type: 'text', text });
      return job.cancelled;
    })) as GenerationResult;
  }
}

/** A host message without its routing fields, for each variant of the union. */
type Body<M = HostMessage> = M extends HostMessage ? Omit<M, 'id' | 'seq'> : never;

function emit(job: Job, m: Body) {
  job.seq += 1;
  job.send({ ...m, id: job.id, seq: job.seq } as HostMessage);
}
