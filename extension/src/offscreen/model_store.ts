// Model files in Cache Storage. A download is a series of HTTP Range requests, each part
// stored as its own cache entry as soon as it arrives, so a download resumes where it
// stopped, even after a browser restart. A finished model is a Blob assembled from its
// parts (disk-backed: the engine reads it slice by slice, never whole in memory).
import { CATALOG, PACKED_MODEL } from '../shared/catalog';
import { ErrorInfo, GlossError, ModelEntry, ModelStatus, ModelsState, toErrorInfo } from '../shared/protocol';
import { Sha256 } from './sha256';

const CACHE = 'gloss-models';
export const PART_BYTES = 8 << 20;
/** Cache keys must be URLs; this host never resolves and is never fetched. */
const KEY_ROOT = 'https://gloss-cache.invalid/';

interface Manifest { url: string; total: number; sha256?: string; complete: boolean }

/** Every cache key of a model starts with this. */
const keyPrefix = (id: string) => `${KEY_ROOT}${encodeURIComponent(id)}/`;
const PART = 'part-';
const partKey = (id: string, n: number) => `${keyPrefix(id)}${PART}${n}`;
const manifestKey = (id: string) => `${keyPrefix(id)}manifest`;

async function readManifest(cache: Cache, id: string): Promise<Manifest | null> {
  const r = await cache.match(manifestKey(id));
  return r ? ((await r.json()) as Manifest) : null;
}
async function writeManifest(cache: Cache, id: string, m: Manifest) {
  await cache.put(manifestKey(id), new Response(JSON.stringify(m), { headers: { 'Content-Type': 'application/json' } }));
}

function partCount(total: number) {
  return Math.ceil(total / PART_BYTES);
}

/** Indices of the parts of `id` already stored (one listing, however large the model). */
async function storedParts(cache: Cache, id: string): Promise<Set<number>> {
  const prefix = keyPrefix(id) + PART;
  const parts = new Set<number>();
  for (const req of await cache.keys()) if (req.url.startsWith(prefix)) parts.add(Number(req.url.slice(prefix.length)));
  return parts;
}

function bytesOf(parts: Set<number>, total: number): number {
  let bytes = 0;
  for (const n of parts) bytes += Math.max(0, Math.min(PART_BYTES, total - n * PART_BYTES));
  return bytes;
}

function quotaError(needed: number, usage: number, quota: number): GlossError {
  const gb = (b: number) => `${(b / 1e9).toFixed(2)} GB`;
  return new GlossError('quota', `Not enough storage for this model: it needs ${gb(needed)} more, but only ${gb(Math.max(0, quota - usage))} of the browser's ${gb(quota)} quota is free. Free some space or delete a model.`);
}

function isQuotaError(e: unknown) {
  return e instanceof DOMException && e.name === 'QuotaExceededError';
}

/** Total size from a `Content-Range: bytes a-b/TOTAL` header. */
function totalFromRange(r: Response): number {
  const m = /\/(\d+)$/.exec(r.headers.get('Content-Range') ?? '');
  if (m) return Number(m[1]);
  const len = Number(r.headers.get('Content-Length'));
  if (r.status === 200 && len > 0) return len;
  throw new GlossError('download', 'The server did not say how large the file is (no Content-Range).');
}

export interface Progress { bytes: number; total: number; rate: number; etaSeconds: number }

export class ModelStore {
  private custom: ModelEntry[] = [];
  private active = PACKED_MODEL.id;
  private downloads = new Map<string, { controller: AbortController; progress: Progress }>();
  private failures = new Map<string, ErrorInfo & { bytes: number; total: number }>();

  constructor(private onChange: () => void) {}

  /** Offscreen documents have no chrome.storage; the store keeps its settings in localStorage. */
  init() {
    this.custom = JSON.parse(localStorage.getItem('customModels') ?? '[]') as ModelEntry[];
    this.active = localStorage.getItem('activeModel') ?? PACKED_MODEL.id;
    if (!this.entries().some((m) => m.id === this.active)) this.active = PACKED_MODEL.id;
  }

  private saveSettings() {
    localStorage.setItem('customModels', JSON.stringify(this.custom));
    localStorage.setItem('activeModel', this.active);
  }

  entries(): ModelEntry[] {
    return [...CATALOG, ...this.custom];
  }

  entry(id: string): ModelEntry {
    const e = this.entries().find((m) => m.id === id);
    if (!e) throw new GlossError('unknown_model', `No model with id ${id}`);
    return e;
  }

  activeId() {
    return this.active;
  }

