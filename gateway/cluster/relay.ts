/**
 * Sockets of a user held by another node ([cluster.md](../../docs/cluster.md#sockets-on-several-nodes)).
 *
 * A user's state lives on one node, its holder. A socket of that user that connects at another
 * node (the user has a socket at the holder already, so it cannot come along) is _relayed_: the
 * node where the socket is (its edge) keeps the WebSocket and passes its frames to the holder
 * over the bus; the holder runs the connection as one of its own, on a `RemoteWire` whose writes
 * go back to the edge. Every rule of the connection (handshake, budget, idle, liveness, output
 * gate, close codes) is the holder's, once; the edge only carries frames.
 *
 * One exception keeps the hot path local: a foreground heartbeat (`ping` with source
 * `heartbeat`) is answered by the edge itself when the holder's last word on the session said it
 * is in foreground with no deadline (a `connected`, `state` or `pong` frame) and nothing but
 * such heartbeats came from the client since. Such a ping changes nothing at the holder but the
 * idle rule's clock, which the edge keeps going with one `l` op per third of IDLE_TIMEOUT_MS.
 * Any other frame makes the edge forget what it knew until the holder answers again, so a ping
 * right after `app_state` goes to the holder, which moves the deadline. At most
 * EDGE_HEARTBEATS_PER_SEC are answered at the edge; beyond, they go to the holder, whose frame
 * budget applies.
 *
 * Frames travel as ops batched per peer node and event-loop turn: one publish carries every
 * frame written to that node's relayed sockets in one turn (a fan-out to a thousand relayed
 * sockets is one message). Redis pub/sub keeps the order of one publisher's messages, so a
 * socket's frames arrive in the order they were written, both ways.
 *
 * Pub/sub does not keep a message for a subscriber that is not listening: when a frame may have
 * been lost (a publish failed, this node's subscription dropped, the peer node died), the relays
 * concerned end — the edge closes its sockets with 1012 (`server_shutdown`) so their clients
 * reconnect, and the holder ends their connections as lost (the session goes offline, as for
 * any lost connection). Nothing is acknowledged through a relay that the holder did not store:
 * acknowledgements are frames the holder writes after its store confirmed.
 */
import { PingFrameSchema, type ServerFrameOf } from "../../contract/mod.ts";
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import { TokenBucket } from "../rate_limit.ts";
import type { TransportRefusedFrame, WireEvents, WireSocket } from "../transport/types.ts";
import type { Bus } from "./bus.ts";

/** One step of a relayed socket, either way. The first element says which. */
type Op =
  /** A text frame from the client (edge → holder). */
  | ["t", string, string]
  /** A text frame to the client (holder → edge). */
  | ["o", string, string]
  /** A binary frame of this many bytes arrived (edge → holder; its content is not needed). */
  | ["b", string, number]
  /** A WebSocket ping control frame arrived (edge → holder). */
  | ["c", string]
  /** Answer the ping (holder → edge). */
  | ["p", string]
  /** The edge's WebSocket layer refused a frame and is closing the socket (edge → holder). */
  | ["r", string, TransportRefusedFrame]
  /** The socket is gone (edge → holder). */
  | ["g", string]
  /** The edge closed the socket: it stopped reading, past the output limit (edge → holder). */
  | ["s", string]
  /** The client's heartbeats were answered at the edge: life, for the idle rule (edge → holder). */
  | ["l", string]
  /** Close the socket: code, reason, last frame (holder → edge). */
  | ["x", string, number, string, string | null];

/** The request to run a relayed socket's connection at its user's holder. */
export interface RelayOpen {
  /** The relay's id, unique in the cluster (it starts with the edge's node id). */
  rid: string;
  /** The socket's credential; absent when its `connect` frame logs in (`first`). */
  credential?: string;
  remoteAddr: string;
  /** A frame the edge received before it relayed (the `connect` frame that logs in). */
  first?: string;
}

/**
 * The holder's answer: `ok` (the connection runs here; relay its frames), or `moved` (the user
 * is no longer held here: the edge refuses with 503 and its client tries again).
 */
export type RelayOpenAnswer = "ok" | "moved";

/** Heartbeats a relayed socket may have answered at its edge per second (burst twice this). */
const EDGE_HEARTBEATS_PER_SEC = 1;

