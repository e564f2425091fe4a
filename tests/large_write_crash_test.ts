/**
 * A `kill -9` in the middle of a write that takes several Deno KV commits must leave all of it or
 * none of it: a send cut in the middle would otherwise leave some receivers with the message and
 * others without, and its retry would create a second message for the first ones.
 *
 * A group commit goes to a redo log first (gateway/store/kv.ts), a log too large for one KV
 * commit in several, and its marker, committed last, makes it count; a compaction later copies
 * it to the per-user rows. The process kills itself at an exact commit
 * (tests/support/kill_before_commit.ts): before the marker of a log written in several commits
 * (nothing of it counts: a server send of 12 different 50 KB copies), and before the compaction's
 * commit that writes a user's send record (the log counts: the next start-up applies it, and the
 * client's retry with the same clientMessageId finds the first result).
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

/** The server API's send of one 50 KB message to every member: 12 copies, each its own `to`. */
function serverSend(url: string): Promise<Response> {
  return call(url, `/v1/apps/${APP}/messages`, {
    method: "POST",
    headers: API_HEADERS,
    body: JSON.stringify({ to: MEMBERS, message: SEND.message }),
  });
}

/** The ids of the 50 KB messages (any send) in a user's stream. */
async function blobsIn(url: string, credential: string): Promise<string[]> {
  const res = await call(url, "/v1/session/events?after=0&limit=100", {
    headers: { authorization: `Bearer ${credential}` },
  });
  const page = HistoryPageSchema.parse(await res.json());
  return page.events
    .filter((event) => event.message.kind === "custom" && event.message.customType === "blob")
    .map((event) => event.message.id);
}

Deno.test("kill -9 before a multi-commit write counts: nothing of it is there, the retry sends once", async () => {
  const first = await GatewayProcess.start({
    main: "tests/support/kill_before_commit.ts",
    // Only the marker of a log written in several commits is committed alone.
    env: { KILL_BEFORE_COMMIT_OF: "redo", KILL_BEFORE_COMMIT_ONLY: "1", LOG_LEVEL: "error" },
  });
  let second: GatewayProcess | undefined;
  try {
    const credentials = await setUp(first.url);
    await assert.rejects(async () => await (await serverSend(first.url)).text());
    assert.equal((await first.exited).signal, "SIGKILL", first.output.join("\n"));

    second = await first.restart({ main: undefined, env: { LOG_LEVEL: "error" } });
    for (const uid of MEMBERS) {
      assert.deepEqual(await blobsIn(second.url, credentials.get(uid)!), [], `${uid}: none`);
    }
    const retry = await serverSend(second.url);
    assert.equal(retry.status, 200, await retry.clone().text());
    const { id } = await retry.json();
    for (const uid of MEMBERS) {
      assert.deepEqual(await blobsIn(second.url, credentials.get(uid)!), [id], `${uid}: once`);
    }
  } finally {
    await second?.crash();
    if (await first.alive()) await first.crash();
    await first.cleanup();
  }
});

Deno.test("kill -9 in a compaction: an acknowledged send is applied at start-up, its retry finds it", async () => {
  const first = await GatewayProcess.start({
    main: "tests/support/kill_before_commit.ts",
    // A compaction after every write: the first that holds a send record is this send's.
    env: { KILL_BEFORE_COMMIT_OF: "sent", KV_COMPACT_AFTER_BYTES: "0", LOG_LEVEL: "error" },
  });
  let second: GatewayProcess | undefined;
  try {
    const credentials = await setUp(first.url);
    const sender = credentials.get(MEMBERS[0])!;
    // The compaction starts as the write lands: the answer may or may not get out first.
    const answer = await send(first.url, sender).then(
      async (res) => UserSendReplySchema.parse(await res.json()),
      () => null,
    );
    assert.equal((await first.exited).signal, "SIGKILL", first.output.join("\n"));

    second = await first.restart({ main: undefined, env: { LOG_LEVEL: "error" } });
    const retry = await send(second.url, sender);
    const reply = UserSendReplySchema.parse(await retry.json());
    assert.equal(retry.status, 200);
    assert.equal(reply.duplicate, true, "the log counted: the send record is there");
    if (answer !== null) assert.equal(reply.message.id, answer.message.id);
    for (const uid of MEMBERS) {
      assert.deepEqual(
        await copiesIn(second.url, credentials.get(uid)!),
        [reply.message.id],
        `${uid}'s stream holds the message once`,
      );
    }
  } finally {
    await second?.crash();
    if (await first.alive()) await first.crash();
    await first.cleanup();
  }
});
