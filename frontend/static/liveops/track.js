'use strict';
/**
 * The customer's tracking page: one order's steps, its courier on a small map, and its history, live.
 *
 * The server renders the steps with the status at page load, so the page reads right before (or
 * without) JavaScript; this module keeps it current from the order's own socket.
 */
import { LiveSocket, bindIndicator } from './live.js';
import { LiveMap } from './map.js';
import {
  TERMINAL,
  api,
  eventTypeLabel,
  formatClock,
  formatDateTime,
  formatMoney,
  gettext,
  h,
  interpolate,
  readJSON,
} from './util.js';

const config = readJSON('liveops-config');
const labels = readJSON('liveops-labels');
const orderId = config.orderId;
const pipeline = config.pipeline;
const orders = new Map(); // one entry; a Map so window.liveops looks the same on both pages
const events = new Map(); // seq → event, history from the API merged with live ones
// Customers see status changes; provider legs are the operators' business.
const SHOWN_TYPES = new Set(['order.created', 'order.status', 'order.override', 'order.retry']);

const root = document.querySelector('[data-role="track"]');
const part = (role) => root.querySelector(`[data-role="${role}"]`);
const steps = document.querySelector('[data-testid="timeline"]');
const map = new LiveMap(document.querySelector('[data-testid="map"]'), { compact: true });
map.selected = orderId; // the customer's own order stays drawn even once delivered

function render() {
  const order = orders.get(orderId);
  if (!order) return;
  const status = part('status');
  status.textContent = labels[order.status] || order.status;
  status.className = `status-pill status-${order.status}`;
  part('eta').textContent = order.eta ? formatDateTime(order.eta) : gettext('As soon as possible');
  part('total').textContent = formatMoney(order.total);
  part('courier').textContent = courierNote(order);
  // Why an order failed stays with operators (it may quote a provider's error): the customer gets a sorry.
  const reason = part('reason');
  const failed = order.status === 'failed';
  reason.textContent = failed ? gettext('Sorry: we could not complete this order.') : '';
  reason.hidden = !failed;
  renderSteps(order);
  map.render(orders);
}

function courierNote(order) {
  if (order.courier) return interpolate(gettext('Your courier: %s'), [order.courier.name]);
  if (TERMINAL.has(order.status)) return '';
  if (order.status === 'courier_search') return gettext('Your food is ready; we are finding a courier.');
  return gettext('A courier is assigned once the food is ready.');
}

function renderSteps(order) {
  steps.dataset.status = order.status;
  const ordered = [...events.values()].sort((a, b) => a.seq - b.seq);
  const reachedAt = new Map();
  for (const event of ordered) {
    if (event.to && !reachedAt.has(event.to)) reachedAt.set(event.to, event.at);
  }
  if (!reachedAt.has(pipeline[0]) && order.created_at) reachedAt.set(pipeline[0], order.created_at);
  // A failed or cancelled order keeps the steps it got through; the last one it was in shows where.
  let reached = order.status;
  const stopped = order.status === 'failed' || order.status === 'cancelled';
  if (stopped) {
    const stop = [...ordered].reverse().find((event) => event.to === order.status);
    reached = stop && stop.from ? stop.from : pipeline[0];
  }
  const current = pipeline.indexOf(reached);
  for (const step of steps.querySelectorAll('[data-step]')) {
    const name = step.dataset.step;
    const time = step.querySelector('time');
    if (name === 'end') {
      step.hidden = !stopped;
      step.querySelector('[data-role="end-label"]').textContent = stopped ? labels[order.status] : '';
      step.classList.toggle('is-failed', stopped);
      setTime(time, stopped ? reachedAt.get(order.status) : null);
      if (stopped) step.setAttribute('aria-current', 'step');
      else step.removeAttribute('aria-current');
      continue;
    }
    const index = pipeline.indexOf(name);
    const done = index < current || (index === current && (stopped || order.status === 'delivered'));
    const isCurrent = index === current && !stopped && order.status !== 'delivered';
    step.classList.toggle('is-done', done);
    step.classList.toggle('is-current', isCurrent || (order.status === 'delivered' && name === 'delivered'));
    step.classList.toggle('is-todo', index > current);
    if (isCurrent || (order.status === 'delivered' && name === 'delivered')) step.setAttribute('aria-current', 'step');
    else step.removeAttribute('aria-current');
    setTime(time, index <= current ? reachedAt.get(name) : null);
  }
}

function setTime(node, iso) {
  if (!node) return;
  node.textContent = iso ? formatClock(iso) : '';
  if (iso) node.setAttribute('datetime', iso);
  else node.removeAttribute('datetime');
}

function renderEvents() {
  const list = part('events');
  const shown = [...events.values()]
    .filter((event) => SHOWN_TYPES.has(event.type))
    .sort((a, b) => b.seq - a.seq);
  list.replaceChildren(
    ...shown.map((event) => {
      const change =
        event.from && event.to && event.from !== event.to
          ? `${labels[event.from] || event.from} → ${labels[event.to] || event.to}`
          : labels[event.to] || '';
      return h(
        'li',
        { class: 'timeline-item', dataset: { seq: event.seq, type: event.type } },
        h('time', { datetime: event.at, text: formatClock(event.at, true) }),
        h(
          'div',
          { class: 'timeline-body' },
          h('span', { class: 'timeline-title', text: eventTypeLabel(event.type) }),
          change ? h('span', { class: 'timeline-change', text: change }) : null,
          event.reason ? h('span', { class: 'timeline-reason', text: event.reason }) : null,
        ),
      );
    }),
  );
  part('events-empty').hidden = shown.length > 0;
}

function remember(event) {
  // Live events and the API give the same public event (seqs with gaps: operators' events are not sent
  // here); keep the fields the list needs. `reason` is the customer's own, when they cancelled.
  events.set(event.seq, { seq: event.seq, type: event.type, from: event.from, to: event.to, at: event.at, reason: event.reason });
}

const live = new LiveSocket(config.wsPath, {
  onSnapshot(frame) {
    const order = (frame.orders || []).find((item) => item.id === orderId);
    if (order) orders.set(orderId, order);
    render();
  },
  onEvents(batch) {
    for (const event of batch) {
      if (!event.order || event.order.id !== orderId) continue;
      remember(event);
      const known = orders.get(orderId);
      if (!known || event.seq > known.seq) orders.set(orderId, event.order);
    }
    renderEvents();
    render();
  },
  onLocations(couriers) {
    const order = orders.get(orderId);
    for (const courier of couriers) {
      if (order && order.courier && order.courier.id === courier.id) order.courier = { ...order.courier, ...courier };
    }
    map.moveCouriers(couriers, orders);
  },
  onState: bindIndicator(document.querySelector('[data-testid="live-indicator"]')),
});

// The history before this page opened; live events fill in from there. A page opened through a shared
// link reads it from the link (config.orderUrl, no sign-in), as it follows the link's socket.
api(config.orderUrl || `/api/orders/${orderId}/`)
  .then((detail) => {
    (detail.events || []).forEach(remember);
    renderEvents();
    render();
  })
  .catch(() => {
    part('events-empty').textContent = gettext('The history could not be loaded.');
  });

live.start();

window.liveops = {
  lastSeq: () => live.lastSeq,
  orders: () => orders,
  dropConnection: () => live.dropConnection(),
};