export interface SocketRelaysOptions {
  nodeId: string;
  log: Logger;
  clock: Clock;
  /** IDLE_TIMEOUT_MS: the edge sends life to the holder at least thrice within it. */
  idleTimeoutMs: number;
  /** A heartbeat was answered at the edge (for the ping metrics). */
  heartbeatAnswered?(): void;
  /** The edge's output limit per socket (MAX_BUFFERED_BYTES): past it the socket is closed. */
  maxBufferedBytes: number;
  /**
   * The holder side: runs a connection on `wire` (`wire.open()` once its handlers are set).
   * Throws when it cannot (the edge answers 503).
   */
  accept(open: RelayOpen, wire: RemoteWire): Promise<RelayOpenAnswer>;
  /** The last frame and close code of a socket the edge closes itself. */
  closing(reason: "slow_consumer" | "server_shutdown"): { code: number; text: string };
}

/**
 * The holder's end of a relayed socket: a `WireSocket` whose frames are written by the edge.
 * The edge enforces the output limit against its real socket (`bufferedAmount` is 0 here).
 */
export class RemoteWire implements WireSocket {
  readonly bufferedAmount = 0;
  #events: WireEvents | null = null;
  #closed = false;

  constructor(
    readonly rid: string,
    readonly edge: string,
    private readonly relays: SocketRelays,
  ) {}

  get writable(): boolean {
    return !this.#closed;
  }

  listen(events: WireEvents): void {
    this.#events = events;
  }

  /** The socket is open at the edge (its upgrade is under way): the connection starts. */
  open(): void {
    this.#events?.open();
  }

