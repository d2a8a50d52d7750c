'use strict';
/**
 * The WebSocket client every page shares (protocol v2: backend/realtime/consumers.py).
 *
 * It keeps `lastSeq`, the highest event seq it has received, and reconnects with `?after=lastSeq` so
 * the server replays exactly the gap (or sends a fresh snapshot when the gap is too large).
 *
 * Events carry what changed, not the whole order: this module holds the orders of the stream (from the
 * snapshot, `order.created` events, a replay's orders and the orders it asked for) and merges each event
 * into its order (`applyEvent`), so the page gets every event with `event.order` the order whole, as
 * protocol v1 gave it. An event for an order it does not hold waits while the order is asked for
 * (`{"type": "order", "id": ...}`), then goes on with it. The page decides what a snapshot or an event
 * means; this module keeps the pipe open, ordered and whole.
 */

export const CLOSE_UNAUTHENTICATED = 4401;
export const CLOSE_FORBIDDEN = 4403;

const PING_EVERY_MS = 20_000; // the server answers with a pong, which also feeds the watchdog
const SILENCE_LIMIT_MS = 45_000; // no frame at all for this long: the connection is dead, whatever it says
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10_000;
const OFFLINE_AFTER_ATTEMPTS = 5; // still retrying, but tell the operator the board is not live
const ASKING_AT_ONCE = 4; // order requests in flight: they count against the socket's frame rate
const ASK_AGAIN_MS = 1_500; // after the server dropped a request over the frame rate

/**
 * The order once a v2 event is applied to it: the event's changed fields set, its status the event's
 * `to`, its legs merged by id, its open alerts gaining, updating or (once cleared) losing the event's
 * alert, its seq the event's. Null when the event names a leg the order does not have (ask for it).
 */
export function applyEvent(order, event) {
  const { id, legs, ...fields } = event.order; // eslint-disable-line no-unused-vars
  const next = { ...order, ...fields, seq: event.seq };
  if (event.to) next.status = event.to;
  if (legs) {
    const merged = (order.legs || []).map((leg) => ({ ...leg }));
    for (const change of legs) {
      const leg = merged.find((item) => item.id === change.id);
      if (leg) Object.assign(leg, change);
      else if (change.kind) merged.push({ ...change }); // a new leg comes whole
      else return null;
    }
    next.legs = merged;
  }
  if (event.alert && Array.isArray(order.alerts)) {
    const open = order.alerts.filter((alert) => alert.id !== event.alert.id);
    const index = order.alerts.findIndex((alert) => alert.id === event.alert.id);
    if (!event.alert.cleared_at) open.splice(index < 0 ? 0 : index, 0, event.alert); // newest first
    next.alerts = open;
  }
  return next;
}

export class LiveSocket {
  /**
   * @param {string} path  e.g. "/ws/operators/"
   * @param {object} handlers  onSnapshot(frame), onEvents(events), onLocations(couriers),
   *                           onState(state, reason) with state connected | reconnecting | offline,
   *                           onError(frame) for the server's error frames (optional)
   */
  constructor(path, handlers) {
    this.path = path;
    this.handlers = handlers;
    this.lastSeq = null; // null until the first snapshot: then the first connection asks for one
    this.snapshotOrders = []; // the parts of a snapshot that came in several frames
    this.orders = new Map(); // order id → the order whole, as the events so far leave it
    this.waiting = new Map(); // order id → its events received while the order is asked for
    this.asking = new Set(); // order ids asked for on the current socket, not yet answered
    this.state = null;
    this.socket = null;
    this.failures = 0;
    this.timers = { reconnect: null, ping: null, watchdog: null };
    this.stopped = false;
    window.addEventListener('online', () => this.reconnectNow());
    // Tell the operator at once; the socket itself may take up to the watchdog's limit to notice.
    window.addEventListener('offline', () => this.setState('offline', 'network'));
  }

  start() {
    this.setState('reconnecting', 'starting');
    this.connect();
  }

  /** Closes the socket as a network failure would: the normal reconnect-and-resume path follows. */
  dropConnection() {
    this.abandon();
    this.scheduleReconnect();
  }

  // --- connection lifecycle -----------------------------------------------------------------------------

