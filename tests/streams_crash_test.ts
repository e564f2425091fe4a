/**
 * The durable stream across `kill -9` of a real gateway process: every message the gateway
 * acknowledged before the crash is replayed to a resume after a restart on the same Deno KV
 * file, exactly once and in order, and the stream's seq goes on after it with no gap (a seq
 * handed out but never written may be handed out again, since nobody saw it).
 */
import assert from "node:assert/strict";
import {
  closeCodeTable,
  type Message,
  type SendMessageReply,
  type ServerFrameOf,
  type UserSendReply,
} from "../contract/mod.ts";
import { DEV_APP } from "../gateway/config.ts";
import { TestSocket } from "./support/harness.ts";
import { devLogin, GatewayProcess } from "./support/process.ts";

/** A 1 s liveness window, so that the deadline closes the background connection quickly. */
const ENV: Record<string, string> = {
  LIVENESS_WINDOW_MS: "1000",
  HEARTBEAT_INTERVAL_MS: "400",
  PONG_TIMEOUT_MS: "200",
  IDLE_TIMEOUT_MS: "20000",
  LOG_LEVEL: "warn",
  RATE_LIMIT_HTTP_PER_SEC: "5000",
};

const text = (value: string) => ({ kind: "text" as const, text: value });

function textOf(message: Message): string {
  return message.kind === "text" ? message.text : `custom:${message.customType}`;
}

