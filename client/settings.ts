/**
 * App settings for `init()`, built the way mobile chat SDKs build them:
 *
 * ```ts
 * const settings = new AppSettingsBuilder()
 *   .setRegion("us")
 *   .subscribePresenceForAllUsers()
 *   .autoEstablishSocketConnection(false)
 *   .build();
 * ```
 *
 * The result is the contract's init body (`InitBodySchema`), so the gateway validates
 * exactly what the builder produces.
 */
import type { z } from "zod";
import type { InitBodySchema, SubscriptionType } from "../contract/mod.ts";

/**
 * The settings `init()` sends: the contract's init body. Fields left out take the contract's
 * defaults on the gateway (`subscriptionType: "allUsers"`, `autoEstablishSocketConnection: true`).
 */
export type AppSettings = z.input<typeof InitBodySchema>;

/** Builds {@link AppSettings}; every setter returns the builder. */
export class AppSettingsBuilder {
  #region: string | undefined;
  #subscriptionType: SubscriptionType | undefined;
  #roles: string[] | undefined;
  #autoEstablish: boolean | undefined;

  /** The app's region, e.g. `"us"`; must match the app's region on the gateway. */
  setRegion(region: string): this {
    this.#region = region;
    return this;
  }

  /** Receive the presence of every user of the app. */
  subscribePresenceForAllUsers(): this {
    this.#subscriptionType = "allUsers";
    this.#roles = undefined;
    return this;
  }

  /** Receive the presence of the users that have one of these roles. */
  subscribePresenceForRoles(roles: string[]): this {
    this.#subscriptionType = "roles";
    this.#roles = [...roles];
    return this;
  }

  /** Receive the presence of the user's friends. */
  subscribePresenceForFriends(): this {
    this.#subscriptionType = "friends";
    this.#roles = undefined;
    return this;
  }

  /** Receive no presence events. */
  subscribePresenceForNone(): this {
    this.#subscriptionType = "none";
    this.#roles = undefined;
    return this;
  }

  /**
   * `true` (the default): auto mode, the client manages the WebSocket.
   * `false`: manual mode, the app calls `connect()`, `disconnect()` and `ping()`.
   */
  autoEstablishSocketConnection(enabled: boolean): this {
    this.#autoEstablish = enabled;
    return this;
  }

  /** The settings; throws a plain `Error` when the region was not set. */
  build(): AppSettings {
    if (this.#region === undefined || this.#region === "") {
      throw new Error("AppSettingsBuilder: setRegion(region) is required.");
    }
    const settings: AppSettings = { region: this.#region };
    if (this.#subscriptionType !== undefined) settings.subscriptionType = this.#subscriptionType;
    if (this.#roles !== undefined) settings.roles = [...this.#roles];
    if (this.#autoEstablish !== undefined) {
      settings.autoEstablishSocketConnection = this.#autoEstablish;
    }
    return settings;
  }
}
