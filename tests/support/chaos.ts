/**
 * The model and the checker of the events chaos property tests: tests/chaos_test.ts (one
 * gateway process on Deno KV) and tests/chaos_cluster_test.ts (two gateway nodes on one Redis).
 * Each test brings its deployment (where requests go, how it is stopped and started) and its
 * chaos actions; what is sent, how each send's acknowledgement is recorded, the common chaos
 * actions (disconnects, background deadlines, slow consumers, big group sends) and the
 * property checked at the end are here, once.
 *
 * The property, for every client (tests/support/stream_client.ts: it keeps `{ epoch, seq }`,
 * resumes with it, pages the history when a resume is not recovered, retries its sends with the
 * same clientMessageId until answered):
 *
 * - the events it accepted are seq 1..N of its user's stream, N the stream's head: no gap, no
 *   event twice, in seq order, in one epoch; and they are the stream as the history route
 *   serves it (the same message at each seq);
 * - every acknowledged send (HTTP 200 reply, `sent` frame, or for a user send its own copy in
 *   the sender's stream) is in the stream of each of its receivers exactly once, at the seq the
 *   acknowledgement named where it named one;
 * - an unacknowledged send (a server send the gateway did not answer 200) is there at most
 *   once; nothing is there that was not sent to that user; no (sender, clientMessageId) twice.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  HistoryPageSchema,
  type Message,
  SendMessageReplySchema,
  SessionViewSchema,
  type StreamEvent,
} from "../../contract/mod.ts";
import { DEV_APP } from "../../gateway/config.ts";
import { delay } from "./process.ts";
import { type GatewayTarget, StreamClient } from "./stream_client.ts";

// ---- settings from the environment (see the tests' headers) ----

export interface ChaosSettings {
  seed: number;
  path: string | undefined;
  runs: number;
  shrink: boolean;
  /** Prints each step's chaos and duration. */
  verbose: boolean;
  /** A file a failed run's records and events are written to (CHAOS_DUMP). */
  dump: string | undefined;
}

/**
 * CHAOS_SEED, CHAOS_PATH, CHAOS_RUNS (default `defaultRuns`), CHAOS_SHRINK, CHAOS_VERBOSE,
 * CHAOS_DUMP.
 */
export function chaosSettings(defaultRuns: number): ChaosSettings {
  return {
    seed: Number(Deno.env.get("CHAOS_SEED") ?? Math.floor(Math.random() * 2 ** 31)),
    path: Deno.env.get("CHAOS_PATH"),
    runs: Number(Deno.env.get("CHAOS_RUNS") ?? defaultRuns),
    shrink: Deno.env.get("CHAOS_SHRINK") === "1",
    verbose: Deno.env.get("CHAOS_VERBOSE") === "1",
    dump: Deno.env.get("CHAOS_DUMP"),
  };
}

// ---- the users ----

export const APP = DEV_APP.appId;
export const API_HEADERS = { apikey: DEV_APP.apiKey, "content-type": "application/json" };

/** The users of a scenario; the group holds all but the last (a non-member gets nothing). */
export const UIDS = ["chaos0", "chaos1", "chaos2", "chaos3"];
export const GUID = "chaosgroup";
export const MEMBERS = UIDS.slice(0, 3);
/** Client i is a session of user CLIENT_USERS[i]: chaos0 has two (its own sends reach both). */
export const CLIENT_USERS = [0, 0, 1, 2, 3];
/** The clients whose users are members of the group. */
export const MEMBER_CLIENTS = CLIENT_USERS.flatMap((user, i) =>
  MEMBERS.includes(UIDS[user]) ? [i] : []
);
/**
 * A large group: the members plus users nobody connects as. One big message to it is more than
 * one KV commit holds (13 copies of ~50 KB), so its write always takes several commits.
 */
export const CROWD = "chaoscrowd";
export const CROWD_MEMBERS = [...MEMBERS, ...Array.from({ length: 10 }, (_, i) => `silent${i}`)];

/** A big message (HTTP only: a WebSocket frame is at most MAX_FRAME_BYTES, 8 KiB). */
const BIG_PAD = 40_000;
/** How long a user's send may stay unanswered (restarts included) before the run fails. */
const ANSWER_TIMEOUT_MS = 60_000;
/** The slow consumer's messages: big (a message is at most 60 KB), so that few fill its buffers. */
const BLOB_PAD = 50_000;
/** Blobs sent at once, between two looks at the stalled session's status. */
const BLOBS_PER_ROUND = 8;
/** Most blobs sent to a stalled client before the test gives up on its close. */
const MAX_BLOBS = 400;

