'use strict';
/**
 * The WebSocket client both pages share (protocol: backend/realtime/consumers.py).
 *
 * It keeps `lastSeq`, the highest event seq it has handed on, and reconnects with `?after=lastSeq` so
 * the server replays exactly the gap (or sends a fresh snapshot when the gap is too large). The page
 * decides what a snapshot or an event means; this module only keeps the pipe open and ordered.
 */

export const CLOSE_UNAUTHENTICATED = 4401;
export const CLOSE_FORBIDDEN = 4403;

const PING_EVERY_MS = 20_000; // the server answers with a pong, which also feeds the watchdog
const SILENCE_LIMIT_MS = 45_000; // no frame at all for this long: the connection is dead, whatever it says
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10_000;
const OFFLINE_AFTER_ATTEMPTS = 5; // still retrying, but tell the operator the board is not live

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
    socket.addEventListener('open', () => socket === this.socket && this.armTimers());
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
        this.handlers.onSnapshot({ ...frame, orders });
        break;
      }
      case 'events': {
        // The server sends events in seq order, each once. The page still applies an event only when
        // it is newer than its order's seq: a snapshot's order may already hold a later change.
        const events = frame.events || [];
        if (events.length) {
          this.lastSeq = Math.max(this.lastSeq || 0, ...events.map((event) => event.seq));
          this.handlers.onEvents(events);
        }
        break;
      }
      case 'locations':
        if (this.handlers.onLocations) this.handlers.onLocations(frame.couriers || []);
        break;
      case 'error':
        console.warn('live socket error', frame.code, frame.error); // eslint-disable-line no-console
        if (this.handlers.onError) this.handlers.onError(frame);
        break;
      default:
        break; // pong, and frame types a newer server may add
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
