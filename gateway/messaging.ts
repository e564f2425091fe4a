/**
 * The one write path of messages, for every producer: the server API (to users, to a group),
 * a user's `send` frame and a user's HTTP send. Each builds the message once, appends it to
 * every receiver's stream (and to the sender's, for the sender's other sessions), waits until
 * the store has all of it, and only then answers; the streams deliver it to the sockets when
 * their write lands (user_state.ts).
 *
 * Groups are stored as member lists and a group message is copied into each member's stream:
 * resume and history then read one stream per user, and a member added later does not see
 * what was sent before (bench/comparisons.md has the measurement behind the choice).
 */
import type {
  Message,
  MessageContent,
  ReceiverType,
  SendMessageReply,
  UserSend,
  UserSendReply,
} from "../contract/mod.ts";
import type { Clock } from "./clock.ts";
import { toBase64Url } from "./credential.ts";
import { sha256 } from "./hmac_sha256.ts";
import { LOST_USER, OwnedElsewhere } from "./cluster/port.ts";
import { GatewayError } from "./errors.ts";
import type { GatewayStore } from "./store/types.ts";
import type { EventOrigin, LiveSession, SendOutcome, UserState, UserStates } from "./user_state.ts";

/**
 * Largest message, as JSON. Deno KV keeps at most 64 KiB per value; a message is stored whole
 * in each receiver's stream.
 */
export const MAX_MESSAGE_BYTES = 60_000;

/** Recent client ids remembered in memory per user (older ones are found in the store). */
const SENDS_IN_MEMORY = 256;

const utf8 = new TextEncoder();

/** What a send needs of an appended event: its seq, and how many connections it reached. */
interface Receipt {
  seq: number;
  deliveredTo: number;
}

/**
 * In a cluster: appends `[uid, body, once?]` on the node holding those users; their receipts.
 * `once` names a user's send (see `receivedKey`): that copy is stored at most once per receiver.
 */
export type RemoteAppend = (
  node: string,
  appId: string,
  items: RemoteItem[],
) => Promise<Array<[number, number]>>;

export type RemoteItem = [uid: string, body: string, once?: string];

/** Where a receiver's stream is written: its state object here, or the node that holds it. */
type Holder = UserState | OwnedElsewhere;

/**
 * The appends of one send: local ones at once (in the order given), remote ones batched per
 * node; `commit` resolves once all are durable, here and there.
 */
class AppendBatch {
  readonly #remote = new Map<string, { items: RemoteItem[]; receipts: Receipt[] }>();
  readonly #local: UserState[] = [];
  #settle!: { resolve: () => void; reject: (error: unknown) => void };
  /** Settles with `commit`: one promise for every copy of the batch to wait on. */
  readonly committed = new Promise<void>((resolve, reject) => {
    this.#settle = { resolve, reject };
  });

  constructor() {
    // Its failure is the commit's, answered there: waiting on it is optional.
    this.committed.catch(() => {});
  }

  add(holder: Holder, body: string, origin?: EventOrigin): Receipt {
    if (!(holder instanceof OwnedElsewhere)) {
      this.#local.push(holder);
      return holder.append(body, origin);
    }
    return this.addRemote(holder, [holder.uid, body]);
  }

  /** A copy for a user held by another node, sent there at `commit`. */
  addRemote(holder: OwnedElsewhere, item: RemoteItem): Receipt {
    let batch = this.#remote.get(holder.node);
    if (batch === undefined) this.#remote.set(holder.node, batch = { items: [], receipts: [] });
    const receipt = { seq: 0, deliveredTo: 0 };
    batch.items.push(item);
    batch.receipts.push(receipt);
    return receipt;
  }

  /**
   * The batch will not be committed (a step before failed): what it appended is written anyway
   * with the next group commit, so those waiting on `committed` learn their write is in doubt.
   */
  abandon(error: unknown): void {
    this.#settle.reject(error);
  }

  /** A local state whose write this batch waits for (and checks for a lost claim). */
  track(state: UserState): void {
    this.#local.push(state);
  }