// ---- the scenario ----

export type SendSpec =
  /** Server API to users (`to` as a bit mask of UIDS), on behalf of a user or not. */
  | { kind: "server"; toMask: number; from: number | null }
  /** Server API to the group, on behalf of a member or not. */
  | { kind: "group"; from: number | null }
  /** A user's send over the socket or HTTP, to a user or (from a member) to the group. */
  | { kind: "socket" | "http"; client: number; toGroup: boolean; receiver: number; big: boolean };

/** One step: a batch of sends with one chaos action (of the test's own kinds) started during it. */
export interface Step<C> {
  sends: SendSpec[];
  chaos: C;
}

export const clientArb = fc.integer({ min: 0, max: CLIENT_USERS.length - 1 });
const userArb = fc.integer({ min: 0, max: UIDS.length - 1 });
export const atArb = fc.integer({ min: 0, max: 150 });

const sendArb: fc.Arbitrary<SendSpec> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant("server" as const),
      toMask: fc.integer({ min: 1, max: 2 ** UIDS.length - 1 }),
      from: fc.option(userArb, { freq: 3 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("group" as const),
      from: fc.option(fc.integer({ min: 0, max: MEMBERS.length - 1 }), { freq: 3 }),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("socket" as const),
      client: clientArb,
      toGroup: fc.boolean(),
      receiver: userArb,
      big: fc.constant(false),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant("http" as const),
      client: clientArb,
      toGroup: fc.boolean(),
      receiver: userArb,
      big: fc.oneof({ weight: 9, arbitrary: fc.constant(false) }, fc.constant(true)),
    }),
  },
);

/** The chaos actions every deployment has (see `ChaosScenario`). */
export type CommonChaos =
  | { kind: "none" }
  | { kind: "disconnect"; client: number; atMs: number; offMs: number }
  | { kind: "deadline"; client: number; atMs: number }
  | { kind: "slow"; client: number; atMs: number };

export const noneArb = fc.constant({ kind: "none" as const });
export const disconnectArb = fc.record({
  kind: fc.constant("disconnect" as const),
  client: clientArb,
  atMs: atArb,
  offMs: fc.integer({ min: 0, max: 500 }),
});
export const deadlineArb = fc.record({
  kind: fc.constant("deadline" as const),
  client: clientArb,
  atMs: atArb,
});
export const slowArb = fc.record({
  kind: fc.constant("slow" as const),
  client: clientArb,
  atMs: atArb,
});

/**
 * `steps` steps of `batch.min`..`batch.max` sends, each with one chaos action. Each of
 * `required` is the chaos of one step (distinct steps, at random), so that every run has it.
 */
export function scenarioArb<C>(
  chaosArb: fc.Arbitrary<C>,
  steps: number,
  batch: { min: number; max: number },
  required: fc.Arbitrary<C>[] = [],
): fc.Arbitrary<Step<C>[]> {
  const drawn = fc.array(
    fc.record({
      sends: fc.array(sendArb, { minLength: batch.min, maxLength: batch.max }),
      chaos: chaosArb,
    }),
    { minLength: steps, maxLength: steps },
  );
  // (Without `required`, the same arbitrary as ever: a seed still names the same scenarios.)
  const placed = required.length === 0 ? drawn : fc.tuple(
    drawn,
    fc.shuffledSubarray(Array.from({ length: steps }, (_, i) => i), {
      minLength: required.length,
      maxLength: required.length,
    }),
    fc.tuple(...required),
  ).map(([drawn, at, chaos]) => {
    const steps = drawn.map((step) => ({ ...step }));
    at.forEach((i, j) => steps[i].chaos = chaos[j]);
    return steps;
  });
  return placed.map((steps) =>
    // A failure prints the scenario: one line per step, not every send.
    Object.assign(steps, { [fc.toStringMethod]: () => describeScenario(steps) })
  );
}

function describeScenario<C>(steps: Step<C>[]): string {
  return steps.map((step, i) => {
    const kinds: Record<string, number> = {};
    for (const send of step.sends) kinds[send.kind] = (kinds[send.kind] ?? 0) + 1;
    return `  step ${i}: ${JSON.stringify(step.chaos)} during ${step.sends.length} sends ` +
      JSON.stringify(kinds);
  }).join("\n");
}

