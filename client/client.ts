/**
 * `GatewayClient`: init, login, the connection in auto or manual mode, reconnection and app
 * state (SPEC §5); messages, sends, typing and presence (SPEC §6).
 *
 * How it stays readable (after centrifuge-js):
 * - the socket is its own module, `socket.ts`: one WebSocket with its handshake, heartbeat
 *   and id-matched replies, which reports one end; this file holds the lifecycle policy;
 * - one state setter, {@link GatewayClient#setStatus}, that reports whether the status
 *   changed, so listeners fire exactly once per transition;
 * - one disconnect funnel, {@link GatewayClient#connectionEnded}, through which every way a
 *   connection can end passes (server close, `closing` frame, network loss, dead link,
 *   disconnect(), logout, background), with its side effects in one order;
 * - only the current socket is heard: an ended socket reports nothing more, and the client
 *   ignores a socket that is no longer its own, so a late close of an old socket can't act
 *   on a new one;
 * - the rules themselves are pure functions in `policy.ts` and `backoff.ts`;
 * - the user's event stream (the position, replay and history catch-up, exactly-once delivery in
 *   seq order) is `stream.ts`, which this file feeds with frames and pages and whose position it
 *   stores; sends are kept here until answered, by clientMessageId.
 */
import {
  type AppState,
  type ConnectionStatus,
  type ErrorCode,
  type HistoryPage,
  type InitReply,
  type LoginReply,
  LoginReplySchema,
  type Message,
  type Mode,
  type PresenceChange,
  type PresenceSubscription,
  PresenceSubscriptionSchema,
  type ReceiverType,
  type ServerFrameOf,
  type SessionView,
  type StreamPosition,
  StreamPositionSchema,
  type Timing,
  type User,
  type UserSend,
  UserSendSchema,
  validationDetails,
  WEBSOCKET_PATH,
} from "../contract/mod.ts";
import { backoffDelay, type BackoffOptions, DEFAULT_BACKOFF } from "./backoff.ts";
import { GatewayError } from "./errors.ts";
import {
  type Clock,
  pageDocument,
  systemClock,
  type VisibilitySource,
  type WebSocketConstructor,
} from "./platform.ts";
import {
  type ConnectionEndReason,
  decideReconnect,
  endsSession,
  type LocalDisconnectReason,
} from "./policy.ts";
import { createRestClient, type RestClient } from "./rest.ts";
import type { AppSettings } from "./settings.ts";
import {
  ABNORMAL_CLOSE,
  GatewaySocket,
  socketAddress,
  type SocketEnd,
  type SocketEndReport,
  type TypingTarget,
} from "./socket.ts";
import { defaultStorage, type StorageAdapter } from "./storage.ts";
import { StreamReader } from "./stream.ts";

/** The session part of the login reply: id, bearer credential, mode. */
export type Session = LoginReply["session"];

/** The `connected` frame: what the gateway says about a fresh connection. */
export type ConnectedInfo = ServerFrameOf<"connected">;

/** How and why a connection ended; given to `onDisconnected` and kept for `getConnectionInfo()`. */
export interface DisconnectInfo {
  /** A close reason of the contract (`background`, `liveness_timeout`, …) or a local one. */
  reason: ConnectionEndReason;
  /** `server`: the gateway closed it (closing frame or close code); `client`: this client did. */
  source: "server" | "client";
  /** The WebSocket close code (the contract's table; 1006 for a network loss or a dead link). */
  code: number;
  errorDescription: string;
  /** Whether the client will reconnect by itself, and when. */
  reconnect: "retry" | "when_foreground" | "never";
  /** Delay before the next attempt when `reconnect` is `retry`, else null. */
  reconnectInMs: number | null;
  /** Client clock time of the disconnect. */
  at: number;
}

/** Listener of connection status transitions; each method is optional. */
export interface ConnectionListener {
  /** The status became `connected`. */
  onConnected?(info: ConnectedInfo): void;
  /** The status became `connecting` (a first attempt or a reconnection). */
  inConnecting?(): void;
  /** The status became `disconnected`; `info.reason` says why. */
  onDisconnected?(info: DisconnectInfo): void;
  /** An attempt to connect failed, or the gateway sent an error no call was waiting for. */
  onConnectionError?(error: GatewayError): void;
}

/** A text message as received. */
export type TextMessage = Extract<Message, { kind: "text" }>;
/** A custom message (the app's own JSON object) as received. */
export type CustomMessage = Extract<Message, { kind: "custom" }>;

/** A typing indicator: `from` is typing to `receiver` (this user, or one of their groups). */
export type TypingIndicator = Omit<ServerFrameOf<"typing_started">, "type">;

/** Where a message or a typing indicator goes: a user (uid) or a group (guid). */
export type { TypingTarget };

/**
 * Listener of messages and typing indicators for the logged-in user; each method is optional.
 * Messages come exactly once each and in the order of the user's event stream; `seq` is the
 * message's place in it (it only increases). The user's own messages sent by this client are
 * not among them (they resolve `sendMessage()`); those sent from the user's other sessions are.
 */
export interface MessageListener {
  onTextMessageReceived?(message: TextMessage, seq: number): void;
  onCustomMessageReceived?(message: CustomMessage, seq: number): void;
  /** Someone started typing to this user or to one of their groups (live only, never replayed). */
  onTypingStarted?(indicator: TypingIndicator): void;
  /** A typing indicator ended: `endTyping()`, the typing timeout, or the typist went offline. */
  onTypingEnded?(indicator: TypingIndicator): void;
}

/**
 * Listener of presence: the users of the init settings' subscription (`subscriptionType`,
 * `roles`) coming online or going offline. One call per user change; `at` is the gateway's time
 * of the change.
 */
export interface UserListener {
  onUserOnline?(user: PresenceChange): void;
  onUserOffline?(user: PresenceChange): void;
}

/** A text message to send: to a user (`receiver` is a uid) or a group (a guid). */
export interface TextMessageInput {
  receiverType: ReceiverType;
  receiver: string;
  text: string;
  /**
   * The id that makes retries harmless (default: a fresh `crypto.randomUUID()`). Pass your own
   * to retry a send yourself, e.g. from an outbox kept across app restarts.
   */
  clientMessageId?: string;
}

/** A custom message to send: the app's own JSON object under its own `customType`. */
export interface CustomMessageInput {
  receiverType: ReceiverType;
  receiver: string;
  customType: string;
  data: Record<string, unknown>;
  /** As for {@link TextMessageInput.clientMessageId}. */
  clientMessageId?: string;
}

/** A sent message: as its receivers see it, and its seq in the sender's own stream. */
export interface SentMessage {
  message: Message;
  seq: number;
}

