// Fair scheduling for the one engine: round-robin across clients (side panels, content
// scripts), first-in first-out within each, so one busy client cannot starve the others.

export interface Queued { id: string; client: string }

export class FairQueue<J extends Queued> {
  private queues = new Map<string, J[]>();
  /** Clients with waiting jobs, the next to be served first. */
  private order: string[] = [];

  push(job: J) {
    const q = this.queues.get(job.client);
    if (q) q.push(job);
    else {
      this.queues.set(job.client, [job]);
      this.order.push(job.client);
    }
  }

  /** Takes a waiting job out (cancelled before it started). */
  remove(client: string, id: string): J | null {
    const q = this.queues.get(client);
    const i = q?.findIndex((j) => j.id === id) ?? -1;
    if (!q || i < 0) return null;
    const [job] = q.splice(i, 1);
    if (!q.length) this.forget(client);
    return job;
  }

  /** Forgets every waiting job of a client that went away. */
  dropClient(client: string): J[] {
    const jobs = this.queues.get(client) ?? [];
    this.forget(client);
    return jobs;
  }

  /** The next job to run: the head of the next client's queue in turn. */
  next(): J | null {
    const client = this.order.shift();
    if (client === undefined) return null;
    const q = this.queues.get(client)!;
    const job = q.shift()!;
    if (q.length) this.order.push(client);
    else this.queues.delete(client);
    return job;
  }

  /** Waiting jobs in the order they will run. */
  waiting(): J[] {
    const lists = this.order.map((c) => this.queues.get(c)!);
    const out: J[] = [];
    for (let i = 0; lists.some((l) => i < l.length); i++) for (const l of lists) if (i < l.length) out.push(l[i]);
    return out;
  }

  private forget(client: string) {
    this.queues.delete(client);
    this.order = this.order.filter((c) => c !== client);
  }
}