// ---- what the tests count ----

/** The counts every chaos test keeps (each test's totals add their own). */
export interface ChaosTotals {
  runs: number;
  sends: number;
  acknowledged: number;
  unacknowledged: number;
  unacknowledgedSeen: number;
  delivered: { live: number; sent: number; replay: number; history: number };
  deadlines: number;
  slowConsumerCloses: number;
  blobs: number;
  disconnects: number;
  resumesRecovered: number;
  resumesNotRecovered: Record<string, number>;
  wsRetries: number;
  httpRetries: number;
  duplicateAnswers: number;
  historyPages: number;
  closes: Record<string, number>;
  sendErrors: Record<string, number>;
}

/** Adds a client's counters to the totals (after its `stop`). */
export function addClientCounts(totals: ChaosTotals, client: StreamClient): void {
  const c = client.counters;
  for (const channel of ["live", "sent", "replay", "history"] as const) {
    totals.delivered[channel] += c.delivered[channel];
  }
  totals.resumesRecovered += c.resumesRecovered;
  for (const [reason, n] of Object.entries(c.resumesNotRecovered)) {
    totals.resumesNotRecovered[reason] = (totals.resumesNotRecovered[reason] ?? 0) + n;
  }
  for (const [reason, n] of Object.entries(c.closes)) {
    totals.closes[reason] = (totals.closes[reason] ?? 0) + n;
  }
  for (const [code, n] of Object.entries(c.sendErrors)) {
    totals.sendErrors[code] = (totals.sendErrors[code] ?? 0) + n;
  }
  totals.wsRetries += c.wsRetries;
  totals.httpRetries += c.httpRetries;
  totals.duplicateAnswers += c.duplicateAnswers;
  totals.historyPages += c.historyPages;
}

// ---- one scenario ----

/**
 * A send the test made, and what the gateway said about it. A send puts one copy into each
 * receiving stream per `to`: a server send on behalf of a user gives the sender one copy per
 * recipient (each with its own `to`), a user's send gives the sender the copy its other
 * sessions see. A copy is named `<uid>|<to>`.
 */
export interface SendRecord {
  tag: string;
  kind: SendSpec["kind"] | "blob" | "crowd";
  copies: Set<string>;
  acked: boolean;
  /**
   * The seq the acknowledgement named, per copy (a server send's: each recipient's; a user
   * send's: the sender's).
   */
  ackSeqs: Map<string, number>;
}

function copy(uid: string, to: string): string {
  return `${uid}|${to}`;
}

/** Where the test's requests and sockets go: `ready` waits while nothing is up. */
export interface ChaosTarget {
  ready(): Promise<GatewayTarget>;
}

/**
 * How the deployment answers while it changes. On one process a 503 is only a stopping
 * gateway's; in a cluster a request for a user that is moving between nodes (or held by a node
 * that died and is not yet taken over) is answered 503 too, and a client tries again shortly.
 */
export interface ChaosOptions {
  /** Sends in flight at once within a batch. */
  concurrency: number;
  /**
   * The test's own reads (a session's status, the history at the end) try again on 503, and
   * the clients take ERR_SERVICE_UNAVAILABLE at their handshake as "try again".
   */
  retryUnavailable: boolean;
  /** How long the clients may take to be live again after a chaos action. */
  liveTimeoutMs: number;
}

async function post(url: string, path: string, body: unknown): Promise<Response> {
  try {
    return await fetch(`${url}${path}`, {
      method: "POST",
      headers: API_HEADERS,
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(ANSWER_TIMEOUT_MS),
    });
  } catch (error) {
    // A gateway that never answers is a failure, not an unacknowledged send.
    if (error instanceof DOMException && error.name === "TimeoutError") {
      throw new Error(`POST ${url}${path} unanswered within ${ANSWER_TIMEOUT_MS} ms`);
    }
    throw error;
  }
}

