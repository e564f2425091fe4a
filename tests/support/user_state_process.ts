/**
 * The real user state of SPEC §4 on fake time, as a "process" that can stop gracefully or
 * crash and be started again on the same in-memory Deno KV store: one `UserStateRuntime` +
 * `UserStates` per process, FakeSockets recording every `close(reason)` with its time and
 * close code. Used by tests/lifecycle_model_test.ts.
 */
import { closeCodeTable, type CloseReason } from "../../contract/mod.ts";
import type { ManualClock } from "../../gateway/clock.ts";
import { DEFAULTS } from "../../gateway/config.ts";
import { KvStore } from "../../gateway/store/kv.ts";
import type { GatewayStore } from "../../gateway/store/types.ts";
import {
  type SocketPort,
  type UserState,
  UserStateRuntime,
  UserStates,
} from "../../gateway/user_state.ts";

export const UID = "u1";

/** A socket that records what the state object does to it. */
export class FakeSocket implements SocketPort {
  readonly closes: Array<{ reason: CloseReason; code: number; at: number }> = [];
  readonly touches: number[] = [];
  constructor(readonly id: number, private readonly clock: ManualClock) {}
  send(): void {}
  sendEvent(): boolean {
    return true;
  }
  touch(now: number): void {
    this.touches.push(now);
  }
  close(reason: CloseReason): void {
    // The code the transport sends for this reason (gateway/connection.ts does the same).
    this.closes.push({ reason, code: closeCodeTable[reason], at: this.clock.now() });
  }
}

/**
 * One process's view of the shared store: a slow disk. A group commit stays in flight until the
 * test lets it land (`land`), so what the state object does while a write is on its way is
 * deterministic; a crash lands it or loses it. Its `close` leaves the shared store open.
 */
class ProcessStore implements GatewayStore {
  /** Writes handed to the store and not landed yet. */
  readonly inflight = new Set<Promise<void>>();
  #waiting: Array<() => void> = [];
  #holding = true;
  #dead = false;
  constructor(private readonly kv: KvStore, private readonly appId: string) {}
  createUser(...args: Parameters<GatewayStore["createUser"]>) {
    return this.kv.createUser(...args);
  }
  getUser(...args: Parameters<GatewayStore["getUser"]>) {
    return this.kv.getUser(...args);
  }
  putAuthToken(...args: Parameters<GatewayStore["putAuthToken"]>) {
    return this.kv.putAuthToken(...args);
  }
  getAuthToken(...args: Parameters<GatewayStore["getAuthToken"]>) {
    return this.kv.getAuthToken(...args);
  }
  deleteAuthToken(...args: Parameters<GatewayStore["deleteAuthToken"]>) {
    return this.kv.deleteAuthToken(...args);
  }
  loadUserState(...args: Parameters<GatewayStore["loadUserState"]>) {
    return this.kv.loadUserState(...args);
  }
  saveUserStates(...args: Parameters<GatewayStore["saveUserStates"]>): Promise<void> {
    const turn = new Promise<void>((resolve) => {
      if (this.#holding) this.#waiting.push(resolve);
      else resolve();
    });
    const write = turn.then(() =>
      this.#dead ? new Promise<void>(() => {}) : this.kv.saveUserStates(...args)
    );
    this.inflight.add(write);
    const done = () => void this.inflight.delete(write);
    write.then(done, done);
    return write;
  }
  readEvents(...args: Parameters<GatewayStore["readEvents"]>) {
    return this.kv.readEvents(...args);
  }
  getSendRecord(...args: Parameters<GatewayStore["getSendRecord"]>) {
    return this.kv.getSendRecord(...args);
  }
  createGroup(...args: Parameters<GatewayStore["createGroup"]>) {
    return this.kv.createGroup(...args);
  }
  getGroup(...args: Parameters<GatewayStore["getGroup"]>) {
    return this.kv.getGroup(...args);
  }
  updateGroup: GatewayStore["updateGroup"] = (appId, guid, update) =>
    this.kv.updateGroup(appId, guid, update);
  getProfile(...args: Parameters<GatewayStore["getProfile"]>) {
    return this.kv.getProfile(...args);
  }
  putProfile(...args: Parameters<GatewayStore["putProfile"]>) {
    return this.kv.putProfile(...args);
  }
  /** This gateway's held users (a store shared by several test runs has one app per run). */
  async listHeldUsers() {
    return (await this.kv.listHeldUsers()).filter((held) => held.appId === this.appId);
  }
  close(): void {}

  /** Lets every write in flight land; resolves once they have. */
  async land(): Promise<void> {
    const waiting = this.#waiting;
    this.#waiting = [];
    for (const resolve of waiting) resolve();
    await Promise.allSettled([...this.inflight]);
  }

  /** From now on writes land at once (a graceful stop waits for its writes). */
  async stopHolding(): Promise<void> {
    this.#holding = false;
    await this.land();
  }

  /** The process died: writes still in flight never reach the store. */
  die(): void {
    this.#dead = true;
    this.#waiting = [];
    this.inflight.clear();
  }
}

interface Process {
  store: ProcessStore;
  runtime: UserStateRuntime;
  users: UserStates;
  running: boolean;
}

/** The system under test: the state objects of one gateway process at a time. */
export class UserStateProcess {
  readonly sockets: FakeSocket[] = [];
  /** Alarm handlers that threw and failed writes (the runtime only reports them). */
  readonly errors: unknown[] = [];
  /** How many times the user's state object had left memory (evicted) when asked for again. */
  evictions = 0;
  #process: Process;
  /** The object last handed out by this process (null right after a start). */
  #lastGot: UserState | null = null;

