'use strict';
/**
 * The courier's page, the reference client of /ws/couriers/: the orders assigned to this courier, live,
 * and, while on shift, the browser's position sent as `location` frames.
 *
 * The server drops a position that comes sooner than REALTIME_LOCATION_MIN_INTERVAL_SECONDS after the
 * last one (with a `rate_limited` error), so positions are sent no more often than that: the newest
 * one waits for its turn and replaces any older one still waiting.
 */
import { LiveSocket, bindIndicator } from './live.js';
import { LiveMap } from './map.js';
import { TERMINAL, formatClock, formatCountdown, gettext, h, interpolate, readJSON, store, telHref } from './util.js';

const config = readJSON('liveops-config');
const labels = readJSON('liveops-labels');
const me = config.courier;
// The server measures the interval between arrivals: a little slack keeps network jitter from
// making a position arrive early.
const SEND_MARGIN_MS = 250;
const minIntervalMs = Math.max(0, Number(config.locationMinIntervalSeconds) || 0) * 1000 + SEND_MARGIN_MS;
const SHIFT_KEY = 'liveops.courier.onShift';

const orders = new Map(); // id → public order payload, as the stream gives it
const root = document.querySelector('[data-role="courier"]');
const part = (role) => root.querySelector(`[data-role="${role}"]`);
const list = document.querySelector('[data-testid="courier-orders"]');
const empty = document.querySelector('[data-testid="orders-empty"]');
const toggle = document.querySelector('[data-testid="shift-toggle"]');
const sentNote = document.querySelector('[data-testid="location-sent"]');
const errorNote = document.querySelector('[data-testid="location-error"]');
const map = new LiveMap(document.querySelector('[data-testid="map"]'), { compact: true });

/** What a status means for the courier, in plain words. */
function statusForCourier(status) {
  const words = {
    scheduled: gettext('Scheduled: the kitchens start it later'),
    submitted: gettext('Sent to the kitchens'),
    cooking: gettext('The kitchens are cooking'),
    ready: gettext('Ready for pickup'),
    courier_search: gettext('Ready for pickup'),
    delivering: gettext('On the way to the customer'),
    delivered: gettext('Delivered'),
    failed: gettext('Failed: do not deliver, call the operator'),
    cancelled: gettext('Cancelled: do not deliver'),
  };
  return words[status] || labels[status] || status;
}

// --- orders --------------------------------------------------------------------------------------------

function renderOrders() {
  const shown = [...orders.values()].sort(
    (a, b) => TERMINAL.has(a.status) - TERMINAL.has(b.status) || Date.parse(a.promised_at) - Date.parse(b.promised_at),
  );
  list.replaceChildren(...shown.map(orderCard));
  empty.textContent = gettext('No orders are assigned to you right now.');
  empty.hidden = shown.length > 0;
  map.render(orders);
}

function orderCard(order) {
  const due = TERMINAL.has(order.status) ? null : formatCountdown(order.promised_at);
  const pickups = (order.restaurants || []).map((restaurant, index) =>
    h(
      'li',
      { class: 'courier-stop', dataset: { stop: 'pickup' } },
      h('span', { class: 'courier-stop-kind', text: interpolate(gettext('Pickup %s'), [index + 1]) }),
      h(
        'span',
        { class: 'courier-stop-place' },
        h('span', { class: 'courier-stop-name', text: restaurant.name }),
        restaurant.address ? h('span', { class: 'courier-stop-address', text: restaurant.address }) : null,
      ),
    ),
  );
  const unplaced = { not_found: gettext('Address not found on the map') }[order.destination_status];
  return h(
    'li',
    {
      class: `courier-order status-${order.status}`,
      dataset: { testid: `courier-order-${order.id}`, orderId: order.id, status: order.status },
    },
    h(
      'div',
      { class: 'courier-order-head' },
      h('h3', { text: interpolate(gettext('Order #%s'), [order.id]) }),
      h('span', { class: `status-pill status-${order.status}`, text: labels[order.status] || order.status }),
      due
        ? h('span', { class: `courier-order-due${due.late ? ' is-late' : ''}`, title: due.title, text: due.text })
        : null,
    ),
    h('p', { class: 'courier-order-status', dataset: { role: 'status-words' }, text: statusForCourier(order.status) }),
    h(
      'ol',
      { class: 'courier-stops' },
      ...pickups,
      h(
        'li',
        { class: 'courier-stop', dataset: { stop: 'dropoff' } },
        h('span', { class: 'courier-stop-kind', text: gettext('Drop-off') }),
        h(
          'span',
          { class: 'courier-stop-place' },
          h('span', { class: 'courier-stop-name', text: order.delivery_address }),
          unplaced ? h('span', { class: 'courier-stop-note', text: unplaced }) : null,
        ),
      ),
    ),
    customerContact(order),
  );
}