/** Creates the users and groups, logs the clients in and starts them: all live, at seq 0. */
export async function setUp(target: ChaosTarget, options: ChaosOptions): Promise<StreamClient[]> {
  const { url } = await target.ready();
  for (const uid of new Set([...UIDS, ...CROWD_MEMBERS])) {
    const res = await post(url, `/v1/apps/${APP}/users`, { uid });
    assert.equal(res.status, 201, await res.text());
  }
  for (const [guid, members] of [[GUID, MEMBERS], [CROWD, CROWD_MEMBERS]] as const) {
    const res = await post(url, `/v1/apps/${APP}/groups`, { guid, members });
    assert.equal(res.status, 201, await res.text());
  }
  const clients: StreamClient[] = [];
  for (const [i, user] of CLIENT_USERS.entries()) {
    const login = await fetch(`${url}/v1/apps/${APP}/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ uid: UIDS[user], authKey: DEV_APP.authKey, mode: "manual" }),
    });
    const body = await login.json();
    assert.equal(login.status, 200, JSON.stringify(body));
    clients.push(
      new StreamClient({
        name: `c${i}`,
        uid: UIDS[user],
        credential: body.session.credential,
        ready: () => target.ready(),
        retryUnavailable: options.retryUnavailable,
      }),
    );
  }
  for (const client of clients) client.start();
  // Every client is in its stream before the first event: it must see all of them.
  for (const client of clients) await client.untilLive(options.liveTimeoutMs);
  return clients;
}

export function tagOf(message: Message): string {
  if (message.kind === "text") return message.text;
  return String(message.data.tag);
}

/**
 * One scenario's sends and their records, and the chaos actions every deployment has; a test
 * adds its own (restarts, kills) in `chaos`.
 */
export abstract class ChaosScenario<C extends { kind: string }> {
  readonly records: SendRecord[] = [];
  protected readonly target: ChaosTarget;
  protected readonly clients: StreamClient[];
  protected readonly totals: ChaosTotals;
  protected readonly options: ChaosOptions;
  readonly #run: number;
  #nextTag = 0;

  constructor(
    target: ChaosTarget,
    clients: StreamClient[],
    run: number,
    totals: ChaosTotals,
    options: ChaosOptions,
  ) {
    this.target = target;
    this.clients = clients;
    this.#run = run;
    this.totals = totals;
    this.options = options;
  }

  /** Runs the test's own kinds of chaos; the common ones go to `commonChaos`. */
  protected abstract chaos(chaos: C): Promise<void>;

  async step(step: Step<C>): Promise<void> {
    const batch = this.#batch(step.sends);
    const chaos = this.chaos(step.chaos);
    const [a, b] = await Promise.allSettled([batch, chaos]);
    if (a.status === "rejected") throw a.reason;
    if (b.status === "rejected") throw b.reason;
  }

  async #batch(sends: SendSpec[]): Promise<void> {
    let next = 0;
    const worker = async () => {
      while (next < sends.length) await this.#send(sends[next++]);
    };
    // Every worker ends (each wait has a timeout) before a failure is reported.
    const settled = await Promise.allSettled(
      Array.from({ length: this.options.concurrency }, worker),
    );
    const failed = settled.find((s) => s.status === "rejected");
    if (failed !== undefined) throw failed.reason;
  }

  #record(kind: SendRecord["kind"], copies: Iterable<string>): SendRecord {
    const record: SendRecord = {
      tag: `r${this.#run}-${++this.#nextTag}`,
      kind,
      copies: new Set(copies),
      acked: false,
      ackSeqs: new Map(),
    };
    this.records.push(record);
    this.totals.sends++;
    return record;
  }

  async #send(spec: SendSpec): Promise<void> {
    switch (spec.kind) {
      case "server": {
        const to = UIDS.filter((_, i) => (spec.toMask & (1 << i)) !== 0);
        const from = spec.from === null ? null : UIDS[spec.from];
        const copies = to.map((uid) => copy(uid, uid));
        if (from !== null) { for (const uid of to) if (uid !== from) copies.push(copy(from, uid)); }
        const record = this.#record("server", copies);
        await this.#serverSend(record, `/v1/apps/${APP}/messages`, {
          to,
          ...(from === null ? {} : { from }),
          message: { kind: "text", text: record.tag },
        });
        return;
      }
      case "group": {
        const from = spec.from === null ? null : MEMBERS[spec.from];
        const record = this.#record("group", MEMBERS.map((uid) => copy(uid, GUID)));
        await this.#serverSend(record, `/v1/apps/${APP}/groups/${GUID}/messages`, {
          ...(from === null ? {} : { from }),
          message: { kind: "text", text: record.tag },
        });
        return;
      }
      case "socket":
      case "http": {
        const client = this.clients[spec.client];
        const toGroup = spec.toGroup && MEMBERS.includes(client.uid);
        const to = toGroup ? GUID : UIDS[spec.receiver];
        const receivers = toGroup ? MEMBERS : [to, client.uid];
        const record = this.#record(spec.kind, receivers.map((uid) => copy(uid, to)));
        const message = spec.big
          ? {
            kind: "custom" as const,
            customType: "big",
            data: { tag: record.tag, pad: "x".repeat(BIG_PAD) },
          }
          : { kind: "text" as const, text: record.tag };
        const send = {
          receiverType: toGroup ? "group" as const : "user" as const,
          receiver: to,
          message,
        };
        const { answered } = spec.kind === "socket"
          ? client.sendOverSocket(send)
          : client.sendOverHttp(send);
        const ack = await within(
          answered,
          ANSWER_TIMEOUT_MS,
          () =>
            `${client.name}: ${spec.kind} send ${record.tag} unanswered (${client.unanswered} ` +
            `pending, live ${client.live}, position ${client.seq})`,
        );
        if (tagOf(ack.message) !== record.tag) {
          throw new Error(`${client.name}: the answer to ${record.tag} is ${tagOf(ack.message)}`);
        }
        record.acked = true;
        record.ackSeqs.set(copy(client.uid, to), ack.seq);
        this.totals.acknowledged++;
        return;
      }
    }
  }

  /**
   * A server API send: acknowledged by its 200; a request the gateway did not answer 200 (it
   * stopped, or answered 503) stays unacknowledged (the server API has no idempotency key, so
   * it is not sent again).
   */
  async #serverSend(record: SendRecord, path: string, body: unknown): Promise<void> {
    const { url } = await this.target.ready();
    let res: Response;
    let text: string;
    try {
      res = await post(url, path, body);
      text = await res.text();
    } catch (error) {
      if (error instanceof Error && error.message.includes("unanswered within")) throw error;
      this.totals.unacknowledged++;
      return;
    }
    if (res.status === 503 || res.status === 500) {
      this.totals.unacknowledged++;
      return;
    }
    assert.equal(res.status, 200, text);
    const reply = SendMessageReplySchema.parse(JSON.parse(text));
    record.acked = true;
    for (const r of reply.recipients) {
      // A group's recipients have the group as `to`, a user's recipients themselves.
      const to = record.kind === "group" ? GUID : r.uid;
      record.ackSeqs.set(copy(r.uid, to), r.seq);
    }
    this.totals.acknowledged++;
  }

  /** The chaos actions of every deployment. */
  protected async commonChaos(chaos: CommonChaos): Promise<void> {
    if (chaos.kind === "none") return;
    await delay(chaos.atMs);
    switch (chaos.kind) {
      case "disconnect": {
        const client = this.clients[chaos.client];
        await client.untilLive(this.options.liveTimeoutMs);
        client.disconnect();
        this.totals.disconnects++;
        await delay(chaos.offMs);
        client.reconnect();
        await client.untilLive(this.options.liveTimeoutMs);
        return;
      }
      case "deadline": {
        const client = this.clients[chaos.client];
        await client.untilLive(this.options.liveTimeoutMs);
        const reason = await client.background(10_000);
        // (A close for another reason first, e.g. held frames over the small output limit, is
        // a disconnect like any other.)
        if (reason === "liveness_timeout") this.totals.deadlines++;
        client.reconnect();
        await client.untilLive(this.options.liveTimeoutMs);
        return;
      }
      case "slow":
        return await this.#slowConsumer(this.clients[chaos.client]);
    }
  }

  /** A big HTTP send to the crowd group, answered like any user send (retried until then). */
  protected async crowdSend(client: StreamClient): Promise<void> {
    const record = this.#record(
      "crowd",
      MEMBERS.map((uid) => copy(uid, CROWD)),
    );
    const { answered } = client.sendOverHttp({
      receiverType: "group",
      receiver: CROWD,
      message: {
        kind: "custom",
        customType: "big",
        data: { tag: record.tag, pad: "x".repeat(BIG_PAD) },
      },
    });
    const ack = await within(
      answered,
      ANSWER_TIMEOUT_MS,
      () => `${client.name}: crowd send ${record.tag} unanswered`,
    );
    record.acked = true;
    record.ackSeqs.set(copy(client.uid, CROWD), ack.seq);
    this.totals.acknowledged++;
  }

  protected async allLive(): Promise<void> {
    await Promise.all(
      this.clients.map((client) => client.untilLive(this.options.liveTimeoutMs)),
    );
  }

  /**
   * The client stops reading; big messages to its user pile up until the gateway closes it as
   * `slow_consumer` (its session's status says so); then it reads again, and resumes.
   */
  async #slowConsumer(client: StreamClient): Promise<void> {
    // On a new connection, whose TCP buffers have not grown with a fast reader's traffic: a
    // few blobs fill them.
    await client.untilLive(this.options.liveTimeoutMs);
    client.disconnect();
    client.reconnect();
    await client.untilLive(this.options.liveTimeoutMs);
    client.pause();
    const stalled = client.linkId;
    let closed = false;
    for (let sent = 0; sent < MAX_BLOBS && !closed; sent += BLOBS_PER_ROUND) {
      await Promise.all(Array.from({ length: BLOBS_PER_ROUND }, () => {
        const record = this.#record("blob", [copy(client.uid, client.uid)]);
        this.totals.blobs++;
        return this.#serverSend(record, `/v1/apps/${APP}/messages`, {
          to: [client.uid],
          message: {
            kind: "custom",
            customType: "blob",
            data: { tag: record.tag, pad: "x".repeat(BLOB_PAD) },
          },
        });
      }));
      const view = SessionViewSchema.parse(
        await this.#getJson("/v1/session", client.credential),
      );
      closed = view.status === "disconnected";
      if (closed) {
        assert.equal(view.lastDisconnectReason, "slow_consumer", JSON.stringify(view));
      }
    }
    assert.ok(closed, `${client.name} was not closed after ${MAX_BLOBS} blobs it did not read`);
    this.totals.slowConsumerCloses++;
    client.unpause();
    await client.until(
      () => client.live && client.linkId !== stalled,
      "live again",
      this.options.liveTimeoutMs,
    );
  }

  /**
   * A client route's JSON body; with `retryUnavailable`, a 503 (the user is moving between
   * nodes) is asked again shortly.
   */
  async #getJson(path: string, credential: string): Promise<unknown> {
    for (let attempt = 1;; attempt++) {
      const { url } = await this.target.ready();
      const res = await fetch(`${url}${path}`, {
        headers: { authorization: `Bearer ${credential}` },
      });
      if (!this.options.retryUnavailable || res.status !== 503 || attempt >= 200) {
        return await res.json();
      }
      await res.body?.cancel();
      await delay(50);
    }
  }

  /**
   * After the last step: every client online, caught up with its stream's head. With
   * `retryUnavailable` (a cluster, where an unacknowledged write may still land after its 503)
   * the streams are read again until no head moves.
   */
  async settle(): Promise<Map<string, StreamEvent[]>> {
    for (const client of this.clients) client.reconnect();
    await this.allLive();
    for (;;) {
      const streams = new Map<string, StreamEvent[]>();
      for (const client of this.clients) {
        if (!streams.has(client.uid)) {
          streams.set(client.uid, await this.#readStream(client.credential));
        }
        const head = streams.get(client.uid)!.at(-1)?.seq ?? 0;
        await client.until(() => client.seq >= head, `caught up with seq ${head}`, 60_000);
      }
      if (!this.options.retryUnavailable) return streams;
      let moved = false;
      for (const [uid, events] of streams) {
        const client = this.clients.find((c) => c.uid === uid)!;
        const again = await this.#readStream(client.credential);
        if (again.length !== events.length) moved = true;
      }
      if (!moved) return streams;
    }
  }

  /** The whole stream of a session's user, through the history route. */
  async #readStream(credential: string): Promise<StreamEvent[]> {
    const events: StreamEvent[] = [];
    let after = 0;
    for (;;) {
      const body = await this.#getJson(`/v1/session/events?after=${after}&limit=500`, credential);
      const page = HistoryPageSchema.parse(body);
      events.push(...page.events);
      after = page.nextAfter;
      if (!page.hasMore) return events;
    }
  }
}