  async commit(users: UserStates, appId: string, remote: RemoteAppend | undefined): Promise<void> {
    try {
      await this.#commit(users, appId, remote);
      this.#settle.resolve();
    } catch (error) {
      this.#settle.reject(error);
      throw error;
    }
  }

  async #commit(users: UserStates, appId: string, remote: RemoteAppend | undefined): Promise<void> {
    const calls = [...this.#remote].map(async ([node, batch]) => {
      if (remote === undefined) throw new OwnedElsewhere(node, appId, batch.items[0][0]);
      const answers = await remote(node, appId, batch.items);
      answers.forEach(([seq, deliveredTo], i) => {
        batch.receipts[i].seq = seq;
        batch.receipts[i].deliveredTo = deliveredTo;
      });
    });
    const settled = await Promise.allSettled([users.durable(), ...calls]);
    const failed = settled.find((r) => r.status === "rejected");
    if (failed !== undefined) {
      const reason = failed.reason;
      throw reason instanceof GatewayError ? reason : new GatewayError(
        "ERR_SERVICE_UNAVAILABLE",
        "A node of the cluster holding some receivers did not confirm in time that it stored " +
          "the message: it may be stored for them or not (a user's retry with the same " +
          "clientMessageId is answered from the first).",
      );
    }
    // A write refused because another node took a user stored nothing of it.
    if (this.#local.some((state) => state.lost)) {
      throw new GatewayError("ERR_SERVICE_UNAVAILABLE", LOST_USER);
    }
  }
}

export class Messaging {
  readonly #store: GatewayStore;
  readonly #users: UserStates;
  readonly #clock: Clock;
  /**
   * Users known to exist, per app. Users are never deleted, so a positive answer stays true;
   * the store is asked once per user, not once per send.
   */
  readonly #existing = new Map<string, Set<string>>();

  /** Writes in doubt (see `#whenWritten`), and the one loop that waits for them. */
  #inDoubt: Array<{ resolve: () => void; reject: (error: unknown) => void }> = [];
  #inDoubtLoop: Promise<void> | null = null;

  /** In a cluster: how receivers held by other nodes get their copies (set by the server). */
  remote: RemoteAppend | undefined;

  constructor(store: GatewayStore, users: UserStates, clock: Clock) {
    this.#store = store;
    this.#users = users;
    this.#clock = clock;
  }

