// One WebSocket to the bridge that survives disconnects.
//
// - Authenticates by message ({"type": "auth"}): browsers cannot set an Authorization header
//   on a WebSocket, and a token in the URL would end up in logs and history (PROTOCOL.md §3).
// - Reconnects with jittered exponential backoff, so a restarted server is not met by every
//   dashboard at the same instant.
// - Keeps the set of wanted subscriptions and sends them again after each reconnect with
//   `since` = the last `received_at` seen on each, so the server replays what was missed
//   (no gap, no duplicate: the server deduplicates at the seam).

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30000;
const PING_EVERY_MS = 15000; // an app-level ping notices a dead path the browser does not
const PONG_WITHIN_MS = 10000;

export class Connection {
  constructor({ url, token, onMessage, onState }) {
    this.url = url;
    this.token = token; // null: anonymous (the server runs with BRIDGE_AUTH_REQUIRED=false)
    this.onMessage = onMessage;
    this.onState = onState;
    this.ws = null;
    this.ready = false; // authenticated and subscriptions sent
    this.stopped = false;
    this.attempt = 0;
    this.retryTimer = null;
    this.retryAt = 0;
    this.pingTimer = null;
    this.pongTimer = null;
    this.nextId = 1;
    this.pending = new Map(); // request id -> {resolve, reject}
    this.subs = new Map(); // key -> {msg, since, subscriptionId}
    this.byServerId = new Map(); // subscription_id -> key
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.stopTimers();
    if (this.ws) this.ws.close(1000, "bye");
    this.ws = null;
    this.state("stopped");
  }

  retryNow() {
    if (this.stopped || (this.ws && this.ws.readyState <= WebSocket.OPEN)) return;
    clearTimeout(this.retryTimer);
    this.open();
  }

  state(name, detail = {}) {
    this.onState?.(name, detail);
  }

  open() {
    this.state("connecting", { attempt: this.attempt });
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.token) {
        this.sendRaw({ type: "auth", token: this.token });
      }
      // Anonymous: the handshake itself authenticated us; the server greets with "connected".
    };
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = (ev) => this.closed(ev);
    ws.onerror = () => {}; // onclose follows with the code; nothing useful in the event
  }

  receive(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "batch" && Array.isArray(msg.messages)) {
      msg.messages.forEach((m) => this.dispatch(m));
      return;
    }
    this.dispatch(msg);
  }

  dispatch(msg) {
    const type = msg.type;
    if (type === "auth_response") {
      if (msg.success) this.authenticated(msg.user);
      else this.fatal(msg.error || "invalid_token", msg.message || "The token was refused.");
      return;
    }
    if (type === "connected" && !this.token) {
      this.authenticated("anonymous");
      return;
    }
    if (type === "pong") {
      clearTimeout(this.pongTimer);
      return;
    }
    // Remember where each subscription got to: that is where a resume starts.
    const key = msg.subscription_id ? this.byServerId.get(msg.subscription_id) : undefined;
    if (key !== undefined && msg.received_at) {
      const sub = this.subs.get(key);
      if (sub) sub.since = msg.received_at;
    }
    if (msg.id !== undefined && this.pending.has(msg.id)) {
      const { resolve, reject } = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (type === "error") reject(msg);
      else resolve(msg);
    }
    if (type === "subscribed" && key === undefined && typeof msg.id === "string") {
      const subKey = msg.id.startsWith("sub:") ? msg.id.slice(4) : undefined;
      if (subKey !== undefined && this.subs.has(subKey)) {
        this.subs.get(subKey).subscriptionId = msg.subscription_id;
        this.byServerId.set(msg.subscription_id, subKey);
      }
    }
    if (type === "error" && (msg.error === "token_expired" || msg.code === 401)) {
      this.fatal(msg.error, msg.message || "The token was refused.");
      return;
    }
    this.onMessage?.(msg, key);
  }

  authenticated(user) {
    this.attempt = 0;
    this.ready = true;
    this.state("live", { user });
    for (const key of this.subs.keys()) this.sendSubscribe(key);
    this.startTimers();
  }

  // A refused or expired token: reconnecting with the same one cannot help.
  fatal(error, message) {
    this.stopped = true;
    this.stopTimers();
    this.state("auth_failed", { error, message });
    if (this.ws) this.ws.close(1000, "auth failed");
  }

  closed(ev) {
    this.ws = null;
    this.ready = false;
    this.stopTimers();
    for (const { reject } of this.pending.values()) reject({ error: "disconnected" });
    this.pending.clear();
    if (this.stopped) return;
    if (ev.code === 4001) {
      this.fatal("token_expired", "The token has expired. Paste a fresh one.");
      return;
    }
    if (ev.code === 1008 && this.token) {
      this.fatal("unauthorized", ev.reason || "Authentication failed.");
      return;
    }
    this.scheduleRetry(ev.code);
  }

  scheduleRetry(code) {
    // "Equal jitter": half the exponential delay fixed, half random. Never zero, never
    // synchronised across clients.
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = cap / 2 + Math.random() * (cap / 2);
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    this.state("reconnecting", { at: this.retryAt, attempt: this.attempt, code });
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  startTimers() {
    this.stopTimers();
    this.pingTimer = setInterval(() => {
      if (!this.ready) return;
      this.sendRaw({ type: "ping" });
      clearTimeout(this.pongTimer);
      this.pongTimer = setTimeout(() => this.ws?.close(4000, "no pong"), PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  stopTimers() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
  }

  sendRaw(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  // A request with an id; resolves with the direct reply, rejects with an error message.
  request(msg) {
    const id = `r${this.nextId++}`;
    return new Promise((resolve, reject) => {
      if (!this.ready || !this.sendRaw({ ...msg, id })) {
        reject({ error: "disconnected", message: "Not connected to the server." });
        return;
      }
      this.pending.set(id, { resolve, reject });
    });
  }

  // Wanted subscriptions, kept across reconnects. `msg.since` is the first resume point (for
  // a backfill); later the last received_at seen replaces it.
  subscribe(key, msg) {
    const { since, ...rest } = msg;
    this.subs.set(key, { msg: rest, since: since ?? null, subscriptionId: null });
    if (this.ready) this.sendSubscribe(key);
  }

  unsubscribe(key) {
    const sub = this.subs.get(key);
    if (!sub) return;
    this.subs.delete(key);
    if (sub.subscriptionId) {
      this.byServerId.delete(sub.subscriptionId);
      if (this.ready) this.sendRaw({ type: "unsubscribe", subscription_id: sub.subscriptionId });
    }
  }

  sendSubscribe(key) {
    const sub = this.subs.get(key);
    const msg = { type: "subscribe", id: `sub:${key}`, ...sub.msg };
    if (sub.since) {
      msg.since = sub.since;
      delete msg.snapshot; // the replay brings us up to date instead
    }
    this.sendRaw(msg);
  }
}