  send(text: string): void {
    if (!this.#closed) this.relays.queue(this.edge, ["o", this.rid, text]);
  }

  pong(): void {
    if (!this.#closed) this.relays.queue(this.edge, ["p", this.rid]);
  }

  close(code: number, reason: string, lastFrame?: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.relays.forgetRemote(this);
    this.relays.queue(this.edge, ["x", this.rid, code, reason, lastFrame ?? null]);
  }

  /** An op from the edge. */
  deliver(op: Op): void {
    const events = this.#events;
    if (events === null || this.#closed) return;
    switch (op[0]) {
      case "t":
        return events.text(op[2]);
      case "b":
        return events.binary(op[2]);
      case "c":
        return events.control();
      case "r":
        return events.frameRefused(op[2]);
      case "g":
        return this.gone();
      case "s":
        if (events.overflow === undefined) return this.gone();
        this.#closed = true;
        this.relays.forgetRemote(this);
        return events.overflow();
      case "l":
        return events.alive?.();
    }
  }

  /** The socket is gone, or its edge is: the connection ends as lost. */
  gone(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.relays.forgetRemote(this);
    this.#events?.closed();
  }
}

/** The edge's end: the real socket, whose frames go to the holder. */
class EdgeRelay implements WireEvents {
  /** Ops from the holder that came before the upgrade completed. */
  #early: Op[] | null;
  /**
   * The holder's last word on the session says foreground, no deadline, and the client sent
   * nothing but heartbeats since: heartbeats are answered here.
   */
  foreground = false;
  /** When the holder last saw life of the client: a frame, or an `l` op. */
  lifeSentAt = -Infinity;
  /** Heartbeats answered here, at most EDGE_HEARTBEATS_PER_SEC. */
  heartbeats: TokenBucket | null = null;

  constructor(
    readonly rid: string,
    readonly holder: string,
    readonly wire: WireSocket,
    private readonly relays: SocketRelays,
    opened: boolean,
  ) {
    this.#early = opened ? null : [];
  }

  /** Applies an op from the holder (kept until the socket is open). */
  apply(op: Op): void {
    if (this.#early !== null) this.#early.push(op);
    else this.relays.applyToEdge(this, op);
  }

  open(): void {
    const early = this.#early;
    this.#early = null;
    for (const op of early ?? []) this.relays.applyToEdge(this, op);
  }
  text(data: string): void {
    if (this.foreground && this.relays.answerHeartbeat(this, data)) return;
    // Whatever else the client says may change the session: the holder answers from now on.
    this.foreground = false;
    this.relays.forward(this, data);
  }
  binary(byteLength: number): void {
    this.relays.queue(this.holder, ["b", this.rid, byteLength]);
  }
  control(): void {
    this.relays.queue(this.holder, ["c", this.rid]);
  }
  frameRefused(reason: TransportRefusedFrame): void {
    this.relays.queue(this.holder, ["r", this.rid, reason]);
  }
  closed(): void {
    if (this.relays.forgetEdge(this)) this.relays.queue(this.holder, ["g", this.rid]);
  }
}

export class SocketRelays {
  readonly #bus: Bus;
  readonly #options: SocketRelaysOptions;
  /** Holder side: connections run here for sockets at other nodes. */
  readonly #remote = new Map<string, RemoteWire>();
  /** Edge side: sockets here whose connections run at other nodes. */
  readonly #edge = new Map<string, EdgeRelay>();
  /** Ops waiting for this turn's publish, per node. */
  readonly #outbox = new Map<string, Op[]>();
  #flushing: ReturnType<typeof setTimeout> | undefined;
  #nextId = 1;
  #closed = false;

  constructor(bus: Bus, options: SocketRelaysOptions) {
    this.#bus = bus;
    this.#options = options;
    bus.handle("relay.open", (body, from) => this.#accept(body as RelayOpen, from));
    bus.on("relay", (body, from) => this.#receive(body as Op[], from));
  }

  /** Relayed sockets whose connection runs here. */
  get remoteCount(): number {
    return this.#remote.size;
  }

  /** Sockets here whose connection runs at another node. */
  get edgeCount(): number {
    return this.#edge.size;
  }

  /** The nodes this node relays with (their death ends those relays: see `nodeGone`). */
  peers(): Set<string> {
    const peers = new Set<string>();
    for (const relay of this.#edge.values()) peers.add(relay.holder);
    for (const wire of this.#remote.values()) peers.add(wire.edge);
    return peers;
  }

  /**
   * Edge side: asks `holder` to run the connection of a socket about to be accepted here.
   * On `ok`, `attach` the socket once it is upgraded (or `abort` when the upgrade fails).
   */
  async open(
    holder: string,
    open: Omit<RelayOpen, "rid">,
  ): Promise<
    { answer: "moved" } | {
      answer: "ok";
      /** `opened`: the socket is open already (handed over after its upgrade). */
      attach: (wire: WireSocket, opened: boolean) => void;
      abort: () => void;
    }
  > {
    const rid = `${this.#options.nodeId}.${this.#nextId++}`;
    const answer = await this.#bus.request(holder, "relay.open", { ...open, rid }) as
      | RelayOpenAnswer
      | undefined;
    if (answer !== "ok") return { answer: "moved" };
    return {
      answer: "ok",
      attach: (wire, opened) => {
        const relay = new EdgeRelay(rid, holder, wire, this, opened);
        this.#edge.set(rid, relay);
        wire.listen(relay);
      },
      abort: () => this.queue(holder, ["g", rid]),
    };
  }

  /**
   * A frame of a relayed socket whose session is in foreground: answered here when it is a
   * heartbeat within the edge's allowance (see the header). False: send it to the holder.
   */
  answerHeartbeat(relay: EdgeRelay, data: string): boolean {
    // Pings are tiny; anything longer or not starting as one is not parsed here.
    if (data.length > 160 || !data.startsWith('{"type":"ping"')) return false;
    let frame;
    try {
      frame = PingFrameSchema.safeParse(JSON.parse(data));
    } catch {
      return false;
    }
    if (!frame.success || frame.data.source !== "heartbeat") return false;
    const now = this.#options.clock.now();
    relay.heartbeats ??= new TokenBucket(EDGE_HEARTBEATS_PER_SEC, 2 * EDGE_HEARTBEATS_PER_SEC, now);
    if (!relay.heartbeats.take(now)) return false;
    const reply: ServerFrameOf<"pong"> = {
      type: "pong",
      id: frame.data.id,
      serverTime: now,
      backgroundDeadline: null,
    };
    const pong = JSON.stringify(reply);
    if (relay.wire.bufferedAmount + pong.length > this.#options.maxBufferedBytes) {
      this.#closeEdge(relay, "slow_consumer");
      return true;
    }
    relay.wire.send(pong);
    this.#options.heartbeatAnswered?.();
    if (now - relay.lifeSentAt >= this.#options.idleTimeoutMs / 3) {
      relay.lifeSentAt = now;
      this.queue(relay.holder, ["l", relay.rid]);
    }
    return true;
  }

  /** A client frame for the holder (which sees it as life too). */
  forward(relay: EdgeRelay, data: string): void {
    relay.lifeSentAt = this.#options.clock.now();
    this.queue(relay.holder, ["t", relay.rid, data]);
  }

  /** Queues an op for `node`; every op of this turn leaves in one publish per node. */
  queue(node: string, op: Op): void {
    if (this.#closed) return;
    let ops = this.#outbox.get(node);
    if (ops === undefined) this.#outbox.set(node, ops = []);
    ops.push(op);
    this.#flushing ??= setTimeout(() => this.#flush(), 0);
  }

  /** Called by a `RemoteWire` that closed. */
  forgetRemote(wire: RemoteWire): void {
    if (this.#remote.get(wire.rid) === wire) this.#remote.delete(wire.rid);
  }

  /** Called by an `EdgeRelay` whose socket closed; false when it was already forgotten. */
  forgetEdge(relay: EdgeRelay): boolean {
    if (this.#edge.get(relay.rid) !== relay) return false;
    this.#edge.delete(relay.rid);
    return true;
  }

  /**
   * `node` is dead, or frames to or from it may have been lost: the sockets relayed to it are
   * closed with 1012 (their clients reconnect, to a live node), and the connections relayed
   * from it end as lost.
   */
  nodeGone(node: string): void {
    for (const relay of [...this.#edge.values()]) {
      if (relay.holder === node) this.#closeEdge(relay, "server_shutdown");
    }
    for (const wire of [...this.#remote.values()]) if (wire.edge === node) wire.gone();
    this.#outbox.delete(node);
  }

  /** Every relay ends (this node's subscription dropped: frames may have been lost). */
  allGone(): void {
    for (const node of this.peers()) this.nodeGone(node);
  }

  /** Shutdown: the edge sockets close with 1012; the holder's connections close on their own. */
  close(): void {
    for (const relay of [...this.#edge.values()]) this.#closeEdge(relay, "server_shutdown");
    this.#flush();
    this.#closed = true;
  }

  #closeEdge(relay: EdgeRelay, reason: "slow_consumer" | "server_shutdown"): void {
    if (!this.forgetEdge(relay)) return;
    this.queue(relay.holder, [reason === "slow_consumer" ? "s" : "g", relay.rid]);
    const { code, text } = this.#options.closing(reason);
    relay.wire.close(code, reason, text);
  }

  async #accept(open: RelayOpen, from: string): Promise<RelayOpenAnswer> {
    if (this.#closed) throw new Error("this node is stopping");
    const wire = new RemoteWire(open.rid, from, this);
    this.#remote.set(open.rid, wire);
    try {
      const answer = await this.#options.accept(open, wire);
      if (answer !== "ok") this.forgetRemote(wire);
      return answer;
    } catch (error) {
      this.forgetRemote(wire);
      throw error;
    }
  }

  #receive(ops: Op[], from: string): void {
    if (!Array.isArray(ops)) return;
    for (const op of ops) {
      const rid = op[1];
      switch (op[0]) {
        case "t":
        case "b":
        case "c":
        case "r":
        case "g":
        case "s":
        case "l": {
          const wire = this.#remote.get(rid);
          if (wire !== undefined && wire.edge === from) wire.deliver(op);
          // A frame for a socket whose edge does not know it is gone: the edge is told.
          else if (op[0] !== "g" && op[0] !== "s" && op[0] !== "l") {
            this.queue(from, ["x", rid, 1012, "server_shutdown", null]);
          }
          break;
        }
        case "o":
        case "p":
        case "x": {
          const relay = this.#edge.get(rid);
          if (relay !== undefined && relay.holder === from) relay.apply(op);
          break;
        }
      }
    }
  }

  /** An op from the holder, on the edge's open socket. */
  applyToEdge(relay: EdgeRelay, op: Op): void {
    if (this.#edge.get(relay.rid) !== relay) return;
    const wire = relay.wire;
    switch (op[0]) {
      case "o": {
        const text = op[2];
        // The output limit is enforced here, where the socket's buffer is (the holder sees the
        // socket gone).
        if (wire.bufferedAmount + text.length > this.#options.maxBufferedBytes) {
          return this.#closeEdge(relay, "slow_consumer");
        }
        // The holder serializes with `type` first: only these frames speak of the session.
        if (
          text.startsWith('{"type":"pong"') || text.startsWith('{"type":"state"') ||
          text.startsWith('{"type":"connected"')
        ) relay.foreground = isForeground(text);
        return wire.send(text);
      }
      case "p":
        return wire.pong();
      case "x":
        this.forgetEdge(relay);
        return wire.close(op[2], op[3], op[4] ?? undefined);
    }
  }

  #flush(): void {
    this.#flushing = undefined;
    const outbox = [...this.#outbox];
    this.#outbox.clear();
    for (const [node, ops] of outbox) {
      this.#bus.tell(node, "relay", ops).catch((error) => {
        // Not sent: the frames are lost, so the relays with that node end.
        this.#options.log.warn("cluster.relay_failed", { node, error: String(error) });
        this.nodeGone(node);
      });
    }
  }
}

/** A `connected`, `state` or `pong` frame from the holder: foreground with no deadline? */
function isForeground(text: string): boolean {
  try {
    const frame = JSON.parse(text) as { appState?: string; backgroundDeadline?: number | null };
    return frame.backgroundDeadline === null &&
      (frame.appState === undefined || frame.appState === "foreground");
  } catch {
    return false;
  }
}