/** `promise`, or a failure naming what did not happen within `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(what())), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Every way the clients' streams break the property; empty when it holds. */
export function check(
  clients: StreamClient[],
  records: SendRecord[],
  streams: Map<string, StreamEvent[]>,
): string[] {
  const problems: string[] = [];
  const byTag = new Map(records.map((r) => [r.tag, r]));
  for (const client of clients) {
    problems.push(...client.violations);
    const stream = streams.get(client.uid)!;
    const observed = client.observed;
    const name = `${client.name} (${client.uid})`;
    // 1..N, and the stream as stored.
    const misplaced = observed.findIndex((event, i) => event.seq !== i + 1);
    if (misplaced >= 0) {
      problems.push(`${name}: event #${misplaced + 1} has seq ${observed[misplaced].seq}`);
    }
    if (observed.length !== stream.length) {
      problems.push(`${name}: saw ${observed.length} events, the stream holds ${stream.length}`);
    }
    const storedGap = stream.findIndex((event, i) => event.seq !== i + 1);
    if (storedGap >= 0) {
      problems.push(
        `${client.uid}: stored event #${storedGap + 1} is seq ${stream[storedGap].seq}`,
      );
    }
    const seenBySeq = new Map(observed.map((event) => [event.seq, event.message]));
    for (const event of stream) {
      const seen = seenBySeq.get(event.seq);
      if (seen !== undefined && JSON.stringify(seen) !== JSON.stringify(event.message)) {
        problems.push(
          `${name}: seq ${event.seq} is ${tagOf(seen)}, stored ${tagOf(event.message)}`,
        );
      }
    }
    // Each acknowledged copy once, at its seq; nothing twice; nothing that was not for it.
    const seenAt = new Map<string, number[]>();
    const clientIds = new Set<string>();
    for (const event of observed) {
      const tag = tagOf(event.message);
      const key = copy(client.uid, event.message.to);
      seenAt.set(`${tag}/${key}`, [...(seenAt.get(`${tag}/${key}`) ?? []), event.seq]);
      const record = byTag.get(tag);
      if (record === undefined || !record.copies.has(key)) {
        problems.push(`${name}: seq ${event.seq} is ${tag} to ${event.message.to}, not sent so`);
      }
      const cid = event.message.clientMessageId;
      if (cid !== undefined) {
        const id = `${event.message.from}/${cid}`;
        if (clientIds.has(id)) problems.push(`${name}: clientMessageId ${id} twice`);
        clientIds.add(id);
      }
    }
    for (const [copyOf, seqs] of seenAt) {
      if (seqs.length > 1) problems.push(`${name}: ${copyOf} at seqs ${seqs.join(", ")}`);
    }
    for (const record of records) {
      if (!record.acked) continue;
      for (const key of record.copies) {
        if (!key.startsWith(`${client.uid}|`)) continue;
        const seqs = seenAt.get(`${record.tag}/${key}`);
        const acked = record.ackSeqs.get(key);
        if (seqs === undefined) {
          const there = acked === undefined ? undefined : seenBySeq.get(acked);
          problems.push(
            `${name}: acknowledged ${record.kind} ${record.tag} (${key}) never arrived` +
              (acked === undefined
                ? ""
                : ` (acknowledged at seq ${acked}, which holds ${
                  there === undefined ? "nothing" : `${tagOf(there)} to ${there.to}`
                })`),
          );
          continue;
        }
        if (acked !== undefined && !seqs.includes(acked)) {
          problems.push(
            `${name}: ${record.tag} (${key}) acknowledged at seq ${acked}, seen at ${seqs}`,
          );
        }
      }
    }
  }
  return problems;
}