/** A snapshot of the client's connection state. */
export interface ConnectionInfo {
  status: ConnectionStatus;
  mode: Mode;
  appState: AppState;
  backgroundService: boolean;
  /** The gateway's background deadline (server clock), or null in foreground. */
  backgroundDeadline: number | null;
  /** How the last connection ended, or null if none has. */
  lastDisconnect: DisconnectInfo | null;
}

/** The answer to `ping()`. */
export interface PingResult {
  serverTime: number;
  /** The background deadline after this ping (manual mode in background), else null. */
  backgroundDeadline: number | null;
}

/** A running `keepAliveInBackground()` helper. */
export interface KeepAlive {
  /** Stops pinging. */
  stop(): void;
}

/** Options of {@link GatewayClient}; everything but `baseUrl` has a default. */
export interface GatewayClientOptions {
  /** Gateway origin, e.g. `https://gateway.example.com` or `http://127.0.0.1:8000`. */
  baseUrl: string;
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
  /** The WebSocket constructor to use (default: the global one). */
  WebSocket?: WebSocketConstructor;
  /** Where the logged-in user and session are kept (default: localStorage in a page, else memory). */
  storage?: StorageAdapter;
  /** Clock and timers (default: `Date.now`, `setTimeout`). */
  clock?: Clock;
  /** Random source in [0, 1) for the backoff jitter (default: `Math.random`). */
  random?: () => number;
  /** Reconnection backoff bounds (default 500 ms … 20 000 ms; see `backoff.ts`). */
  backoff?: Partial<BackoffOptions>;
  /**
   * Drive the app state from `document.visibilityState` (hidden = background). Default: true
   * when running in a page. Turn it off to call `setAppState()` yourself.
   */
  trackVisibility?: boolean;
  /** The document to watch (default: `globalThis.document`). */
  document?: VisibilitySource;
  /**
   * How the credential reaches the WebSocket endpoint: as a `cred.<credential>` sub-protocol
   * (default; keeps it out of URLs and logs) or as a `?credential=` query parameter.
   */
  credentialIn?: "protocol" | "query";
  /** Time to wait for the `connected` frame after the socket opens (default 10 000 ms). */
  handshakeTimeoutMs?: number;
  /** Time `disconnect()` waits for the gateway's close before closing itself (default 2 000 ms). */
  disconnectTimeoutMs?: number;
  /** Events per page when the client catches up through the history route (default 100). */
  historyPageSize?: number;
}

/** What the storage adapter holds for one app. */
interface StoredLogin {
  v: 1;
  user: User;
  session: Session;
}

/** What the storage adapter holds for one user's event stream. */
interface StoredPosition extends StreamPosition {
  v: 1;
}

interface Waiter<T> {
  resolve(value: T): void;
  reject(error: GatewayError): void;
}

/** A send not answered yet, and where it was last sent. */
interface PendingSend {
  body: UserSend;
  promise: Promise<SentMessage>;
  resolve(sent: SentMessage): void;
  reject(error: GatewayError): void;
  /**
   * `socket`: a `send` frame on that socket, with its frame id; `http`: a
   * `POST /v1/session/messages` under way; `waiting`: the gateway could not be reached, the
   * next connection sends it.
   */
  via: { socket: GatewaySocket; frameId: number } | "http" | "waiting";
}

/** The clientMessageIds of this client's recent sends (a replayed copy is not "incoming"). */
const OWN_SENDS_REMEMBERED = 1_000;

/** Default events per history page (the route's default too). */
const DEFAULT_HISTORY_PAGE = 100;

/** Descriptions of the local reasons (the server sends its own in the `closing` frame). */
const LOCAL_DESCRIPTIONS: Record<LocalDisconnectReason, string> = {
  network_lost: "The connection was lost or could not be opened.",
  pong_timeout: "No pong within the pong timeout: the link is dead.",
  handshake_timeout: "The gateway did not answer the handshake in time.",
  destroyed: "The client was destroyed.",
};

/** The error a failed connection attempt rejects with, by reason. */
const ATTEMPT_ERRORS: Partial<Record<ConnectionEndReason, ErrorCode>> = {
  unauthorized: "AUTH_ERR_AUTH_TOKEN_NOT_FOUND",
  logged_out: "AUTH_ERR_AUTH_TOKEN_NOT_FOUND",
  rate_limited: "ERR_TOO_MANY_REQUESTS",
  payload_too_large: "ERR_PAYLOAD_TOO_LARGE",
};

/**
 * The typed client of the liveness gateway.
 *
 * ```ts
 * const client = new GatewayClient({ baseUrl: "http://127.0.0.1:8000" });
 * await client.init("demo", new AppSettingsBuilder().setRegion("us").build());
 * client.addConnectionListener("ui", { onDisconnected: (info) => console.log(info.reason) });
 * await client.login("superhero1", "dev_auth_key__not_secret"); // auto mode connects
 * ```
 *
 * Every method that can fail returns a promise that rejects with a {@link GatewayError}.
 */
export class GatewayClient {
  readonly #options: GatewayClientOptions;
  readonly #rest: RestClient;
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #backoff: BackoffOptions;
  readonly #storage: StorageAdapter;
  readonly #WebSocket: WebSocketConstructor | undefined;

  #appId: string | null = null;
  #initReply: InitReply | null = null;
  #timing: Timing | null = null;
  #user: User | null = null;
  #session: Session | null = null;
  #loginInProgress = false;

  #status: ConnectionStatus = "disconnected";
  #appState: AppState = "foreground";
  #backgroundService = false;
  #backgroundDeadline: number | null = null;
  #lastDisconnect: DisconnectInfo | null = null;
  readonly #listeners = new Map<string, ConnectionListener>();
  readonly #messageListeners = new Map<string, MessageListener>();
  readonly #userListeners = new Map<string, UserListener>();

  /** Whose presence the connections receive (the init reply's subscription). */
  #presence: PresenceSubscription | undefined;
  /** The user's event stream: the position, the catch-up, the order of delivery. */
  readonly #stream: StreamReader;
  /** Writes of the stream position, in order (see `#persistPosition`). */
  #positionWrites: Promise<void> = Promise.resolve();
  #positionWriteQueued = false;
  /** The storage removals of the last `#forgetUser()`. */
  #forgetting: Promise<void> = Promise.resolve();
  /** Sends not answered yet, by clientMessageId. */
  readonly #pendingSends = new Map<string, PendingSend>();
  /** clientMessageIds this client sent, oldest first. */
  readonly #ownSends = new Set<string>();
  /** When `start_typing` was last sent on the current socket, per target. */
  readonly #typingSentAt = new Map<string, number>();

  /** The current socket; null between connections. */
  #socket: GatewaySocket | null = null;
  /** Auto mode: logged in. Manual mode: between connect() and disconnect(). */
  #wantConnected = false;
  /** A reconnection is owed and will be tried when the rules allow (foreground). */
  #reconnectPending = false;
  #attempt = 0;