async function post(
  url: string,
  path: string,
  headers: Record<string, string>,
  body: unknown,
): Promise<unknown> {
  const res = await fetch(`${url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  const reply = await res.json();
  assert.equal(res.status, 200, JSON.stringify(reply));
  return reply;
}

/** The server API's send to one user; its seq in that user's stream once acknowledged. */
async function serverSend(url: string, uid: string, value: string): Promise<number> {
  const reply = await post(url, `/v1/apps/${DEV_APP.appId}/messages`, {
    apikey: DEV_APP.apiKey,
  }, { to: [uid], message: text(value) }) as SendMessageReply;
  return reply.recipients[0].seq;
}

/** A user's HTTP send to another user. */
async function userSend(
  url: string,
  credential: string,
  receiver: string,
  clientMessageId: string,
  value: string,
): Promise<UserSendReply> {
  return await post(url, "/v1/session/messages", { authorization: `Bearer ${credential}` }, {
    clientMessageId,
    receiverType: "user",
    receiver,
    message: text(value),
  }) as UserSendReply;
}

/** The next `count` frames: each a `message`, as `[seq, text]`. */
async function nextMessages(socket: TestSocket, count: number): Promise<Array<[number, string]>> {
  const frames: ServerFrameOf<"message">[] = [];
  for (let i = 0; i < count; i++) frames.push(await socket.next("message"));
  return frames.map((f) => [f.seq, textOf(f.message)]);
}

/** A gateway process and its successors on one store; disposing kills them and removes it. */
class Chain implements AsyncDisposable {
  readonly #all: GatewayProcess[];
  current: GatewayProcess;

  private constructor(first: GatewayProcess) {
    this.#all = [first];
    this.current = first;
  }

  static async start(): Promise<Chain> {
    return new Chain(await GatewayProcess.start({ env: ENV }));
  }

  async crashAndRestart(): Promise<GatewayProcess> {
    await this.current.crash();
    this.current = await this.current.restart();
    this.#all.push(this.current);
    return this.current;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const proc of this.#all) if (await proc.alive()) await proc.crash();
    await this.#all[0].cleanup();
  }
}

Deno.test("kill -9 after acknowledged sends: a resume recovers each exactly once, in order, and the seq goes on", async () => {
  await using chain = await Chain.start();
  const before = chain.current;
  const receiver = await devLogin(before.url, "superhero1", "manual");
  const sender = await devLogin(before.url, "superhero2", "auto");
  const senderEpoch = await streamEpochOf(before, sender.credential);

  // A manual-mode connection in background, closed by its deadline after it saw seq 1.
  const first = await TestSocket.connect(before, receiver.credential);
  const epoch = first.connected.stream.epoch;
  assert.equal(await serverSend(before.url, "superhero1", "seen"), 1);
  assert.deepEqual(await nextMessages(first.socket, 1), [[1, "seen"]]);
  first.socket.send({ type: "app_state", state: "background" });
  assert.notEqual((await first.socket.next("state")).backgroundDeadline, null);
  assert.equal((await first.socket.next("closing")).reason, "liveness_timeout");
  assert.equal((await first.socket.closed).code, closeCodeTable.liveness_timeout);

  // Acknowledged while the user is away, by the server API and by another user.
  const acknowledged: Array<[number, string]> = [];
  for (let i = 1; i <= 6; i++) {
    const value = `acknowledged ${i}`;
    if (i % 3 === 0) {
      await userSend(before.url, sender.credential, "superhero1", `c${i}`, value);
      acknowledged.push([i + 1, value]);
    } else {
      acknowledged.push([await serverSend(before.url, "superhero1", value), value]);
    }
  }
  assert.deepEqual(acknowledged.map(([seq]) => seq), [2, 3, 4, 5, 6, 7]);

  const after = await chain.crashAndRestart();
  const { socket, connected } = await TestSocket.connect(after, receiver.credential, {
    resume: { epoch, seq: 1 },
  });
  await using _ = socket;
  assert.deepEqual(connected.stream, { epoch, seq: 7, recovered: true, replayed: 6 });
  assert.deepEqual(await nextMessages(socket, 6), acknowledged);

  // The stream goes on at 8, live, with nothing before it.
  assert.equal(await serverSend(after.url, "superhero1", "after the crash"), 8);
  assert.deepEqual(await nextMessages(socket, 1), [[8, "after the crash"]]);
  // The sender's stream kept its own sends too (the copies for its other sessions).
  const senderView = await TestSocket.connect(after, sender.credential, {
    resume: { epoch: senderEpoch, seq: 0 },
  });
  await using _sender = senderView.socket;
  assert.deepEqual(senderView.connected.stream, {
    epoch: senderEpoch,
    seq: 2,
    recovered: true,
    replayed: 2,
  });
  assert.deepEqual(await nextMessages(senderView.socket, 2), [
    [1, "acknowledged 3"],
    [2, "acknowledged 6"],
  ]);
});

/** The epoch of a user's stream, as a `connected` frame tells it. */
async function streamEpochOf(proc: GatewayProcess, credential: string): Promise<string> {
  const { socket, connected } = await TestSocket.connect(proc, credential);
  await using _ = socket;
  return connected.stream.epoch;
}

Deno.test("kill -9 while sends are in flight: every acknowledged message survives, the stream has no gap, the seq goes on", async () => {
  await using chain = await Chain.start();
  const before = chain.current;
  const receiver = await devLogin(before.url, "superhero1", "auto");
  const epoch = await streamEpochOf(before, receiver.credential);

  // Four senders at once until the gateway dies; what it acknowledged is what must survive.
  const acknowledged = new Map<number, string>();
  let killed = false;
  const lanes = [0, 1, 2, 3].map(async (lane) => {
    for (let i = 0; !killed; i++) {
      const value = `lane ${lane} #${i}`;
      try {
        acknowledged.set(await serverSend(before.url, "superhero1", value), value);
      } catch {
        return; // the gateway is gone: this send was never acknowledged
      }
    }
  });
  while (acknowledged.size < 60) await new Promise((resolve) => setTimeout(resolve, 5));
  const after = await chain.crashAndRestart().finally(() => killed = true);
  await Promise.all(lanes);
  const lastAcknowledged = Math.max(...acknowledged.keys());

  const { socket, connected } = await TestSocket.connect(after, receiver.credential, {
    resume: { epoch, seq: 0 },
  });
  await using _ = socket;
  const head = connected.stream.seq;
  assert.equal(connected.stream.recovered, true);
  assert.equal(connected.stream.replayed, head);
  assert.ok(head >= lastAcknowledged, `head ${head} holds every acknowledged seq`);
  const replayed = await nextMessages(socket, head);
  assert.deepEqual(replayed.map(([seq]) => seq), replayed.map((_, i) => i + 1), "no gap");
  for (const [seq, value] of acknowledged) assert.equal(replayed[seq - 1][1], value, `seq ${seq}`);
  assert.equal(new Set(replayed.map(([, value]) => value)).size, head, "no message twice");

  assert.equal(await serverSend(after.url, "superhero1", "after the crash"), head + 1);
  assert.deepEqual(await nextMessages(socket, 1), [[head + 1, "after the crash"]]);
});