  /**
   * In a cluster: another node's send appends these copies to users this node holds. One hop
   * only: a user that moved on meanwhile fails the call (the sender is told to try again). A
   * copy named by `once` that is stored already is answered with its seq, not stored again.
   */
  async appendHere(appId: string, items: RemoteItem[]): Promise<Array<[number, number]>> {
    return await this.#withStates(appId, items.map(([uid]) => uid), async (holders) => {
      const batch = new AppendBatch();
      let receipts: Receipt[];
      try {
        receipts = await Promise.all(items.map(([, body, once], i) => {
          const holder = holders[i] as UserState;
          if (once === undefined) return batch.add(holder, body);
          batch.track(holder);
          return this.#appendOnce(holder, body, once, batch.committed);
        }));
      } catch (error) {
        batch.abandon(error);
        throw error;
      }
      await batch.commit(this.#users, appId, undefined);
      return receipts.map((r): [number, number] => [r.seq, r.deliveredTo]);
    }, false);
  }

  /**
   * Appends a user's send to one receiver's stream unless it is there already (a retry of a
   * send whose first attempt stored some copies): the receiver's send records remember each such
   * copy under `once`. Resolves with the copy's receipt once it is appended (not yet durable:
   * the caller commits `committed`'s batch).
   */
  async #appendOnce(
    receiver: UserState,
    body: string,
    once: string,
    committed: Promise<void>,
  ): Promise<Receipt> {
    const inFlight = receiver.sends.get(once);
    if (inFlight !== undefined) return { seq: (await inFlight).seq, deliveredTo: 0 };
    const kept = await this.#store.getSendRecord(receiver.appId, receiver.uid, once);
    if (kept !== null) return { seq: kept.seq, deliveredTo: 0 };
    // Another call for the same copy may have appended it while the store was read.
    const raced = receiver.sends.get(once);
    if (raced !== undefined) return { seq: (await raced).seq, deliveredTo: 0 };
    const event = receiver.append(body);
    // Only the seq is needed to answer a retry: the body is the sender's record's.
    receiver.recordSend({ clientMessageId: once, body: "", seq: event.seq, at: event.at });
    const outcome: SendOutcome = { body: "", seq: event.seq, duplicate: false };
    this.#remember(receiver, once, committed.then(() => outcome), { outcome });
    return event;
  }

  /** The uids of `uids` that do not exist. */
  async missingUsers(appId: string, uids: readonly string[]): Promise<string[]> {
    let known = this.#existing.get(appId);
    if (known === undefined) this.#existing.set(appId, known = new Set());
    const unknown = uids.filter((uid) => !known.has(uid));
    if (unknown.length === 0) return unknown;
    const found = await Promise.all(unknown.map((uid) => this.#store.getUser(appId, uid)));
    const missing: string[] = [];
    unknown.forEach((uid, i) => {
      if (found[i] === null) missing.push(uid);
      else known.add(uid);
    });
    return missing;
  }

  /** Throws ERR_UID_NOT_FOUND naming every uid of `uids` that does not exist. */
  async requireUsers(appId: string, uids: readonly string[]): Promise<void> {
    const missing = await this.missingUsers(appId, uids);
    if (missing.length > 0) {
      // Nothing is sent unless every recipient exists: a typo must not half-deliver.
      throw new GatewayError(
        "ERR_UID_NOT_FOUND",
        `No user ${missing.map((uid) => `'${uid}'`).join(", ")} exists.`,
        { uids: missing },
      );
    }
  }

  /** The members of a group; throws ERR_GUID_NOT_FOUND. */
  async membersOf(appId: string, guid: string): Promise<string[]> {
    const group = await this.#store.getGroup(appId, guid);
    if (group === null) throw new GatewayError("ERR_GUID_NOT_FOUND", `No group '${guid}' exists.`);
    return group.members;
  }

  /** The server API's send to users: one copy per recipient, each with its own `to`. */
  async sendFromServer(
    appId: string,
    to: readonly string[],
    from: string | null,
    content: MessageContent,
  ): Promise<SendMessageReply> {
    await this.requireUsers(appId, from === null ? to : [...to, from]);
    const id = newMessageId();
    const sentAt = this.#clock.now();
    // The copies differ in `to` only: the rest is encoded once (the same JSON as the whole
    // message's, key order included).
    const common: Omit<Message, "to" | "sentAt"> = { ...content, id, from, receiverType: "user" };
    const head = JSON.stringify(common).slice(0, -1);
    return await this.#withStates(appId, from === null ? to : [...to, from], async (states) => {
      const batch = new AppendBatch();
      const recipients = to.map((uid, i) => {
        const body = checkedSize(`${head},"to":${JSON.stringify(uid)},"sentAt":${sentAt}}`);
        const event = batch.add(states[i], body);
        // The sender's other sessions see what was sent on their behalf.
        if (from !== null && from !== uid) batch.add(states[to.length], body);
        return { uid, event };
      });
      await batch.commit(this.#users, appId, this.remote);
      return { id, sentAt, recipients: recipients.map(receipt) };
    });
  }

  /** The server API's send to a group: a copy in every member's stream. */
  async sendToGroup(
    appId: string,
    guid: string,
    from: string | null,
    content: MessageContent,
  ): Promise<SendMessageReply> {
    const members = await this.membersOf(appId, guid);
    if (from !== null && !members.includes(from)) {
      throw new GatewayError("ERR_NOT_A_MEMBER", `'${from}' is not a member of '${guid}'.`);
    }
    const id = newMessageId();
    const sentAt = this.#clock.now();
    const message: Message = { ...content, id, from, receiverType: "group", to: guid, sentAt };
    const body = encodeMessage(message);
    return await this.#withStates(appId, members, async (states) => {
      const batch = new AppendBatch();
      const recipients = states.map((state, i) => ({
        uid: members[i],
        event: batch.add(state, body),
      }));
      await batch.commit(this.#users, appId, this.remote);
      return {
        id,
        sentAt,
        // The sender's own copy is for its other sessions, not a recipient's.
        recipients: recipients.filter((r) => r.uid !== from).map(receipt),
      };
    });
  }

  /**
   * A logged-in user's send (frame or HTTP). Idempotent by `clientMessageId`: a retry answers
   * with the first result, also after a restart. The sending session gets its own copy as
   * `sent` (over its socket, in stream order) instead of a `message`.
   */
  sendFromUser(
    sender: UserState,
    session: LiveSession,
    send: UserSend,
    frameId?: string | number,
  ): Promise<SendOutcome> {
    const cid = send.clientMessageId;
    const earlier = sender.sends.get(cid);
    if (earlier !== undefined) {
      return earlier.then(async (outcome) => {
        await this.#redeliver(sender, send, outcome);
        return { ...outcome, duplicate: true };
      });
    }
    // The sender's state object stays in memory until its copy is appended: a sender without a
    // connection could otherwise be evicted while the send waits on the store, and the object
    // loaded next for the same stream would hand out the same seqs again.
    sender.pin();
    const staged: { outcome?: SendOutcome } = {};
    const work = this.#sendAsUser(sender, session, send, staged, frameId)
      .finally(() => sender.unpin());
    this.#remember(sender, cid, work, staged);
    return work;
  }

  /**
   * Remembers a send (or a receiver's copy of one) under `key` for idempotent retries. A refused
   * or failed one is forgotten (it created nothing, and may be tried again), except one whose
   * write is in doubt: appended (`staged`), then not confirmed in time. Its write is retried
   * and may still land, so a retry waits for it instead of appending the message again.
   */
  #remember(
    state: UserState,
    key: string,
    work: Promise<SendOutcome>,
    staged: { outcome?: SendOutcome },
  ): void {
    state.sends.set(key, work);
    if (state.sends.size > SENDS_IN_MEMORY) state.sends.delete(state.sends.keys().next().value!);
    work.catch(() => {
      if (state.sends.get(key) !== work) return;
      const outcome = staged.outcome;
      if (outcome === undefined || state.lost) return void state.sends.delete(key);
      const eventually = this.#whenWritten().then(() => {
        // Given up (another node holds the user now): nothing of it was written.
        if (state.lost) throw new GatewayError("ERR_SERVICE_UNAVAILABLE", LOST_USER);
        return outcome;
      });
      state.sends.set(key, eventually);
      eventually.catch(() => {
        if (state.sends.get(key) === eventually) state.sends.delete(key);
      });
    });
  }

  /**
   * Resolves once everything marked so far is written (rejects only when the writer closed).
   * One loop serves every write in doubt, trying at most once a second (backing off to ten):
   * thousands of sends in doubt while the store is away cost one attempt, not thousands.
   */
  #whenWritten(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#inDoubt.push({ resolve, reject });
      this.#inDoubtLoop ??= this.#writeInDoubt().finally(() => this.#inDoubtLoop = null);
    });
  }

  async #writeInDoubt(): Promise<void> {
    const runtime = this.#users.runtime;
    for (let attempt = 0; this.#inDoubt.length > 0;) {
      // Each attempt's waiter comes after every waiting write was marked: it covers them all.
      const waiting = this.#inDoubt;
      this.#inDoubt = [];
      try {
        await runtime.writer.durable();
        for (const w of waiting) w.resolve();
        attempt = 0;
      } catch (error) {
        if (runtime.writer.closed) {
          for (const w of waiting) w.reject(error);
          continue;
        }
        this.#inDoubt = [...waiting, ...this.#inDoubt];
        const wait = Math.min(1_000 * 2 ** attempt++, 10_000);
        await new Promise<void>((resolve) => runtime.clock.setTimer(resolve, wait));
      }
    }
  }

  async #sendAsUser(
    sender: UserState,
    session: LiveSession,
    send: UserSend,
    staged: { outcome?: SendOutcome },
    frameId?: string | number,
  ): Promise<SendOutcome> {
    const appId = sender.appId;
    const kept = await this.#store.getSendRecord(appId, sender.uid, send.clientMessageId);
    if (kept !== null) {
      const outcome = { body: kept.body, seq: kept.seq, duplicate: true };
      await this.#redeliver(sender, send, outcome);
      return outcome;
    }
    const receivers = await this.#receiversOf(appId, sender.uid, send.receiverType, send.receiver);
    const message: Message = {
      ...send.message,
      // Derived from the client's id: should a crash cut a large send in half and the retry
      // append it again, receivers can still tell the two copies are one message.
      id: userMessageId(appId, sender.uid, send.clientMessageId),
      from: sender.uid,
      receiverType: send.receiverType,
      to: send.receiver,
      clientMessageId: send.clientMessageId,
      sentAt: this.#clock.now(),
    };
    const body = encodeMessage(message);
    const others = receivers.filter((uid) => uid !== sender.uid);
    const origin: EventOrigin = { session, frameId };
    return await this.#withStates(appId, others, async (states) => {
      const batch = new AppendBatch();
      if (this.remote === undefined) { for (const state of states) batch.add(state, body); }
      else {
        // In a cluster every receiver's copy is stored once (a retry finds it): the copies held
        // by other nodes first, then the local ones with the sender's copy and record, in one
        // write. So a send is recorded as done only when every copy is stored, and `sent` is
        // never given for a send that is not.
        const once = receivedKey(sender.uid, send.clientMessageId);
        const elsewhere = states.filter((state) => state instanceof OwnedElsewhere);
        if (elsewhere.length > 0) await this.#deliverOnce(appId, elsewhere, body, once);
        if (sender.lost) throw new GatewayError("ERR_SERVICE_UNAVAILABLE", LOST_USER);
        const here = states.filter((state) => !(state instanceof OwnedElsewhere));
        await this.#appendEachOnce(batch, here, body, once);
      }
      const own = sender.append(body, origin);
      batch.track(sender);
      sender.recordSend({
        clientMessageId: send.clientMessageId,
        body,
        seq: own.seq,
        at: own.at,
      });
      staged.outcome = { body, seq: own.seq, duplicate: false };
      await batch.commit(this.#users, appId, undefined);
      return { body, seq: own.seq, duplicate: false };
    });
  }

  /**
   * Stores a user's send for every receiver (`holders`), each copy at most once: on this node
   * through the receiver's send records, on the others by their holders, the same way.
   */
  async #deliverOnce(appId: string, holders: Holder[], body: string, once: string): Promise<void> {
    const batch = new AppendBatch();
    await this.#appendEachOnce(batch, holders, body, once);
    await batch.commit(this.#users, appId, this.remote);
  }

  /** Adds each holder's copy to `batch` unless stored already (see `#appendOnce`). */
  async #appendEachOnce(
    batch: AppendBatch,
    holders: Holder[],
    body: string,
    once: string,
  ): Promise<void> {
    try {
      await Promise.all(holders.map((holder) => {
        if (holder instanceof OwnedElsewhere) {
          return batch.addRemote(holder, [holder.uid, body, once]);
        }
        batch.track(holder);
        return this.#appendOnce(holder, body, once, batch.committed);
      }));
    } catch (error) {
      batch.abandon(error);
      throw error;
    }
  }

  /**
   * A retry of a send already recorded (in memory or in the store). In a cluster, its copies
   * are stored again where they are missing (each at most once): a first attempt may have been
   * cut between them, by a node that died or a user that moved.
   */
  async #redeliver(sender: UserState, send: UserSend, outcome: SendOutcome): Promise<void> {
    if (this.remote === undefined) return;
    const appId = sender.appId;
    const receivers = await this.#receiversOf(appId, sender.uid, send.receiverType, send.receiver)
      .catch(() => [] as string[]);
    const others = receivers.filter((uid) => uid !== sender.uid);
    await this.#withStates(
      appId,
      others,
      (states) =>
        this.#deliverOnce(
          appId,
          states,
          outcome.body,
          receivedKey(sender.uid, send.clientMessageId),
        ),
    );
  }

  /** Who receives a user's message: the user, or every member of the group. */
  async #receiversOf(
    appId: string,
    sender: string,
    receiverType: ReceiverType,
    receiver: string,
  ): Promise<string[]> {
    if (receiverType === "user") {
      await this.requireUsers(appId, [receiver]);
      return [receiver];
    }
    const members = await this.membersOf(appId, receiver);
    if (!members.includes(sender)) {
      throw new GatewayError("ERR_NOT_A_MEMBER", `'${sender}' is not a member of '${receiver}'.`);
    }
    return members;
  }

  /**
   * Runs `work` with the state objects of `uids` (in memory for connected users, loaded once
   * for the others, whose streams still count), each pinned until it is done so that none is
   * evicted while the send waits for the store.
   */
  async #withStates<T>(
    appId: string,
    uids: readonly string[],
    work: (states: Holder[]) => Promise<T>,
    elsewhere = this.remote !== undefined,
  ): Promise<T> {
    this.#users.requireWritable();
    const pinned = (state: UserState) => (state.pin(), state);
    const settled = await Promise.allSettled(uids.map((uid) => {
      const held = this.#users.peek(appId, uid);
      return held !== undefined ? pinned(held) : this.#users.get(appId, uid).then(pinned);
    }));
    const states = settled.flatMap((r) => r.status === "fulfilled" ? [r.value] : []);
    try {
      // In a cluster a receiver held by another node gets its copy there.
      const holders = settled.map((r): Holder => {
        if (r.status === "fulfilled") return r.value;
        if (elsewhere && r.reason instanceof OwnedElsewhere) return r.reason;
        throw r.reason;
      });
      return await work(holders);
    } finally {
      for (const state of states) state.unpin();
    }
  }
}

