/**
 * A group commit too large for one Deno KV commit (a send to a large group, a burst of sends)
 * is written in several commits. A `kill -9` between two of them must leave all of it or none
 * of it: a user's send cut in the middle would otherwise leave some receivers with the message
 * and the sender without its send record, and the client's retry (same clientMessageId) would
 * create a second message for those receivers.
 *
 * The write goes to a redo log first (gateway/store/kv.ts), whose marker, committed last, makes
 * it count; a compaction later copies it to the per-user rows. The process kills itself at an
 * exact commit (tests/support/kill_before_commit.ts): before the compaction's commit that writes
 * the send record (the log counts: the next start-up applies it), and before the commit of the
 * marker (nothing of it counts yet).
 */
import assert from "node:assert/strict";
import { HistoryPageSchema, UserSendReplySchema } from "../contract/mod.ts";
import { DEV_APP } from "../gateway/config.ts";
import { GatewayProcess } from "./support/process.ts";

const APP = DEV_APP.appId;
const API_HEADERS = { apikey: DEV_APP.apiKey, "content-type": "application/json" };
/** 12 copies of a 50 KB message: more than one KV commit holds (gateway/store/kv.ts). */
const MEMBERS = Array.from({ length: 12 }, (_, i) => `member${i}`);
const SEND = {
  clientMessageId: "the-only-one",
  receiverType: "group",
  receiver: "crowd",
  message: { kind: "custom", customType: "blob", data: { pad: "x".repeat(50_000) } },
};

async function call(url: string, path: string, init: RequestInit = {}): Promise<Response> {
  return await fetch(`${url}${path}`, init);
}

async function setUp(url: string): Promise<Map<string, string>> {
  for (const uid of MEMBERS) {
    const res = await call(url, `/v1/apps/${APP}/users`, {
      method: "POST",
      headers: API_HEADERS,
      body: JSON.stringify({ uid }),
    });
    assert.equal(res.status, 201, await res.text());
  }
  const group = await call(url, `/v1/apps/${APP}/groups`, {
    method: "POST",
    headers: API_HEADERS,
    body: JSON.stringify({ guid: "crowd", members: MEMBERS }),
  });
  assert.equal(group.status, 201, await group.text());
  const credentials = new Map<string, string>();
  for (const uid of MEMBERS) {
    const res = await call(url, `/v1/apps/${APP}/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ uid, authKey: DEV_APP.authKey, mode: "manual" }),
    });
    const body = await res.json();
    assert.equal(res.status, 200, JSON.stringify(body));
    credentials.set(uid, body.session.credential);
  }
  return credentials;
}

function send(url: string, credential: string): Promise<Response> {
  return call(url, "/v1/session/messages", {
    method: "POST",
    headers: { authorization: `Bearer ${credential}`, "content-type": "application/json" },
    body: JSON.stringify(SEND),
  });
}

/** The ids of the messages with the send's clientMessageId in a user's stream. */
async function copiesIn(url: string, credential: string): Promise<string[]> {
  const res = await call(url, "/v1/session/events?after=0&limit=100", {
    headers: { authorization: `Bearer ${credential}` },
  });
  const page = HistoryPageSchema.parse(await res.json());
  return page.events
    .filter((event) => event.message.clientMessageId === SEND.clientMessageId)
    .map((event) => event.message.id);
}

async function killedSendThenRetry(killBefore: "sent" | "redo"): Promise<void> {
  const first = await GatewayProcess.start({
    main: "tests/support/kill_before_commit.ts",
    env: killBefore === "sent"
      // A compaction after every write: the first one holding the send record is this send's.
      ? { KILL_BEFORE_COMMIT_OF: "sent", KV_COMPACT_AFTER_BYTES: "0", LOG_LEVEL: "error" }
      // Only the marker of a log written in several commits is committed alone.
      : { KILL_BEFORE_COMMIT_OF: "redo", KILL_BEFORE_COMMIT_ONLY: "1", LOG_LEVEL: "error" },
  });
  let second: GatewayProcess | undefined;
  try {
    const credentials = await setUp(first.url);
    const sender = credentials.get(MEMBERS[0])!;
    // The process dies in the middle of this send's write (or, for the compaction, right after
    // its answer at the latest).
    const answer = await send(first.url, sender).then(
      async (res) => UserSendReplySchema.parse(await res.json()),
      () => null,
    );
    if (killBefore === "redo") assert.equal(answer, null, "no answer to a send that never counted");
    assert.equal((await first.exited).signal, "SIGKILL", first.output.join("\n"));

    second = await first.restart({ main: undefined, env: { LOG_LEVEL: "error" } });
    const retry = await send(second.url, sender);
    const reply = UserSendReplySchema.parse(await retry.json());
    assert.equal(retry.status, 200);
    if (answer !== null) assert.equal(reply.message.id, answer.message.id);
    for (const uid of MEMBERS) {
      assert.deepEqual(
        await copiesIn(second.url, credentials.get(uid)!),
        [reply.message.id],
        `${uid}'s stream holds the message once`,
      );
    }
    // Cut after its commit point, the write is applied at start-up: the retry finds it.
    assert.equal(reply.duplicate, killBefore === "sent");
  } finally {
    await second?.crash();
    if (await first.alive()) await first.crash();
    await first.cleanup();
  }
}

Deno.test("kill -9 in the compaction of a multi-commit write: the retried send is in each stream once", async () => {
  await killedSendThenRetry("sent");
});

Deno.test("kill -9 before a multi-commit write counts: nothing of it is there, the retry sends once", async () => {
  await killedSendThenRetry("redo");
});