  #reconnectTimer: unknown = null;

  #connectWaiters: Waiter<void>[] = [];
  #disconnectWaiters: Waiter<void>[] = [];
  readonly #keepAlives = new Set<KeepAlive>();
  /** Sockets told to close and not yet closed, and sends out over HTTP: `destroy()` waits. */
  readonly #closing = new Set<Promise<void>>();

  #visibility: VisibilitySource | undefined;
  readonly #onVisibility = () => {
    if (this.#visibility === undefined) return;
    void this.setAppState(
      this.#visibility.visibilityState === "hidden" ? "background" : "foreground",
    );
  };

  /** Creates a client; nothing happens on the network until `init()`. */
  constructor(options: GatewayClientOptions) {
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.#random = options.random ?? Math.random;
    this.#backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.#storage = options.storage ?? defaultStorage();
    this.#WebSocket = options.WebSocket ??
      (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    this.#rest = createRestClient({ baseUrl: options.baseUrl, fetch: options.fetch });
    this.#stream = new StreamReader({
      fetchPage: (after, limit) => this.#fetchHistory(after, limit),
      pageSize: options.historyPageSize ?? DEFAULT_HISTORY_PAGE,
      handOver: (seq, message, sent) => this.#handOver(seq, message, sent),
      positionChanged: () => this.#persistPosition(),
      pageFailed: (error) => {
        const failure = GatewayError.fromUnknown(error);
        this.#emit((l) => l.onConnectionError?.(failure));
      },
      retryDelay: (attempt) => backoffDelay(attempt, this.#random, this.#backoff),
      clock: this.#clock,
    });
    if (options.trackVisibility !== false) {
      this.#visibility = options.document ?? pageDocument();
      if (this.#visibility !== undefined) {
        this.#appState = this.#visibility.visibilityState === "hidden"
          ? "background"
          : "foreground";
        this.#visibility.addEventListener("visibilitychange", this.#onVisibility);
      }
    }
  }

  // ---- init and login -------------------------------------------------------------------

  /**
   * Validates `appId` and the settings with the gateway and returns the effective settings
   * (mode, timing). A user stored by an earlier run is restored; in auto mode the client then
   * connects at once (in foreground).
   */
  async init(appId: string, settings: AppSettings): Promise<InitReply> {
    const reply = await this.#request(() => this.#rest.init({ params: { appId }, body: settings }));
    if (reply.status !== 200) throw GatewayError.fromPayload(reply.body, reply.status);
    // The subscription rides in every connect frame: one the gateway would refuse there is
    // refused here, before any connection depends on it.
    const presence = PresenceSubscriptionSchema.safeParse({
      subscriptionType: reply.body.subscriptionType,
      ...(reply.body.roles === undefined ? {} : { roles: reply.body.roles }),
    });
    if (!presence.success) {
      throw new GatewayError(
        "ERR_BAD_REQUEST",
        "The presence subscription does not fit in a connect frame.",
        validationDetails(presence.error.issues, "presence"),
      );
    }
    if (this.#appId !== null) this.#reset(); // A second init starts over.
    this.#appId = appId;
    this.#initReply = reply.body;
    this.#timing = reply.body.timing;
    this.#presence = presence.data;

    const stored = await this.#readStoredLogin();
    if (stored !== null) {
      if (stored.session.mode === reply.body.mode) {
        this.#user = stored.user;
        this.#session = stored.session;
        this.#stream.reset(await this.#readPosition(stored.user.uid));
        if (this.#session !== stored.session) return reply.body; // Replaced meanwhile.
        if (this.#mode === "auto") {
          this.#wantConnected = true;
          this.#connectIfAllowed();
        }
      } else {
        // The session was created for the other mode: the app must log in again.
        await this.#storage.removeItem(this.#storageKey());
      }
    }
    return reply.body;
  }

  /**
   * Logs in with an auth token from the server API, or with `(uid, authKey)` when the app
   * enables development login. Keeps the user and session in storage; in auto mode the
   * connection opens at once (watch the connection listeners). Logging in as the uid that is
   * already logged in returns that user.
   */
  login(authToken: string): Promise<User>;
  login(uid: string, authKey: string): Promise<User>;
  async login(tokenOrUid: string, authKey?: string): Promise<User> {
    this.#requireInit();
    if (this.#loginInProgress) throw new GatewayError("LOGIN_IN_PROGRESS");
    this.#loginInProgress = true;
    try {
      if (this.#user !== null) {
        if (authKey !== undefined && this.#user.uid === tokenOrUid) return this.#user;
        await this.logout();
      }
      const mode = this.#mode;
      const body = authKey === undefined
        ? { authToken: tokenOrUid, mode }
        : { uid: tokenOrUid, authKey, mode };
      const reply = await this.#request(() =>
        this.#rest.login({ params: { appId: this.#appId! }, body })
      );
      if (reply.status !== 200) throw GatewayError.fromPayload(reply.body, reply.status);
      const { user, session } = reply.body;
      this.#user = user;
      this.#session = session;
      this.#stream.reset(await this.#readPosition(user.uid));
      await this.#storage.setItem(
        this.#storageKey(),
        JSON.stringify({ v: 1, user, session } satisfies StoredLogin),
      );
      if (this.#mode === "auto") {
        this.#wantConnected = true;
        this.#attempt = 0;
        this.#connectIfAllowed();
      }
      return user;
    } finally {
      this.#loginInProgress = false;
    }
  }

  /**
   * Ends the session on the gateway (which closes its connection with `logged_out`) and
   * forgets the user. The local state is cleared even when the gateway can't be reached; the
   * promise then rejects with that error.
   */
  async logout(): Promise<void> {
    this.#requireInit();
    const session = this.#requireUser();
    this.#wantConnected = false;
    this.#cancelReconnect();
    this.#stopKeepAlives();
    let failure: GatewayError | null = null;
    try {
      const reply = await this.#request(() =>
        this.#rest.session.logout({ headers: this.#bearer(session) })
      );
      // 401: the session was already gone, which is what logout wants.
      if (reply.status !== 200 && reply.status !== 401) {
        failure = GatewayError.fromPayload(reply.body, reply.status);
      }
    } catch (error) {
      failure = GatewayError.fromUnknown(error);
    }
    if (this.#session === session) {
      this.#failPendingSends(
        "ERROR_USER_NOT_LOGGED_IN",
        "Logged out before the send was answered.",
      );
      this.#endTransport({ reason: "logged_out", source: "client", code: 4006 });
      await this.#forgetUser();
    } else {
      // The gateway's close (logged_out) came first and started forgetting: wait for it, so
      // that nothing of the user is left in storage when logout() resolves.
      await this.#forgetting;
    }
    if (failure !== null) throw failure;
  }

