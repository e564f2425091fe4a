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
  /** Asks the node that holds a user to give it up; true when it did. */
  requestHandoff(node: string, appId: string, uid: string): Promise<boolean>;
  /** Gives a claim up (the user left this node's memory). */
  release(appId: string, uid: string, claim: UserClaim): Promise<void>;
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
