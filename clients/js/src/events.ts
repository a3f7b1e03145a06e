// A small typed pub/sub (the seed's events.ts): on() returns its unsubscribe function, a
// throwing handler never stops the others.

export type Handler<T> = (data: T, frame?: unknown) => void;

export class Emitter<M extends object> {
  private handlers = new Map<keyof M, Set<Handler<never>>>();

  /** Subscribe; returns a function that unsubscribes (safe to call twice). */
  on<K extends keyof M>(event: K, handler: Handler<M[K]>): () => void {
    let set = this.handlers.get(event);
    if (!set) this.handlers.set(event, (set = new Set()));
    set.add(handler as Handler<never>);
    return () => {
      set!.delete(handler as Handler<never>);
    };
  }

  /** Subscribe for one event only. */
  once<K extends keyof M>(event: K, handler: Handler<M[K]>): () => void {
    const off = this.on(event, (data, frame) => {
      off();
      handler(data, frame);
    });
    return off;
  }

  emit<K extends keyof M>(event: K, data: M[K], frame?: unknown): void {
    const set = this.handlers.get(event);
    if (!set || set.size === 0) return;
    for (const handler of [...set]) {
      try {
        (handler as Handler<M[K]>)(data, frame);
      } catch (err) {
        console.error("streamcore: handler failed", event, err);
      }
    }
  }

  listenerCount(event: keyof M): number {
    return this.handlers.get(event)?.size ?? 0;
  }
}