  connect() {
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = null;
    const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws';
    const query = this.lastSeq === null ? '' : `?after=${encodeURIComponent(this.lastSeq)}`;
    let socket;
    try {
      socket = new WebSocket(`${scheme}://${window.location.host}${this.path}${query}`);
    } catch (error) {
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    // An abandoned socket may still fire while it closes: only the current one counts.
    socket.addEventListener('open', () => {
      if (socket !== this.socket) return;
      this.armTimers();
      this.asking.clear(); // asked on a socket that is gone: ask again
      this.askMore();
    });
    socket.addEventListener('message', (message) => socket === this.socket && this.receive(message.data));
    socket.addEventListener('close', (event) => this.closed(socket, event));
    // 'error' is always followed by 'close', which does the work.
    this.feedWatchdog(); // a handshake that hangs is dropped like a silent connection
  }

  closed(socket, event) {
    if (socket !== this.socket) return; // an abandoned socket finishing its close handshake
    this.socket = null;
    this.clearTimers();
    if (event.code === CLOSE_UNAUTHENTICATED || event.code === CLOSE_FORBIDDEN) {
      // Retrying cannot help: the session expired or this user may not watch this stream.
      this.stopped = true;
      this.setState('offline', event.code === CLOSE_UNAUTHENTICATED ? 'login' : 'forbidden');
      return;
    }
    this.scheduleReconnect();
  }

  /** Forget the current socket without waiting for a close handshake a dead network never completes. */
  abandon() {
    const socket = this.socket;
    this.socket = null;
    this.clearTimers();
    if (socket) {
      try {
        socket.close(1000, 'client reconnecting');
      } catch (error) {
        /* already closed */
      }
    }
  }

  scheduleReconnect() {
    if (this.stopped || this.timers.reconnect) return;
    this.failures += 1;
    const offline = navigator.onLine === false || this.failures > OFFLINE_AFTER_ATTEMPTS;
    this.setState(offline ? 'offline' : 'reconnecting', offline ? 'network' : 'retrying');
    // Exponential backoff with jitter, so a server restart is not met by every browser at once.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (this.failures - 1));
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.timers.reconnect = setTimeout(() => this.connect(), delay);
  }

  reconnectNow() {
    if (this.stopped) return;
    if (this.socket) {
      // Back online with the socket still open: the next pong (or the watchdog) settles the state.
      this.send({ type: 'ping' });
      return;
    }
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = null;
    this.connect();
  }

  armTimers() {
    this.clearTimers();
    this.timers.ping = setInterval(() => this.send({ type: 'ping' }), PING_EVERY_MS);
    this.feedWatchdog();
  }

  feedWatchdog() {
    clearTimeout(this.timers.watchdog);
    this.timers.watchdog = setTimeout(() => this.dropConnection(), SILENCE_LIMIT_MS);
  }

  clearTimers() {
    clearInterval(this.timers.ping);
    clearTimeout(this.timers.watchdog);
    this.timers.ping = null;
    this.timers.watchdog = null;
  }

  /** Sends a frame if the socket is open; returns whether it did. */
  send(frame) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  setState(state, reason) {
    if (state === this.state && reason === this.reason) return;
    this.state = state;
    this.reason = reason;
    if (this.handlers.onState) this.handlers.onState(state, reason);
  }

  // --- frames -------------------------------------------------------------------------------------------

  receive(text) {
    this.feedWatchdog();
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (error) {
      return;
    }
    // Only a frame proves the stream works: the server answers every connect with a snapshot or an
    // events frame (an empty one when up to date), while a refused socket is opened and just closed.
    this.failures = 0;
    this.setState('connected', 'live');
    switch (frame.type) {
      case 'snapshot': {
        // A snapshot replaces everything, including where we are in the stream. A large one comes in
        // `parts` frames, one after the other: it is applied once the last has arrived.
        const part = Number(frame.part) || 1;
        if (part === 1) this.snapshotOrders = [];
        this.snapshotOrders.push(...(frame.orders || []));
        if (part < (Number(frame.parts) || 1)) break;
        const orders = this.snapshotOrders;
        this.snapshotOrders = [];
        this.lastSeq = Number(frame.seq) || 0;
        this.orders = new Map(orders.map((order) => [order.id, order]));
        this.waiting.clear(); // the snapshot holds every order as it now stands
        this.asking.clear();
        this.handlers.onSnapshot({ ...frame, orders });
        break;
      }
      case 'events': {
        // The server sends events in seq order, each once. The page still applies an event only when
        // it is newer than its order's seq: a snapshot's order may already hold a later change.
        const events = frame.events || [];
        if (events.length) {
          this.lastSeq = Math.max(this.lastSeq || 0, ...events.map((event) => event.seq));
          const ready = [];
          // A replay also carries the orders its events touched, whole and as they now stand.
          for (const order of frame.orders || []) this.settle(order, ready);
          for (const event of events) this.take(event, ready);
          if (ready.length) this.handlers.onEvents(ready);
        }
        break;
      }
      case 'order': {
        // The answer to an "order" frame: the order whole; the events that waited for it go on.
        if (!frame.order) break;
        this.asking.delete(frame.order.id);
        const ready = [];
        this.settle(frame.order, ready);
        if (ready.length) this.handlers.onEvents(ready);
        this.askMore();
        break;
      }
      case 'locations':
        if (this.handlers.onLocations) this.handlers.onLocations(frame.couriers || []);
        break;
      case 'error':
        if (frame.code === 'not_found' && this.waiting.has(frame.id)) {
          // Not on this stream (any more): its events go on without an order.
          this.asking.delete(frame.id);
          const events = this.waiting.get(frame.id);
          this.waiting.delete(frame.id);
          this.handlers.onEvents(events.map((event) => ({ ...event, order: undefined })));
          this.askMore();
          break;
        }
        if (frame.code === 'rate_limited' && this.asking.size) {
          // Some request was dropped: ask again for what is still unanswered, a little later.
          this.asking.clear();
          setTimeout(() => this.askMore(), ASK_AGAIN_MS);
        }
        console.warn('live socket error', frame.code, frame.error); // eslint-disable-line no-console
        if (this.handlers.onError) this.handlers.onError(frame);
        break;
      default:
        break; // pong, and frame types a newer server may add
    }
  }

  // --- the orders events apply to ------------------------------------------------------------------------

  /** One event: merged into the order held (or, `order.created`, the order itself), or held back while its
   * order is asked for. What is ready goes into `ready` with `order` the order whole. */
  take(event, ready) {
    const change = event.order;
    if (!change || change.id === undefined) {
      ready.push(event);
      return;
    }
    const waiting = this.waiting.get(change.id);
    if (waiting) {
      waiting.push(event);
      return;
    }
    const held = this.orders.get(change.id);
    let order = null;
    if (held && event.seq <= (held.seq || 0)) order = held; // already part of it
    else if (held) order = applyEvent(held, event);
    else if (event.type === 'order.created') order = { ...change };
    if (!order) {
      this.waiting.set(change.id, [event]);
      this.askMore();
      return;
    }
    this.orders.set(order.id, order);
    ready.push({ ...event, order });
  }

  /** A whole order arrived (an answer or a replay's): hold it, then pass on the events that waited for it. */
  settle(order, ready) {
    const held = this.orders.get(order.id);
    if (!held || (order.seq || 0) >= (held.seq || 0)) this.orders.set(order.id, order);
    const waiting = this.waiting.get(order.id);
    if (!waiting) return;
    this.waiting.delete(order.id);
    this.asking.delete(order.id);
    for (const event of waiting) this.take(event, ready);
  }

  /** Ask for the orders events wait for, a few at a time (each request counts against the frame rate). */
  askMore() {
    for (const orderId of this.waiting.keys()) {
      if (this.asking.size >= ASKING_AT_ONCE) return;
      if (this.asking.has(orderId)) continue;
      if (!this.send({ type: 'order', id: orderId })) return; // asked again once a socket is open
      this.asking.add(orderId);
    }
  }
}

/** The indicator's words for each connection state and close reason (read when an indicator is bound). */
function indicatorLabels() {
  return {
    connected: gettext('Live'),
    reconnecting: gettext('Reconnecting…'),
    starting: gettext('Connecting…'),
    offline: gettext('Offline'),
    login: gettext('Signed out: log in again'),
    forbidden: gettext('Not allowed'),
  };
}

/** Keeps a live indicator element (data-testid="live-indicator") in step with the socket. */
export function bindIndicator(element, labels = indicatorLabels()) {
  return (state, reason) => {
    element.dataset.state = state;
    const text = element.querySelector('[data-role="label"]') || element;
    text.textContent = labels[reason] || labels[state] || state;
  };
}