/** The answer to a user's send, from its outcome. */
export function userSendReply(outcome: SendOutcome): UserSendReply {
  return { message: JSON.parse(outcome.body), seq: outcome.seq, duplicate: outcome.duplicate };
}

function receipt({ uid, event }: { uid: string; event: Receipt }) {
  return { uid, seq: event.seq, deliveredTo: event.deliveredTo };
}

/** A message's JSON, refused when a stream could not store it. */
function encodeMessage(message: Message): string {
  return checkedSize(JSON.stringify(message));
}

/** `body`, refused when a stream could not store it. */
function checkedSize(body: string): string {
  if (body.length * 3 > MAX_MESSAGE_BYTES && utf8.encode(body).length > MAX_MESSAGE_BYTES) {
    throw new GatewayError("ERR_PAYLOAD_TOO_LARGE", undefined, {
      limitBytes: MAX_MESSAGE_BYTES,
    });
  }
  return body;
}

/**
 * The name of a receiver's copy of a user's send among the receiver's send records (cluster
 * only). It starts with a control character, which the gateway never writes in a client's id of
 * its own; a client that sends one anyway only makes its own send look done.
 */
function receivedKey(sender: string, clientMessageId: string): string {
  return `\u0001${sender}\u0001${clientMessageId}`;
}

function userMessageId(appId: string, uid: string, clientMessageId: string): string {
  const digest = sha256(utf8.encode(`${appId}\u0000${uid}\u0000${clientMessageId}`));
  return `msg_${toBase64Url(digest.subarray(0, 18))}`;
}

function newMessageId(): string {
  return `msg_${toBase64Url(crypto.getRandomValues(new Uint8Array(18)))}`;
}