/** A deployment under test, as one scenario sees it. */
export interface ChaosDeployment extends ChaosTarget {
  /** Problems seen outside the streams (a graceful stop that did not exit cleanly). */
  readonly problems: string[];
  /** Everything its processes wrote, for a failure's report. */
  output(): string;
  dispose(): Promise<void>;
  /**
   * Rejects when the deployment broke by itself (a process that exited unasked): the run fails
   * then, not after its clients' timeouts.
   */
  readonly broken?: Promise<never>;
}

/**
 * One fast-check run: the deployment, the clients, every step, then the property. On failure
 * the deployment's output is printed; the clients' counters go to the totals either way.
 */
export async function runScenario<C extends { kind: string }, D extends ChaosDeployment>(
  steps: Step<C>[],
  settings: ChaosSettings,
  totals: ChaosTotals,
  options: ChaosOptions,
  start: () => Promise<D>,
  scenarioOf: (deployment: D, clients: StreamClient[], run: number) => ChaosScenario<C>,
): Promise<void> {
  const run = ++totals.runs;
  const deployment = await start();
  let clients: StreamClient[] = [];
  let scenario: ChaosScenario<C> | null = null;
  try {
    clients = await setUp(deployment, options);
    scenario = scenarioOf(deployment, clients, run);
    const unbroken = <T>(work: Promise<T>): Promise<T> =>
      deployment.broken === undefined ? work : Promise.race([work, deployment.broken]);
    for (const [i, step] of steps.entries()) {
      const began = Date.now();
      await unbroken(scenario.step(step));
      if (settings.verbose) {
        console.log(
          `run ${run} step ${i}: ${step.chaos.kind}, ${step.sends.length} sends, ${
            Date.now() - began
          } ms`,
        );
      }
    }
    const streams = await unbroken(scenario.settle());
    for (const record of scenario.records) {
      if (record.acked) continue;
      if (clients.some((c) => c.observed.some((e) => tagOf(e.message) === record.tag))) {
        totals.unacknowledgedSeen++;
      }
    }
    const problems = [...deployment.problems, ...check(clients, scenario.records, streams)];
    if (problems.length > 0 && settings.dump !== undefined) {
      await dumpRun(settings.dump, run, problems, scenario.records, clients, streams);
    }
    if (problems.length > 0) {
      throw new ChaosProblems(
        `${problems.length} problem(s) in run ${run}:\n` + problems.slice(0, 40).join("\n"),
      );
    }
  } catch (error) {
    console.error(
      `chaos run ${run} failed; gateway output:\n${deployment.output().slice(-20_000)}`,
    );
    if (settings.dump !== undefined && !(error instanceof ChaosProblems)) {
      // Failed before the end (a send unanswered, a client not live): what it saw so far.
      await dumpRun(settings.dump, run, [String(error)], scenario?.records ?? [], clients);
    }
    throw error;
  } finally {
    for (const client of clients) {
      await client.stop();
      addClientCounts(totals, client);
    }
    await deployment.dispose();
  }
}