/** Whom to hand the order to: the customer's first name and a call button; nothing when neither is known. */
function customerContact(order) {
  const customer = order.customer || {};
  const name = (customer.first_name || '').trim();
  const phone = (customer.phone || '').trim();
  if (!name && !phone) return null;
  return h(
    'div',
    { class: 'courier-customer', dataset: { testid: `courier-customer-${order.id}` } },
    h('span', { class: 'courier-stop-kind', text: gettext('Customer') }),
    name ? h('span', { class: 'courier-customer-name', text: name }) : null,
    phone
      ? h('a', {
          class: 'courier-call',
          href: telHref(phone),
          dataset: { testid: `courier-call-${order.id}` },
          text: interpolate(gettext('Call %s'), [phone]),
        })
      : null,
  );
}

/** An order this socket reported: kept while it is this courier's, replaced only by a newer version. */
function apply(order, seq) {
  const known = orders.get(order.id);
  if (known && seq <= known.seq) return;
  if (!order.courier || order.courier.id !== me.id) {
    orders.delete(order.id); // handed to another courier
    return;
  }
  orders.set(order.id, order);
}

// --- location sharing ----------------------------------------------------------------------------------

const shift = { on: false, watch: null, pending: null, timer: null, lastSentAt: null };

function showError(text) {
  errorNote.textContent = text || '';
  errorNote.hidden = !text;
}

function renderShift() {
  toggle.setAttribute('aria-pressed', String(shift.on));
  part('shift-state').textContent = shift.on
    ? gettext('On shift: your position is shared with the operators.')
    : gettext('Off shift: your position is not shared.');
}

function startShift() {
  if (!window.isSecureContext || !('geolocation' in navigator)) {
    showError(gettext('This browser cannot share its location here (it needs HTTPS).'));
    return;
  }
  shift.on = true;
  store.set(SHIFT_KEY, 'on');
  showError('');
  shift.watch = navigator.geolocation.watchPosition(onPosition, onPositionError, {
    enableHighAccuracy: true,
    maximumAge: 10_000,
    timeout: 30_000,
  });
  renderShift();
}

function stopShift() {
  if (shift.watch !== null) navigator.geolocation.clearWatch(shift.watch);
  clearTimeout(shift.timer);
  Object.assign(shift, { on: false, watch: null, pending: null, timer: null });
  store.set(SHIFT_KEY, 'off');
  renderShift();
}

function onPosition(position) {
  const { latitude: lat, longitude: lng } = position.coords;
  shift.pending = { lat, lng };
  if (errorNote.dataset.source === 'geolocation') showError('');
  // Draw our own position at once: the courier stream does not echo it back.
  map.updateCourier({ id: me.id, name: me.name, lat, lng, at: new Date(position.timestamp).toISOString() }, true);
  map.render(orders);
  sendSoon();
}

function onPositionError(error) {
  errorNote.dataset.source = 'geolocation';
  if (error.code === error.PERMISSION_DENIED) {
    stopShift();
    showError(gettext('Location access is blocked: allow it in the browser settings to share your position.'));
  } else {
    showError(gettext('Your position is not available right now; still trying.'));
  }
}

/** Sends the newest position now, or when the interval since the last one has passed. */
function sendSoon() {
  if (!shift.on || !shift.pending || shift.timer) return;
  const wait = shift.lastSentAt === null ? 0 : shift.lastSentAt + minIntervalMs - performance.now();
  if (wait > 0) {
    shift.timer = setTimeout(() => {
      shift.timer = null;
      sendSoon();
    }, wait);
    return;
  }
  const position = shift.pending;
  // Not connected: the position stays pending and goes out once the socket is back (onState).
  if (!live.send({ type: 'location', lat: position.lat, lng: position.lng })) return;
  shift.pending = null;
  shift.lastSentAt = performance.now();
  sentNote.textContent = interpolate(
    gettext('Position sent at %(time)s (%(lat)s, %(lng)s)'),
    { time: formatClock(new Date().toISOString(), true), lat: position.lat.toFixed(5), lng: position.lng.toFixed(5) },
    true,
  );
}

toggle.addEventListener('click', () => (shift.on ? stopShift() : startShift()));

// --- the stream ----------------------------------------------------------------------------------------

const indicator = bindIndicator(document.querySelector('[data-testid="live-indicator"]'));

const live = new LiveSocket(config.wsPath, {
  onSnapshot(frame) {
    orders.clear();
    for (const order of frame.orders || []) apply(order, -1);
    renderOrders();
  },
  onEvents(batch) {
    for (const event of batch) if (event.order) apply(event.order, event.seq);
    renderOrders();
  },
  onLocations(couriers) {
    map.moveCouriers(couriers, orders);
  },
  onError(frame) {
    errorNote.dataset.source = 'server';
    showError(
      interpolate(
        gettext('%(time)s: the server refused a frame: %(error)s'),
        { time: formatClock(new Date().toISOString(), true), error: frame.error || frame.code },
        true,
      ),
    );
  },
  onState(state, reason) {
    indicator(state, reason);
    if (state === 'connected') sendSoon();
  },
});

live.start();
renderShift();
if (store.get(SHIFT_KEY) === 'on') startShift();
setInterval(renderOrders, 30_000); // the countdowns

window.liveops = {
  lastSeq: () => live.lastSeq,
  orders: () => orders,
  dropConnection: () => live.dropConnection(),
};