  private constructor(
    readonly clock: ManualClock,
    readonly kv: KvStore,
    readonly appId: string,
    private readonly ownsStore: boolean,
  ) {
    this.#process = this.#start();
  }

  /** A gateway on its own store, or on `shared` (one app of a store that outlives it). */
  static async open(
    clock: ManualClock,
    shared?: { kv: KvStore; appId: string },
  ): Promise<UserStateProcess> {
    if (shared !== undefined) return new UserStateProcess(clock, shared.kv, shared.appId, false);
    return new UserStateProcess(clock, await KvStore.open(":memory:"), "demo", true);
  }

  get runtime(): UserStateRuntime {
    return this.#process.runtime;
  }

  /** The user's state object, as a request would get it (loaded if it was evicted). */
  async user(): Promise<UserState> {
    const users = this.#process.users;
    if (this.#lastGot !== null && users.peek(this.appId, UID) === undefined) this.evictions++;
    this.#lastGot = await users.get(this.appId, UID);
    return this.#lastGot;
  }

  /** The user's state for an observer: does not load it for good or mark it used. */
  async peekUser(): Promise<UserState> {
    const users = this.#process.users;
    return users.peek(this.appId, UID) ?? await users.read(this.appId, UID);
  }

  /** Whether the session holds a connection right now (no await: between two clock moves). */
  connectedNow(sessionId: string): boolean | undefined {
    return this.#process.users.peek(this.appId, UID)?.session(sessionId)?.liveness.connected;
  }

  newSocket(): FakeSocket {
    const socket = new FakeSocket(this.sockets.length, this.clock);
    this.sockets.push(socket);
    return socket;
  }

  /**
   * Waits for a durable promise the way a reply behind the output gate does: the group commit
   * runs on the fake clock (DEFAULTS.persistDelayMs), so time moves 1 ms at a time meanwhile.
   */
  async settle(promise: Promise<unknown>): Promise<void> {
    let done = false;
    const failures: unknown[] = [];
    promise.then(() => (done = true), (error) => {
      done = true;
      failures.push(error);
    });
    for (let round = 0; !done; round++) {
      if (round > 200) throw new Error("a durable write never completed");
      if (this.#process.store.inflight.size > 0) await this.#process.store.land();
      else this.clock.advance(1);
      for (let i = 0; i < 10 && !done; i++) await Promise.resolve();
    }
    if (failures.length > 0) throw failures[0];
  }

  /** Group commits handed to the store that have not landed yet. */
  get writesInFlight(): number {
    return this.#process.store.inflight.size;
  }

  /** The disk catches up: the writes in flight land (no time passes). */
  land(): Promise<void> {
    return this.#process.store.land();
  }

  /** Graceful stop: 1012 to every socket, everything written (deadlines exactly). */
  async shutdown(): Promise<void> {
    this.#process.running = false;
    await this.#process.store.stopHolding();
    await this.#process.users.shutdown();
  }

  /**
   * kill -9: no socket gets a close frame, nothing more is written, timers stop. The writes in
   * flight land first (`inflight` "land") or never (`"lost"`).
   */
  async crash(inflight: "land" | "lost"): Promise<void> {
    const { runtime, users, store } = this.#process;
    this.#process.running = false;
    if (inflight === "land") await store.land();
    store.die();
    runtime.writer.close();
    runtime.alarms.close();
    users.stopTimers();
  }

  /** A new process on the same store: revives the held users and restores their deadlines. */
  async start(): Promise<void> {
    if (this.#process.running) throw new Error("the previous process is still running");
    this.#process = this.#start();
    this.#lastGot = null;
    await this.#process.users.revive();
  }

  /** Stops the process (if running) and closes the store: nothing is left for the sanitizers. */
  async dispose(): Promise<void> {
    try {
      if (this.#process.running) await this.shutdown();
    } finally {
      if (this.ownsStore) this.kv.close();
    }
  }

  #start(): Process {
    const store = new ProcessStore(this.kv, this.appId);
    const runtime = new UserStateRuntime(
      this.clock,
      { livenessWindowMs: DEFAULTS.livenessWindowMs, idleTimeoutMs: DEFAULTS.idleTimeoutMs },
      store,
      {
        tickMs: DEFAULTS.deadlineTickMs,
        persistDelayMs: DEFAULTS.persistDelayMs,
        deadlineBoundMs: DEFAULTS.deadlineBoundMs,
        restartGraceMs: DEFAULTS.restartGraceMs,
        observer: {
          alarmFailed: (error) => this.errors.push(error),
          storeCommitFailed: (error) => this.errors.push(error),
        },
      },
    );
    const users = new UserStates(runtime, { evictAfterMs: DEFAULTS.userEvictAfterMs });
    return { store, runtime, users, running: true };
  }
}

/**
 * In-memory stores for many short test runs: opening one costs about a millisecond, so runs
 * share one (each run its own app) and a fresh one is opened every `runsPerStore` runs.
 */
export class StorePool {
  #kv: KvStore | null = null;
  #uses = 0;
  #apps = 0;
  constructor(readonly runsPerStore: number) {}

  async next(): Promise<{ kv: KvStore; appId: string }> {
    if (this.#kv === null || this.#uses >= this.runsPerStore) {
      this.close();
      this.#kv = await KvStore.open(":memory:");
    }
    this.#uses++;
    return { kv: this.#kv, appId: `app${++this.#apps}` };
  }

  close(): void {
    this.#kv?.close();
    this.#kv = null;
    this.#uses = 0;
  }
}