/** The property does not hold (the problems are the message). */
class ChaosProblems extends Error {}

/**
 * Writes what a failed run saw to `path` (CHAOS_DUMP): the problems, every send's record, each
 * client's events (seq, tag, to, channel) and each stream as the history route served it.
 */
async function dumpRun(
  path: string,
  run: number,
  problems: string[],
  records: SendRecord[],
  clients: StreamClient[],
  streams = new Map<string, StreamEvent[]>(),
): Promise<void> {
  const event = (seq: number, message: Message, channel?: string) => ({
    seq,
    tag: tagOf(message),
    to: message.to,
    from: message.from,
    clientMessageId: message.clientMessageId,
    ...(channel === undefined ? {} : { channel }),
  });
  const dump = {
    run,
    problems,
    records: records.map((r) => ({
      tag: r.tag,
      kind: r.kind,
      copies: [...r.copies],
      acked: r.acked,
      ackSeqs: Object.fromEntries(r.ackSeqs),
    })),
    clients: clients.map((c) => ({
      name: c.name,
      uid: c.uid,
      live: c.live,
      position: { epoch: c.epoch, seq: c.seq },
      unanswered: c.unanswered,
      counters: c.counters,
      observed: c.observed.map((e) => event(e.seq, e.message, e.channel)),
    })),
    streams: Object.fromEntries(
      [...streams].map(([uid, events]) => [
        uid,
        events.map((e) => event(e.seq, e.message)),
      ]),
    ),
  };
  await Deno.writeTextFile(path, JSON.stringify(dump, null, 1));
  console.error(`chaos run ${run}: what it saw is in ${path}`);
}

/** Runs the property over `settings.runs` scenarios (or the one `settings.path` names). */
export async function assertChaos<C>(
  name: string,
  settings: ChaosSettings,
  scenarios: fc.Arbitrary<Step<C>[]>,
  runOne: (steps: Step<C>[]) => Promise<void>,
): Promise<void> {
  const { seed, path } = settings;
  console.log(`${name} seed ${seed}${path === undefined ? "" : ` path ${path}`}`);
  await fc.assert(fc.asyncProperty(scenarios, runOne), {
    seed,
    ...(path === undefined ? {} : { path }),
    // With a path, fast-check starts at the failing run: that one run replays it.
    numRuns: path === undefined ? settings.runs : 1,
    endOnFailure: !settings.shrink,
  });
}