  async status(m: ModelEntry, cache: Cache): Promise<ModelStatus> {
    if (m.packed) return { state: 'installed', bytes: 0 };
    const d = this.downloads.get(m.id);
    if (d) return { state: 'downloading', ...d.progress };
    const f = this.failures.get(m.id);
    if (f) return { state: 'failed', bytes: f.bytes, total: f.total, error: { code: f.code, message: f.message } };
    const man = await readManifest(cache, m.id);
    if (!man) return { state: 'absent' };
    if (man.complete) return { state: 'installed', bytes: man.total };
    return { state: 'partial', bytes: bytesOf(await storedParts(cache, m.id), man.total), total: man.total };
  }

  async state(engine: ModelsState['engine']): Promise<ModelsState> {
    const cache = await caches.open(CACHE);
    const models = await Promise.all(this.entries().map(async (m) => ({ ...m, status: await this.status(m, cache) })));
    const est = await navigator.storage.estimate();
    return { models, active: this.active, storage: { usage: est.usage ?? 0, quota: est.quota ?? 0, persisted: await navigator.storage.persisted() }, engine };
  }

  async select(id: string) {
    const m = this.entry(id);
    if (!m.packed) {
      const man = await readManifest(await caches.open(CACHE), id);
      if (!man?.complete) throw new GlossError('not_installed', `${m.name} is not downloaded yet.`);
    }
    this.active = id;
    this.saveSettings();
  }

  async add(name: string, url: string, sha256?: string): Promise<ModelEntry> {
    let parsed: URL;
    try { parsed = new URL(url); } catch { throw new GlossError('invalid_argument', `Not a URL: ${url}`); }
    if (!/^https?:$/.test(parsed.protocol)) throw new GlossError('invalid_argument', 'Only http(s) model URLs can be downloaded.');
    if (sha256 && !/^[0-9a-f]{64}$/i.test(sha256)) throw new GlossError('invalid_argument', 'sha256 must be 64 hex digits.');
    const entry: ModelEntry = { id: `custom-${Date.now().toString(36)}`, name: name.trim() || parsed.pathname.split('/').pop() || url, url, family: 'from file', quant: 'from file', size: 0, sha256: sha256?.toLowerCase(), custom: true };
    this.custom.push(entry);
    this.saveSettings();
    return entry;
  }

  async delete(id: string) {
    const m = this.entry(id);
    if (m.packed) throw new GlossError('invalid_argument', 'The built-in model cannot be deleted.');
    this.downloads.get(id)?.controller.abort();
    await this.removeData(id);
    this.failures.delete(id);
    if (m.custom) {
      this.custom = this.custom.filter((c) => c.id !== id);
      this.saveSettings();
    }
    if (this.active === id) await this.select(PACKED_MODEL.id);
  }

  private async removeData(id: string) {
    const cache = await caches.open(CACHE);
    const prefix = keyPrefix(id);
    for (const req of await cache.keys()) if (req.url.startsWith(prefix)) await cache.delete(req);
  }

  cancel(id: string) {
    this.downloads.get(id)?.controller.abort();
  }

  /** Downloads (or resumes) `id`; progress goes through `onChange`. */
  async download(id: string): Promise<void> {
    const m = this.entry(id);
    if (m.packed || this.downloads.has(id)) return;
    const controller = new AbortController();
    const progress: Progress = { bytes: 0, total: m.size, rate: 0, etaSeconds: 0 };
    this.downloads.set(id, { controller, progress });
    this.failures.delete(id);
    this.onChange();
    try {
      await this.fetchParts(m, controller.signal, progress);
    } catch (e) {
      const info = controller.signal.aborted ? { code: 'cancelled', message: 'Download paused; it resumes from here.' } : toErrorInfo(e);
      // Data that can never complete is removed; an interrupted download keeps its parts.
      const discarded = info.code === 'quota' || info.code === 'corrupt_download';
      if (discarded) await this.removeData(id);
      if (info.code !== 'cancelled') this.failures.set(id, { ...info, bytes: discarded ? 0 : progress.bytes, total: progress.total });
      throw new GlossError(info.code, info.message);
    } finally {
      this.downloads.delete(id);
      this.onChange();
    }
  }

