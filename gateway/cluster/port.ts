/**
 * What the state objects need of a cluster ([cluster.md](../../docs/cluster.md)), without
 * Redis: claims on users and handoffs. A single node has no port, and owns every user.
 */
import { GatewayError } from "../errors.ts";
import type { UserClaim } from "../store/types.ts";

export interface ClusterPort {
  readonly nodeId: string;
  /** Claims a user for this node, unless a live node holds it: then that node's id. */
  claim(appId: string, uid: string): Promise<UserClaim | { owner: string }>;
  /**
   * Asks the node that holds a user to give it up: `done`, `refused` (a socket of the user is
   * there), or `unanswered` (the node may be dead: its claim goes once its TTL runs out).
   */
  requestHandoff(node: string, appId: string, uid: string): Promise<HandoffAnswer>;
  /** Gives a claim up (the user left this node's memory). */
  release(appId: string, uid: string, claim: UserClaim): Promise<void>;
}

export type HandoffAnswer = "done" | "refused" | "unanswered";

/** The node holding a user does not answer (it may have died): 503, the client tries again. */
export class HolderUnanswered extends GatewayError {
  constructor(readonly node: string) {
    super(
      "ERR_SERVICE_UNAVAILABLE",
      "The node of the cluster that holds this user does not answer; try again (a dead " +
        "node's users are taken over within NODE_TTL_MS).",
    );
    this.name = "HolderUnanswered";
  }
}

/**
 * The user is held by another live node: the work goes there (`node`). Where it cannot be
 * sent on, it is answered as 503 (the client tries again).
 */
export class OwnedElsewhere extends GatewayError {
  constructor(readonly node: string, readonly appId: string, readonly uid: string) {
    super("ERR_SERVICE_UNAVAILABLE", "The user is held by another node of the cluster.");
    this.name = "OwnedElsewhere";
  }
}

/** The answer when a user moved to another node while its change was being written. */
export const LOST_USER = "The user moved to another node of the cluster while this was " +
  "stored: nothing of it was stored; try again.";