  /** The logged-in user, or null. */
  getLoggedInUser(): Promise<User | null> {
    return this.#guard(() => {
      this.#requireInit();
      return this.#user;
    });
  }

  // ---- manual mode ----------------------------------------------------------------------

  /**
   * Manual mode: opens the WebSocket; resolves when the gateway confirms it (`connected`).
   * Rejects with `ERROR_WEBSOCKETS_ALLREADY_IN_CONNECTED_STATE` when connected, and with the
   * attempt's error when it fails (no automatic retry for a first attempt).
   */
  connect(): Promise<void> {
    return this.#guard(() => {
      this.#requireInit();
      this.#requireUser();
      this.#requireManual();
      if (this.#status === "connected") {
        throw new GatewayError("ERROR_WEBSOCKETS_ALLREADY_IN_CONNECTED_STATE");
      }
      this.#wantConnected = true;
      const done = new Promise<void>((resolve, reject) => {
        this.#connectWaiters.push({ resolve, reject });
      });
      if (this.#socket === null) {
        this.#cancelReconnect();
        this.#attempt = 0;
        this.#openSocket();
      }
      return done;
    });
  }

  /**
   * Manual mode: closes the WebSocket (the gateway closes it with `client_disconnect`);
   * nothing is maintained or reconnected afterwards until `connect()`. Also cancels a
   * pending reconnection. Rejects with `NO_WEBSOCKET_CONNECTION` when there was nothing to
   * close or cancel.
   */
  disconnect(): Promise<void> {
    return this.#guard(() => {
      this.#requireInit();
      this.#requireUser();
      this.#requireManual();
      const hadPending = this.#reconnectPending;
      this.#wantConnected = false;
      this.#cancelReconnect();
      const socket = this.#socket;
      if (socket === null) {
        if (hadPending) return Promise.resolve();
        throw new GatewayError("NO_WEBSOCKET_CONNECTION");
      }
      if (!socket.handshaken) {
        this.#endTransport({ reason: "client_disconnect", source: "client", code: 1000 });
        return Promise.resolve();
      }
      const done = new Promise<void>((resolve, reject) => {
        this.#disconnectWaiters.push({ resolve, reject });
      });
      // The gateway closes; if it does not within the timeout, the socket closes itself.
      socket.disconnect(this.#options.disconnectTimeoutMs ?? 2_000);
      return done;
    });
  }

  /**
   * Manual mode: tells the gateway the app is still active. Over the open WebSocket by
   * default; `{ via: "http" }` uses `POST /v1/session/ping` (for code that can only make an
   * HTTP request). In background, the result carries the new deadline.
   */
  ping(options: { via?: "websocket" | "http" } = {}): Promise<PingResult> {
    return this.#guard(async () => {
      this.#requireInit();
      const session = this.#requireUser();
      this.#requireManual();
      if (options.via === "http") {
        const reply = await this.#request(() =>
          this.#rest.session.ping({ headers: this.#bearer(session) })
        );
        if (reply.status !== 200) throw GatewayError.fromPayload(reply.body, reply.status);
        this.#backgroundDeadline = reply.body.backgroundDeadline;
        return {
          serverTime: reply.body.serverTime,
          backgroundDeadline: reply.body.backgroundDeadline,
        };
      }
      const socket = this.#socket;
      if (socket === null || !socket.handshaken) {
        throw new GatewayError("NO_WEBSOCKET_CONNECTION");
      }
      // No pong in time ends the socket (a dead link), which rejects this ping.
      const pong = await socket.ping();
      return { serverTime: pong.serverTime, backgroundDeadline: pong.backgroundDeadline };
    });
  }

  /**
   * Manual mode: pings every `intervalMs` (default half the liveness window) while the app is
   * in background and connected, so the gateway keeps the connection for as long as the app
   * can run code in background. Returns a handle to stop it.
   */
  keepAliveInBackground(options: { intervalMs?: number } = {}): Promise<KeepAlive> {
    return this.#guard(() => {
      this.#requireInit();
      this.#requireUser();
      this.#requireManual();
      const intervalMs = options.intervalMs ??
        Math.max(1, Math.floor(this.#requireTiming().livenessWindowMs / 2));
      let timer: unknown = null;
      const tick = () => {
        if (this.#appState === "background" && this.#status === "connected") {
          this.ping().catch(() => {/* A failure shows up as a disconnect. */});
        }
        timer = this.#clock.setTimeout(tick, intervalMs);
      };
      const handle: KeepAlive = {
        stop: () => {
          this.#clock.clearTimeout(timer);
          this.#keepAlives.delete(handle);
        },
      };
      timer = this.#clock.setTimeout(tick, intervalMs);
      this.#keepAlives.add(handle);
      return handle;
    });
  }

  // ---- app state ------------------------------------------------------------------------

  /**
   * Reports foreground or background (and optionally turns the background service on or
   * off). Going to background stops heartbeats and pending reconnections; in auto mode
   * without the background service the gateway then closes the connection (`background`).
   * Returning to foreground resumes heartbeats and reconnects where the rules allow.
   * In a page this is called for you from `document.visibilityState`. When connected, it
   * resolves once the gateway has answered, so `getConnectionInfo().backgroundDeadline` is set.
   */
  setAppState(state: AppState, options: { backgroundService?: boolean } = {}): Promise<void> {
    return this.#guard(() => {
      const service = options.backgroundService ?? this.#backgroundService;
      if (state === this.#appState && service === this.#backgroundService) return;
      this.#appState = state;
      this.#backgroundService = service;
      // Resolves once the gateway answered (so getConnectionInfo() has its deadline), the
      // socket ended (e.g. auto mode closed at once in background), or a pong timeout passed.
      // The socket also stops heartbeats in background and restarts them in foreground.
      const acknowledged = this.#socket?.setAppState(state, service);
      if (state === "background") {
        if (this.#reconnectTimer !== null) {
          this.#clock.clearTimeout(this.#reconnectTimer);
          this.#reconnectTimer = null; // #reconnectPending stays: resumed in foreground.
        }
        return acknowledged;
      }
      this.#backgroundDeadline = null;
      if (this.#socket === null) this.#connectIfAllowed(true);
      return acknowledged;
    });
  }

  /**
   * iOS-style background service: `willResignActive` turns it on, so the next move to
   * background keeps the connection for one liveness window; `didBackground` turns it on
   * and reports background. It stays on until `setAppState(…, { backgroundService: false })`.
   */
  configureServices(service: "willResignActive" | "didBackground"): Promise<void> {
    return this.setAppState(service === "didBackground" ? "background" : this.#appState, {
      backgroundService: true,
    });
  }

  /** Whether the background service is on. */
  backgroundTaskEnabled(): boolean {
    return this.#backgroundService;
  }

  // ---- status and listeners -------------------------------------------------------------

  /** `connecting`, `connected` or `disconnected`. */
  getConnectionStatus(): ConnectionStatus {
    return this.#status;
  }

  /** The status with the mode, app state, background deadline and last disconnect reason. */
  getConnectionInfo(): ConnectionInfo {
    return {
      status: this.#status,
      mode: this.#mode,
      appState: this.#appState,
      backgroundService: this.#backgroundService,
      backgroundDeadline: this.#backgroundDeadline,
      lastDisconnect: this.#lastDisconnect,
    };
  }

  /** The gateway's view of this session (`GET /v1/session`). */
  getSessionView(): Promise<SessionView> {
    return this.#guard(async () => {
      this.#requireInit();
      const session = this.#requireUser();
      const reply = await this.#request(() =>
        this.#rest.session.status({ headers: this.#bearer(session) })
      );
      if (reply.status !== 200) throw GatewayError.fromPayload(reply.body, reply.status);
      return reply.body;
    });
  }

  /** Adds (or replaces) the connection listener with this id. */
  addConnectionListener(id: string, listener: ConnectionListener): void {
    this.#listeners.set(id, listener);
  }

  /** Removes the connection listener with this id. */
  removeConnectionListener(id: string): void {
    this.#listeners.delete(id);
  }

  /** Adds (or replaces) the message listener with this id. */
  addMessageListener(id: string, listener: MessageListener): void {
    this.#messageListeners.set(id, listener);
  }

  /** Removes the message listener with this id. */
  removeMessageListener(id: string): void {
    this.#messageListeners.delete(id);
  }

  /** Adds (or replaces) the presence listener with this id. */
  addUserListener(id: string, listener: UserListener): void {
    this.#userListeners.set(id, listener);
  }

  /** Removes the presence listener with this id. */
  removeUserListener(id: string): void {
    this.#userListeners.delete(id);
  }

  /**
   * The last event of the user's stream that the listeners were given (`{ epoch, seq }`), or
   * null before the first connection of a user with nothing stored.
   */
  getStreamPosition(): StreamPosition | null {
    const position = this.#stream.position;
    return position === null ? null : { ...position };
  }

  // ---- sending --------------------------------------------------------------------------

  /**
   * Sends a text message (`{ receiverType, receiver, text }`) or a custom one
   * (`{ receiverType, receiver, customType, data }`) as the logged-in user; resolves with the
   * message as its receivers see it and its seq in the user's own stream.
   *
   * Over the WebSocket when connected, else over `POST /v1/session/messages`. Every send has a
   * `clientMessageId` (its own, or a fresh UUID) and the gateway creates one message per id, so
   * the client retries freely with the same id: when the socket ends before the answer it sends
   * again over HTTP at once; when the gateway can't be reached at all the send waits for the next
   * connection. It rejects with the gateway's refusal (e.g. `ERR_UID_NOT_FOUND`,
   * `ERR_NOT_A_MEMBER`), or when `logout()`/`destroy()` comes first.
   */
  sendMessage(input: TextMessageInput | CustomMessageInput): Promise<SentMessage> {
    return this.#guard(() => {
      this.#requireInit();
      this.#requireUser();
      const content = "text" in input
        ? { kind: "text" as const, text: input.text }
        : { kind: "custom" as const, customType: input.customType, data: input.data };
      const checked = UserSendSchema.safeParse({
        clientMessageId: input.clientMessageId ?? crypto.randomUUID(),
        receiverType: input.receiverType,
        receiver: input.receiver,
        message: content,
      });
      if (!checked.success) {
        throw new GatewayError(
          "ERR_BAD_REQUEST",
          undefined,
          validationDetails(checked.error.issues, "body"),
        );
      }
      const body = checked.data;
      const earlier = this.#pendingSends.get(body.clientMessageId);
      if (earlier !== undefined) return earlier.promise; // The same send, still under way.
      let resolve!: (sent: SentMessage) => void;
      let reject!: (error: GatewayError) => void;
      const promise = new Promise<SentMessage>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      const pending: PendingSend = { body, promise, resolve, reject, via: "waiting" };
      this.#pendingSends.set(body.clientMessageId, pending);
      this.#rememberOwnSend(body.clientMessageId);
      this.#dispatchSend(pending);
      return promise;
    });
  }

  /** {@link GatewayClient.sendMessage} for a custom message (CometChat's name for it). */
  sendCustomMessage(input: CustomMessageInput): Promise<SentMessage> {
    return this.sendMessage(input);
  }

  /**
   * Tells `target` (a user, or a group's members) that the user is typing. Call it as often as
   * the user types (e.g. on every key): the client sends `start_typing` on the first call and
   * again, to renew the indicator, on a call at least half `timing.typingTimeoutMs` after the
   * last one it sent. The gateway ends the indicator `typingTimeoutMs` after the last
   * `start_typing`, so an app that stops calling lets it lapse by itself. Live only: when not
   * connected nothing is sent.
   */
  startTyping(target: TypingTarget): void {
    const socket = this.#socket;
    if (socket === null || !socket.handshaken || this.#timing === null) return;
    const key = typingKey(target);
    const now = this.#clock.now();
    const last = this.#typingSentAt.get(key);
    if (last !== undefined && now - last < this.#timing.typingTimeoutMs / 2) return;
    if (socket.typing("start_typing", target)) this.#typingSentAt.set(key, now);
  }

  /** Ends the typing indicator to `target` at once (`end_typing`); nothing when not connected. */
  endTyping(target: TypingTarget): void {
    this.#typingSentAt.delete(typingKey(target));
    const socket = this.#socket;
    if (socket !== null && socket.handshaken) socket.typing("end_typing", target);
  }

  /**
   * Stops everything this client runs — socket, timers, keep-alives, the visibility
   * listener — without logging out, and waits until its sockets have closed. The stored
   * session stays, so a new client's `init()` picks it up (an app restart).
   */
  async destroy(): Promise<void> {
    this.#reset();
    if (this.#visibility !== undefined) {
      this.#visibility.removeEventListener("visibilitychange", this.#onVisibility);
      this.#visibility = undefined;
    }
    await Promise.all([
      ...this.#closing,
      this.#positionWrites,
      this.#forgetting,
      this.#stream.idle(),
    ]);
  }

  // ---- the connection -------------------------------------------------------------------

  /** Opens a connection if the mode, the app state and the user allow one now. */
  #connectIfAllowed(resetBackoff = false): void {
    if (this.#socket !== null || this.#session === null || !this.#wantConnected) return;
    if (this.#appState === "background") {
      this.#reconnectPending = true;
      return;
    }
    if (this.#mode === "manual" && !this.#reconnectPending) return;
    if (resetBackoff) this.#attempt = 0;
    this.#cancelReconnect();
    this.#openSocket();
  }

  #openSocket(): void {
    const session = this.#session;
    if (session === null) return;
    const { url, protocols } = socketAddress({
      baseUrl: this.#options.baseUrl,
      path: this.#initReply?.websocketPath ?? WEBSOCKET_PATH,
      credential: session.credential,
      credentialIn: this.#options.credentialIn ?? "protocol",
    });
    const timing = this.#requireTiming();
    let socket: GatewaySocket;
    // Only the current socket is heard; an ended socket reports nothing more anyway.
    const current = () => this.#socket === socket;
    try {
      if (this.#WebSocket === undefined) throw new Error("no WebSocket implementation");
      socket = new GatewaySocket({
        url,
        protocols,
        WebSocket: this.#WebSocket,
        clock: this.#clock,
        timing,
        handshakeTimeoutMs: this.#options.handshakeTimeoutMs ?? 10_000,
        appState: this.#appState,
        backgroundService: this.#backgroundService,
        // Every connect frame resumes from the last event handed over (auto and manual mode,
        // every reconnection), and subscribes to presence as the init settings say.
        handshake: () => {
          const resume = this.#stream.position;
          return {
            ...(resume === null ? {} : { resume: { ...resume } }),
            ...(this.#presence === undefined ? {} : { presence: this.#presence }),
          };
        },
      }, {
        onConnected: (frame) => {
          if (current()) this.#onConnected(frame);
        },
        onBackgroundDeadline: (deadline) => {
          if (current()) this.#backgroundDeadline = deadline;
        },
        onMessage: (message, seq) => {
          if (current()) this.#stream.event(seq, message, false);
        },
        onSent: (frame) => {
          if (current()) this.#onSent(frame);
        },
        onTyping: (frame) => {
          if (current()) this.#onTyping(frame);
        },
        onPresence: (frame) => {
          if (current()) this.#onPresence(frame);
        },
        onError: (error, id) => {
          if (current()) this.#onError(socket, error, id);
        },
        onEnd: (end) => {
          if (current()) this.#onSocketEnd(socket, end);
        },
      });
    } catch (error) {
      // Report like any failed attempt, from a fresh task so callers see `connecting` first.
      this.#setStatus("connecting");
      this.#clock.setTimeout(() => {
        if (this.#socket === null && this.#status === "connecting") {
          this.#failWithoutTransport(GatewayError.fromUnknown(error));
        }
      }, 0);
      return;
    }
    this.#socket = socket;
    this.#setStatus("connecting");
  }

  #onConnected(frame: ConnectedInfo): void {
    this.#attempt = 0;
    this.#reconnectPending = false;
    this.#timing = frame.timing;
    this.#backgroundDeadline = frame.backgroundDeadline;
    // Before anything else: the replayed `message` frames come right after this one.
    this.#stream.connected(frame.stream);
    // Sends that could not reach the gateway, or whose answer is still out over HTTP, go again
    // on this connection (same clientMessageId: the gateway keeps one message per id).
    for (const pending of [...this.#pendingSends.values()]) {
      if (typeof pending.via === "string") this.#dispatchSend(pending);
    }
    if (this.#setStatus("connected")) {
      this.#emit((l) => l.onConnected?.(frame));
    }
    for (const waiter of this.#connectWaiters.splice(0)) waiter.resolve();
  }

  /** An event of the stream, in order and once: to the listeners, or the answer to a send. */
  #handOver(seq: number, message: Message, sent: boolean): void {
    const cid = message.clientMessageId;
    // Its own message comes back to the sending session as `sent`, or as `message` when it
    // is replayed or paged (the session may not have seen its `sent`).
    const own = sent ||
      (cid !== undefined && message.from === this.#user?.uid && this.#ownSends.has(cid));
    if (own) {
      if (cid !== undefined) this.#settleSend(cid, { message, seq });
      return;
    }
    for (const listener of [...this.#messageListeners.values()]) {
      try {
        if (message.kind === "text") listener.onTextMessageReceived?.(message, seq);
        else listener.onCustomMessageReceived?.(message, seq);
      } catch (error) {
        console.error("GatewayClient: a message listener threw", error);
      }
    }
  }

  /**
   * A `sent` frame answers the send at once; a first one (not a retry's answer) is also an
   * event of the stream, at its place (a retry's answer carries the seq of the first send, which
   * the stream hands over in its own time).
   */
  #onSent(frame: ServerFrameOf<"sent">): void {
    const cid = frame.message.clientMessageId;
    if (cid !== undefined) this.#settleSend(cid, { message: frame.message, seq: frame.seq });
    if (!frame.duplicate) this.#stream.event(frame.seq, frame.message, true);
  }

  #onTyping(frame: ServerFrameOf<"typing_started"> | ServerFrameOf<"typing_ended">): void {
    const { type, ...indicator } = frame;
    for (const listener of [...this.#messageListeners.values()]) {
      try {
        if (type === "typing_started") listener.onTypingStarted?.(indicator);
        else listener.onTypingEnded?.(indicator);
      } catch (error) {
        console.error("GatewayClient: a message listener threw", error);
      }
    }
  }

  #onPresence(frame: ServerFrameOf<"presence">): void {
    for (const change of frame.users) {
      for (const listener of [...this.#userListeners.values()]) {
        try {
          if (change.online) listener.onUserOnline?.(change);
          else listener.onUserOffline?.(change);
        } catch (error) {
          console.error("GatewayClient: a user listener threw", error);
        }
      }
    }
  }

  /** An error frame: the refusal of a send on this socket, or one for the connection listeners. */
  #onError(socket: GatewaySocket, error: GatewayError, id: string | number | undefined): void {
    if (id !== undefined) {
      for (const [cid, pending] of this.#pendingSends) {
        const via = pending.via;
        if (typeof via === "object" && via.socket === socket && via.frameId === id) {
          this.#pendingSends.delete(cid);
          pending.reject(error);
          return;
        }
      }
    }
    this.#emit((l) => l.onConnectionError?.(error));
  }

  /** The current socket ended (it has stopped its timers and failed its own waits). */
  #onSocketEnd(socket: GatewaySocket, end: SocketEndReport): void {
    this.#socket = null;
    this.#stream.detach();
    this.#typingSentAt.clear(); // The gateway ended this connection's indicators.
    // destroy() waits until the dropped socket has closed.
    this.#closing.add(socket.closed);
    void socket.closed.then(() => this.#closing.delete(socket.closed));
    this.#connectionEnded(end, end.handshakeError);
    // Sends this socket did not answer go again (over HTTP now: there is no socket).
    for (const pending of [...this.#pendingSends.values()]) {
      if (typeof pending.via === "object" && pending.via.socket === socket) {
        this.#dispatchSend(pending);
      }
    }
  }

  // ---- sends ----------------------------------------------------------------------------

  /** Sends (again) over the socket when connected, else over HTTP. */
  #dispatchSend(pending: PendingSend): void {
    if (this.#pendingSends.get(pending.body.clientMessageId) !== pending) return;
    const socket = this.#socket;
    const frameId = socket?.sendMessage(pending.body) ?? null;
    if (socket !== null && frameId !== null) {
      pending.via = { socket, frameId };
      return;
    }
    pending.via = "http";
    // destroy() waits for it, so that nothing of this client outlives it.
    const request = this.#sendOverHttp(pending);
    this.#closing.add(request);
    void request.then(() => this.#closing.delete(request));
  }

  async #sendOverHttp(pending: PendingSend): Promise<void> {
    const cid = pending.body.clientMessageId;
    const session = this.#session;
    const stillOut = () => this.#pendingSends.get(cid) === pending && pending.via === "http";
    let failure: GatewayError | null = null;
    if (session !== null) {
      try {
        const reply = await this.#rest.session.send({
          headers: this.#bearer(session),
          body: pending.body,
        });
        if (reply.status === 200) {
          this.#settleSend(cid, { message: reply.body.message, seq: reply.body.seq });
          return;
        }
        failure = GatewayError.fromPayload(reply.body, reply.status);
      } catch {
        // The gateway could not be reached: like one that is unavailable, below.
      }
    } else {
      failure = new GatewayError("ERROR_USER_NOT_LOGGED_IN", undefined, { clientMessageId: cid });
    }
    if (!stillOut()) return;
    if (failure !== null && failure.errorCode !== "ERR_SERVICE_UNAVAILABLE") {
      this.#pendingSends.delete(cid);
      pending.reject(failure);
      return;
    }
    // Not taken now: the next connection sends it (or the current one, if it came up while the
    // request was out).
    pending.via = "waiting";
    if (this.#socket?.handshaken) this.#dispatchSend(pending);
  }

  #settleSend(cid: string, sent: SentMessage): void {
    const pending = this.#pendingSends.get(cid);
    if (pending === undefined) return;
    this.#pendingSends.delete(cid);
    pending.resolve(sent);
  }

  /**
   * Rejects every send not answered yet: the message may or may not exist; the error's
   * `details.clientMessageId` lets the app send again without a second copy.
   */
  #failPendingSends(code: ErrorCode, description: string): void {
    const pending = [...this.#pendingSends.values()];
    this.#pendingSends.clear();
    for (const send of pending) {
      const { clientMessageId } = send.body;
      send.reject(new GatewayError(code, description, { clientMessageId }));
    }
  }

  #rememberOwnSend(cid: string): void {
    this.#ownSends.delete(cid);
    this.#ownSends.add(cid);
    if (this.#ownSends.size > OWN_SENDS_REMEMBERED) {
      this.#ownSends.delete(this.#ownSends.values().next().value!);
    }
  }

  // ---- the stream position --------------------------------------------------------------

  /** One page of the history route, for the stream reader. */
  async #fetchHistory(after: number, limit: number): Promise<HistoryPage> {
    const session = this.#requireUser();
    const reply = await this.#request(() =>
      this.#rest.session.history({ headers: this.#bearer(session), query: { after, limit } })
    );
    if (reply.status !== 200) throw GatewayError.fromPayload(reply.body, reply.status);
    return reply.body;
  }

  /**
   * Stores the position, after the events up to it were handed over (so a crash of the app
   * hands them over again rather than never). Writes are queued one after the other, and a
   * write that waits takes the newest position when its turn comes: at most one write runs and
   * one waits, however fast events arrive.
   */
  #persistPosition(): void {
    if (this.#positionWriteQueued || this.#user === null) return;
    this.#positionWriteQueued = true;
    const key = this.#positionKey(this.#user.uid);
    this.#positionWrites = this.#positionWrites.then(async () => {
      this.#positionWriteQueued = false;
      const position = this.#stream.position;
      // The user may have changed meanwhile: their position is theirs to write.
      if (position === null || this.#user === null || this.#positionKey(this.#user.uid) !== key) {
        return;
      }
      await this.#storage.setItem(
        key,
        JSON.stringify({ v: 1, ...position } satisfies StoredPosition),
      );
    }).catch((error) => console.error("GatewayClient: storing the stream position failed", error));
  }

  async #readPosition(uid: string): Promise<StreamPosition | null> {
    await this.#positionWrites;
    try {
      const raw = await this.#storage.getItem(this.#positionKey(uid));
      if (raw === null) return null;
      const { v, ...position } = JSON.parse(raw) as Partial<StoredPosition>;
      const checked = StreamPositionSchema.safeParse(position);
      return v === 1 && checked.success ? checked.data : null;
    } catch {
      return null;
    }
  }

  #positionKey(uid: string): string {
    return `${this.#storageKey()}:stream:${uid}`;
  }

  /**
   * Ends the connection for a local reason. A socket ends itself and reports back through
   * {@link GatewayClient#onSocketEnd}; without one (an attempt whose socket could not be
   * created) the funnel runs directly.
   */
  #endTransport(end: SocketEnd): void {
    const socket = this.#socket;
    if (socket !== null) {
      socket.close(end);
      return;
    }
    if (this.#status === "disconnected") {
      this.#settleDisconnectWaiters();
      return;
    }
    this.#connectionEnded(end, null);
  }

  /**
   * The disconnect funnel: every way a connection ends comes here, once per connection.
   * Order: forget the deadline, decide reconnection, record the reason, set the status
   * (listeners), settle waiters, schedule.
   */
  #connectionEnded(end: SocketEnd, handshakeError: GatewayError | null): void {
    this.#backgroundDeadline = null;

    if (endsSession(end.reason)) this.#wantConnected = false;
    const decision = decideReconnect({
      mode: this.#mode,
      appState: this.#appState,
      loggedIn: this.#session !== null && !endsSession(end.reason),
      wantConnected: this.#wantConnected,
      reason: end.reason,
    });
    if (decision === "never" && this.#mode === "manual") this.#wantConnected = false;
    let reconnectInMs: number | null = null;
    if (decision === "retry") {
      reconnectInMs = backoffDelay(this.#attempt++, this.#random, this.#backoff);
    }
    this.#reconnectPending = decision !== "never";

    const info: DisconnectInfo = {
      reason: end.reason,
      source: end.source,
      code: end.code,
      errorDescription: end.errorDescription ?? describe(end.reason),
      reconnect: decision,
      reconnectInMs,
      at: this.#clock.now(),
    };
    this.#lastDisconnect = info;
    if (reconnectInMs !== null) this.#scheduleReconnect(reconnectInMs);

    const attemptFailed = this.#status === "connecting";
    const changed = this.#setStatus("disconnected");
    if (changed) this.#emit((l) => l.onDisconnected?.(info));
    if (attemptFailed && end.reason !== "client_disconnect" && end.reason !== "destroyed") {
      const error = handshakeError ?? attemptError(info);
      this.#emit((l) => l.onConnectionError?.(error));
      for (const waiter of this.#connectWaiters.splice(0)) waiter.reject(error);
    } else {
      const error = new GatewayError("NO_WEBSOCKET_CONNECTION", info.errorDescription, {
        reason: info.reason,
      });
      for (const waiter of this.#connectWaiters.splice(0)) waiter.reject(error);
    }
    this.#settleDisconnectWaiters();
    if (endsSession(end.reason) && end.source === "server") void this.#forgetUser();
  }

  /** A failed attempt that never got a socket (e.g. the constructor threw). */
  #failWithoutTransport(error: GatewayError): void {
    this.#endTransport({
      reason: "network_lost",
      source: "client",
      code: ABNORMAL_CLOSE,
      errorDescription: error.errorDescription,
    });
  }

  #settleDisconnectWaiters(): void {
    for (const waiter of this.#disconnectWaiters.splice(0)) waiter.resolve();
  }

  #scheduleReconnect(delayMs: number): void {
    this.#cancelReconnectTimer();
    this.#reconnectPending = true;
    if (this.#appState === "background") return; // Resumed by setAppState("foreground").
    this.#reconnectTimer = this.#clock.setTimeout(() => {
      this.#reconnectTimer = null;
      if (this.#socket === null && this.#reconnectPending && this.#wantConnected) {
        this.#openSocket();
      }
    }, delayMs);
  }

  #cancelReconnectTimer(): void {
    if (this.#reconnectTimer !== null) {
      this.#clock.clearTimeout(this.#reconnectTimer);
      this.#reconnectTimer = null;
    }
  }

  #cancelReconnect(): void {
    this.#cancelReconnectTimer();
    this.#reconnectPending = false;
  }

  // ---- helpers --------------------------------------------------------------------------

  /** The one status setter: returns whether the status changed (listeners fire only then). */
  #setStatus(next: ConnectionStatus): boolean {
    if (this.#status === next) return false;
    this.#status = next;
    if (next === "connecting") this.#emit((l) => l.inConnecting?.());
    return true;
  }

  #emit(call: (listener: ConnectionListener) => void): void {
    for (const listener of [...this.#listeners.values()]) {
      try {
        call(listener);
      } catch (error) {
        // A throwing listener must not break the client or the other listeners.
        console.error("GatewayClient: a connection listener threw", error);
      }
    }
  }

  #stopKeepAlives(): void {
    for (const keepAlive of [...this.#keepAlives]) keepAlive.stop();
  }

  /** Ends everything local: used by a second init() and by destroy(). */
  #reset(): void {
    this.#wantConnected = false;
    this.#cancelReconnect();
    this.#stopKeepAlives();
    this.#failPendingSends(
      "NO_WEBSOCKET_CONNECTION",
      "The client was destroyed before the send was answered.",
    );
    this.#endTransport({ reason: "destroyed", source: "client", code: 1000 });
    this.#user = null;
    this.#session = null;
    this.#stream.reset(null); // The stored position stays, like the stored session.
  }

  /** Forgets the logged-in user here and in storage; `#forgetting` settles when it is done. */
  #forgetUser(): Promise<void> {
    this.#forgetting = this.#forgetUserNow();
    return this.#forgetting;
  }

  async #forgetUserNow(): Promise<void> {
    const uid = this.#user?.uid;
    this.#user = null;
    this.#session = null;
    this.#wantConnected = false;
    this.#cancelReconnect();
    this.#stopKeepAlives();
    this.#failPendingSends(
      "ERROR_USER_NOT_LOGGED_IN",
      "The session ended before the send was answered.",
    );
    this.#stream.reset(null);
    this.#ownSends.clear();
    if (this.#appId === null) return;
    const removals = [this.#storage.removeItem(this.#storageKey())];
    if (uid !== undefined) {
      // After the writes already queued, which see that the user is gone and write nothing.
      const key = this.#positionKey(uid);
      this.#positionWrites = this.#positionWrites.then(() => this.#storage.removeItem(key));
      removals.push(this.#positionWrites);
    }
    await Promise.all(removals);
  }

  async #readStoredLogin(): Promise<StoredLogin | null> {
    try {
      const raw = await this.#storage.getItem(this.#storageKey());
      if (raw === null) return null;
      const parsed = JSON.parse(raw) as Partial<StoredLogin>;
      const checked = LoginReplySchema.safeParse({ user: parsed.user, session: parsed.session });
      return parsed.v === 1 && checked.success ? { v: 1, ...checked.data } : null;
    } catch {
      return null;
    }
  }

  #storageKey(): string {
    return `liveness.v1:${this.#options.baseUrl.replace(/\/$/, "")}:${this.#appId}`;
  }

  get #mode(): Mode {
    return this.#initReply?.mode ?? "auto";
  }

  /** The gateway's timing (from init, then each `connected` frame); only used after init. */
  #requireTiming(): Timing {
    // No client-side defaults: the values live on the gateway, in one place (SPEC §2).
    if (this.#timing === null) throw new GatewayError("NOT_INITIALIZED");
    return this.#timing;
  }

  #bearer(session: Session): { authorization: string } {
    return { authorization: `Bearer ${session.credential}` };
  }

  #requireInit(): void {
    if (this.#initReply === null) throw new GatewayError("NOT_INITIALIZED");
  }

  #requireUser(): Session {
    if (this.#session === null) throw new GatewayError("ERROR_USER_NOT_LOGGED_IN");
    return this.#session;
  }

  #requireManual(): void {
    if (this.#mode !== "manual") throw new GatewayError("ERR_NOT_MANUAL_MODE");
  }

  /** Runs a check-then-act body so that a thrown GatewayError becomes a rejection. */
  async #guard<T>(body: () => T | Promise<T>): Promise<T> {
    return await body();
  }

  /** Runs a REST call, turning a network failure into a GatewayError. */
  async #request<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      throw GatewayError.fromUnknown(error);
    }
  }
}

function typingKey(target: TypingTarget): string {
  return `${target.receiverType}:${target.receiver}`;
}

function describe(reason: ConnectionEndReason): string {
  if (reason in LOCAL_DESCRIPTIONS) return LOCAL_DESCRIPTIONS[reason as LocalDisconnectReason];
  return `The gateway closed the connection (${reason}).`;
}

function attemptError(info: DisconnectInfo): GatewayError {
  const code = ATTEMPT_ERRORS[info.reason] ?? "NO_WEBSOCKET_CONNECTION";
  return new GatewayError(code, info.errorDescription, { reason: info.reason, code: info.code });
}