  private async fetchParts(m: ModelEntry, signal: AbortSignal, progress: Progress) {
    const cache = await caches.open(CACHE);
    let man = await readManifest(cache, m.id);
    if (man?.complete) return;
    if (!man || man.url !== m.url) {
      // Ask for the first byte to learn the size before committing any storage.
      const probe = await fetchOk(m.url, 'bytes=0-0', signal);
      await probe.body?.cancel();
      man = { url: m.url, total: totalFromRange(probe), sha256: m.sha256, complete: false };
    }
    const stored = await storedParts(cache, m.id);
    const have = bytesOf(stored, man.total);
    const est = await navigator.storage.estimate();
    const needed = man.total - have;
    if ((est.quota ?? 0) - (est.usage ?? 0) < needed) throw quotaError(needed, est.usage ?? 0, est.quota ?? 0);
    await navigator.storage.persist();
    await writeManifest(cache, m.id, man);
    progress.total = man.total;
    progress.bytes = have;
    const t0 = performance.now();
    let fetched = 0;
    for (let n = 0; n < partCount(man.total); n++) {
      if (stored.has(n)) continue;
      const start = n * PART_BYTES;
      const end = Math.min(man.total, start + PART_BYTES) - 1;
      const r = await fetchOk(m.url, `bytes=${start}-${end}`, signal);
      if (r.status !== 206) throw new GlossError('download', `The server ignored the Range request (HTTP ${r.status}); it cannot be downloaded in parts.`);
      let body: Uint8Array<ArrayBuffer>;
      try {
        body = new Uint8Array(await r.arrayBuffer());
      } catch (e) {
        if (signal.aborted) throw e;
        throw new GlossError('download', `The download was interrupted in part ${n} (${(e as Error).message}). Download again to resume.`);
      }
      if (body.length !== end - start + 1) throw new GlossError('download', `Part ${n} arrived with ${body.length} of ${end - start + 1} bytes; the connection was cut. Download again to resume.`);
      try {
        await cache.put(partKey(m.id, n), new Response(body));
      } catch (e) {
        if (isQuotaError(e)) {
          const now = await navigator.storage.estimate();
          throw quotaError(man.total - progress.bytes, now.usage ?? 0, now.quota ?? 0);
        }
        throw e;
      }
      progress.bytes += body.length;
      fetched += body.length;
      progress.rate = fetched / ((performance.now() - t0) / 1000);
      progress.etaSeconds = progress.rate > 0 ? (progress.total - progress.bytes) / progress.rate : 0;
      this.onChange();
    }
    await this.verify(cache, m, man);
    man.complete = true;
    await writeManifest(cache, m.id, man);
  }

  private async verify(cache: Cache, m: ModelEntry, man: Manifest) {
    const blob = await this.assemble(cache, m.id, man.total);
    if (blob.size !== man.total) throw new GlossError('corrupt_download', `The download has ${blob.size} bytes, expected ${man.total}.`);
    const magic = new Uint8Array(await blob.slice(0, 4).arrayBuffer());
    if (String.fromCharCode(...magic) !== 'GGUF') throw new GlossError('corrupt_download', 'The downloaded file is not a GGUF model (bad magic bytes); it was removed.');
    if (!man.sha256) return;
    const h = new Sha256();
    for (let off = 0; off < blob.size; off += PART_BYTES) h.update(new Uint8Array(await blob.slice(off, off + PART_BYTES).arrayBuffer()));
    const got = h.hex();
    if (got !== man.sha256) throw new GlossError('corrupt_download', `The download is corrupt: its sha256 is ${got}, expected ${man.sha256}. It was removed; download it again.`);
  }

  private async assemble(cache: Cache, id: string, total: number): Promise<Blob> {
    const parts: Blob[] = [];
    for (let n = 0; n < partCount(total); n++) {
      const r = await cache.match(partKey(id, n));
      if (!r) throw new GlossError('not_installed', `Part ${n} of the model is missing; download it again.`);
      parts.push(await r.blob());
    }
    return new Blob(parts);
  }

  /** The model's bytes: packed in the extension, or assembled from Cache Storage. */
  async open(id: string): Promise<Blob> {
    const m = this.entry(id);
    if (m.packed) {
      const r = await fetch(chrome.runtime.getURL(m.url));
      if (!r.ok) throw new GlossError('not_installed', `The built-in model is missing from the extension (${r.status}).`);
      return r.blob();
    }
    const cache = await caches.open(CACHE);
    const man = await readManifest(cache, id);
    if (!man?.complete) throw new GlossError('not_installed', `${m.name} is not downloaded yet.`);
    return this.assemble(cache, id, man.total);
  }
}

async function fetchOk(url: string, range: string, signal: AbortSignal): Promise<Response> {
  let r: Response;
  try {
    // No credentials, no cache: a model download is the only traffic Gloss makes.
    r = await fetch(url, { headers: { Range: range }, signal, credentials: 'omit', cache: 'no-store' });
  } catch (e) {
    if (signal.aborted) throw e;
    throw new GlossError('download', `The download was interrupted (${(e as Error).message}). Download again to resume.`);
  }
  if (!r.ok) throw new GlossError('download', `The server answered HTTP ${r.status} for ${url}.`);
  return r;
}
