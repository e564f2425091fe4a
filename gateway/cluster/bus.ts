/**
 * Node-to-node messages over Redis pub/sub ([cluster.md](../../docs/cluster.md)): requests to
 * one node (with a reply, or a timeout), and broadcasts to all. Pub/sub keeps no message for a
 * node that is not listening, so nothing here is relied on for durability: a request that gets
 * no reply fails (and its caller fails or retries), and what must not be lost goes through the
 * store first. The bus subscribes again after each reconnect.
 */
import type { Redis } from "ioredis";

/** One message on the bus. */
interface Envelope {
  /** Request kind, or broadcast kind. */
  k: string;
  /** The sending node. */
  f: string;
  /** Request id (requests and replies). */
  i?: number;
  /** Reply: true when this is a reply to request `i`. */
  r?: boolean;
  /** Reply: the handler failed with this message. */
  e?: string;
  b?: unknown;
}

export type RequestHandler = (body: unknown, from: string) => Promise<unknown>;
export type BroadcastHandler = (body: unknown, from: string) => void;

/** A request that got no reply in time: the node may be dead or cut off. */
export class BusTimeoutError extends Error {
  constructor(node: string, kind: string, ms: number) {
    super(`node ${node} did not answer '${kind}' within ${ms} ms`);
    this.name = "BusTimeoutError";
  }
}

export class Bus {
  readonly #pub: Redis;
  readonly #sub: Redis;
  readonly #prefix: string;
  readonly #nodeId: string;
  readonly #timeoutMs: number;
  readonly #handlers = new Map<string, RequestHandler>();
  readonly #broadcastHandlers = new Map<string, BroadcastHandler>();
  readonly #waiting = new Map<
    number,
    {
      resolve: (v: unknown) => void;
      reject: (e: Error) => void;
      timer: ReturnType<typeof setTimeout>;
    }
  >();
  #nextId = 1;
  #closed = false;

  private constructor(pub: Redis, sub: Redis, prefix: string, nodeId: string, timeoutMs: number) {
    this.#pub = pub;
    this.#sub = sub;
    this.#prefix = prefix;
    this.#nodeId = nodeId;
    this.#timeoutMs = timeoutMs;
  }

  /** Subscribes `sub` (a connection of its own) to this node's channel and the broadcasts. */
  static async start(
    pub: Redis,
    sub: Redis,
    options: { prefix: string; nodeId: string; timeoutMs: number },
  ): Promise<Bus> {
    const bus = new Bus(pub, sub, options.prefix, options.nodeId, options.timeoutMs);
    const channels = [bus.#channel(options.nodeId), bus.#channel("*all")];
    sub.on("message", (_channel: string, text: string) => bus.#receive(text));
    // After each reconnect (`sub` has autoResubscribe off): a failure here means the connection
    // dropped again, and the next reconnect subscribes again.
    sub.on("ready", () => {
      if (!bus.#closed) sub.subscribe(...channels).catch(() => {});
    });
    await sub.subscribe(...channels);
    return bus;
  }

  /** Handles requests of one kind. */
  handle(kind: string, handler: RequestHandler): void {
    this.#handlers.set(kind, handler);
  }

  /** Handles one-way messages of one kind: broadcasts, and `tell`s to this node. */
  on(kind: string, handler: BroadcastHandler): void {
    this.#broadcastHandlers.set(kind, handler);
  }

  /**
   * Called when this node's subscription connection drops: messages published to it meanwhile
   * are lost (pub/sub keeps nothing), so whoever relies on their order must start over.
   */
  onSubscriptionLost(handler: () => void): void {
    this.#sub.on("close", () => {
      if (!this.#closed) handler();
    });
  }

  /** Sends a request to a node; resolves with its reply, rejects on its error or a timeout. */
  request(
    node: string,
    kind: string,
    body: unknown,
    timeoutMs = this.#timeoutMs,
  ): Promise<unknown> {
    if (this.#closed) return Promise.reject(new Error("the cluster bus is closed"));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        reject(new BusTimeoutError(node, kind, timeoutMs));
      }, timeoutMs);
      this.#waiting.set(id, { resolve, reject, timer });
      this.#publish(node, { k: kind, f: this.#nodeId, i: id, b: body }).catch((error) => {
        clearTimeout(timer);
        this.#waiting.delete(id);
        reject(error instanceof Error ? error : new Error(String(error)));
      });
    });
  }

  /** Tells one node (no reply; lost when it is not listening). */
  async tell(node: string, kind: string, body: unknown): Promise<void> {
    if (this.#closed) throw new Error("the cluster bus is closed");
    await this.#publish(node, { k: kind, f: this.#nodeId, b: body });
  }

  /** Tells every other node (no reply; lost for a node not listening). */
  async broadcast(kind: string, body: unknown): Promise<void> {
    if (this.#closed) return;
    await this.#publish("*all", { k: kind, f: this.#nodeId, b: body });
  }

  close(): void {
    this.#closed = true;
    for (const { reject, timer } of this.#waiting.values()) {
      clearTimeout(timer);
      reject(new Error("the cluster bus is closed"));
    }
    this.#waiting.clear();
  }

  #channel(node: string): string {
    return `${this.#prefix}bus:${node}`;
  }

  async #publish(node: string, envelope: Envelope): Promise<void> {
    await this.#pub.publish(this.#channel(node), JSON.stringify(envelope));
  }

  #receive(text: string): void {
    let envelope: Envelope;
    try {
      envelope = JSON.parse(text);
    } catch {
      return;
    }
    if (envelope.r === true) {
      const waiting = this.#waiting.get(envelope.i ?? -1);
      if (waiting === undefined) return;
      this.#waiting.delete(envelope.i!);
      clearTimeout(waiting.timer);
      if (envelope.e !== undefined) waiting.reject(new Error(envelope.e));
      else waiting.resolve(envelope.b);
      return;
    }
    if (envelope.i === undefined) {
      if (envelope.f === this.#nodeId) return;
      this.#broadcastHandlers.get(envelope.k)?.(envelope.b, envelope.f);
      return;
    }
    const handler = this.#handlers.get(envelope.k);
    const reply = (fields: Partial<Envelope>) =>
      this.#publish(envelope.f, {
        k: envelope.k,
        f: this.#nodeId,
        i: envelope.i,
        r: true,
        ...fields,
      })
        .catch(() => {/* the asker times out */});
    if (handler === undefined) {
      void reply({ e: `no handler for '${envelope.k}'` });
      return;
    }
    handler(envelope.b, envelope.f).then(
      (body) => reply({ b: body }),
      (error) => reply({ e: error instanceof Error ? error.message : String(error) }),
    );
  }
}
