'use strict';
/**
 * The customer's tracking page: where their food is, in their words, when it comes, who brings it (on a
 * small map), and its history, live.
 *
 * The server renders the steps with the status at page load, so the page reads right before (or
 * without) JavaScript; this module keeps it current from the order's own socket. A signed-in customer
 * also gets their actions (cancel while the kitchens have not started, share a link); a shared link
 * only follows.
 */
import { LiveSocket, bindIndicator } from './live.js';
import { LiveMap } from './map.js';
import {
  LANG,
  TERMINAL,
  api,
  formatClock,
  formatMoney,
  formatWhen,
  gettext,
  h,
  interpolate,
  readJSON,
  store,
  telHref,
} from './util.js';

const config = readJSON('liveops-config');
const orderId = config.orderId;
const stepsOf = config.steps || {}; // customer step → the statuses it covers
const cancellable = new Set(config.cancellable || []);
const orders = new Map(); // one entry; a Map so window.liveops looks the same on every page
const events = new Map(); // seq → event, history from the API merged with live ones
const SHOWN_TYPES = new Set([
  'order.created',
  'order.status',
  'order.override',
  'order.retry',
  'order.courier',
  'order.located',
]);
const STOPPED = new Set(['failed', 'cancelled']);
const LATE_AFTER_MS = 60_000; // a minute past the promise is not worth an apology yet
const PROMISE_KEY = `liveops.track.promised.${orderId}`;

const root = document.querySelector('[data-role="track"]');
const part = (role) => root.querySelector(`[data-role="${role}"]`);
const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);
const steps = byTestId('timeline');
const map = new LiveMap(byTestId('map'), { compact: true });
map.selected = orderId; // the customer's own order stays drawn even once delivered

// --- words --------------------------------------------------------------------------------------------

const list = typeof Intl.ListFormat === 'function' ? new Intl.ListFormat(LANG, { type: 'conjunction' }) : null;

/** "Sushi Nord", "Sushi Nord and Melange", "A, B and C": names joined as the language joins them. */
function joinNames(names) {
  if (!names.length) return '';
  return list ? list.format(names) : names.join(', ');
}

const kitchensOf = (order) => joinNames([...new Set((order.restaurants || []).map((item) => item.name).filter(Boolean))]);
const firstName = (courier) => ((courier && courier.name) || '').trim().split(/\s+/)[0] || '';

function stepOf(status) {
  for (const [name, statuses] of Object.entries(stepsOf)) if (statuses.includes(status)) return name;
  return 'end';
}

/** What the order is doing now, as a customer says it. */
function statusWords(order, status = order.status) {
  const kitchens = kitchensOf(order);
  const courier = firstName(order.courier);
  switch (status) {
    case 'scheduled':
    case 'submitted':
      return gettext('We received your order');
    case 'cooking':
      return kitchens
        ? interpolate(gettext('Your order is being cooked at %s'), [kitchens])
        : gettext('Your order is being cooked');
    case 'ready':
    case 'courier_search':
      return gettext('Looking for a courier');
    case 'delivering':
      return courier
        ? interpolate(gettext('%s is bringing your order'), [courier])
        : gettext('Your courier is bringing your order');
    case 'delivered':
      return gettext('Delivered — enjoy your meal');
    case 'failed':
      return gettext('Sorry, we could not complete this order');
    case 'cancelled':
      return gettext('Cancelled');
    default:
      return status;
  }
}

/** An update of the history in words; '' for one the customer has no use for. */
function eventWords(event, order) {
  const about = event.order || order; // live events carry the order as it was; the history does not
  const kitchens = kitchensOf(order);
  switch (event.type) {
    case 'order.created':
      return gettext('You placed the order');
    case 'order.courier': {
      const name = firstName(about.courier);
      return name ? interpolate(gettext('%s will bring your order'), [name]) : gettext('A courier took your order');
    }
    case 'order.located':
      if (event.reason) return event.reason;
      return (about.destination_status || order.destination_status) === 'found'
        ? gettext('We found your address on the map')
        : gettext('Address not found on the map');
    default:
      break;
  }
  if (!event.to || event.from === event.to) return '';
  switch (event.to) {
    case 'scheduled':
      return gettext('Your order is scheduled');
    case 'submitted':
      return kitchens
        ? interpolate(gettext('%s received your order'), [kitchens])
        : gettext('The restaurant received your order');
    case 'cooking':
      return kitchens ? interpolate(gettext('%s started cooking'), [kitchens]) : gettext('The kitchen started cooking');
    case 'ready':
      return gettext('Your food is ready');
    case 'courier_search':
      return gettext('Looking for a courier');
    case 'delivering': {
      const name = firstName(about.courier);
      return name ? interpolate(gettext('%s picked up your order'), [name]) : gettext('Your courier picked up your order');
    }
    case 'delivered':
      return gettext('Delivered — enjoy your meal');
    case 'cancelled':
      return gettext('Order cancelled');
    case 'failed':
      return gettext('Sorry, we could not complete this order');
    default:
      return '';
  }
}

// --- rendering ----------------------------------------------------------------------------------------

function render() {
  const order = orders.get(orderId);
  if (!order) return;
  part('now').textContent = statusWords(order);
  part('total').textContent = formatMoney(order.total);
  // Why an order failed stays with operators (it may quote a provider's error): the customer gets a sorry.
  const reason = part('reason');
  reason.textContent = order.status === 'failed' ? gettext('Sorry, we could not complete this order.') : '';
  reason.hidden = order.status !== 'failed';
  renderPromise(order);
  renderPlace(order);
  renderCourier(order);
  renderSteps(order);
  renderActions(order);
  renderListEntry(order);
  map.render(mapOrders(order), { onlyOrderCouriers: true });
}

/** "Arriving by 19:40", "running ~10 min late", "now 19:50 (was 19:40)": the promise and how it moves. */
function renderPromise(order) {
  const node = part('promise');
  node.classList.remove('is-late');
  if (STOPPED.has(order.status) || !order.promised_at) {
    node.textContent = '';
    node.hidden = true;
    return;
  }
  node.hidden = false;
  if (order.status === 'delivered') {
    const at = reachedAt().get('delivered') || order.updated_at;
    node.textContent = interpolate(gettext('Delivered at %s'), [formatWhen(at)]);
    return;
  }
  // The first promise this browser saw of the order: a later one is news worth showing.
  const first = store.get(PROMISE_KEY) || order.promised_at;
  store.set(PROMISE_KEY, first);
  const moved = Math.abs(Date.parse(order.promised_at) - Date.parse(first)) >= 60_000;
  let text = moved
    ? interpolate(
        gettext('Now arriving by %(time)s (was %(was)s)'),
        { time: formatWhen(order.promised_at), was: formatWhen(first) },
        true,
      )
    : interpolate(gettext('Arriving by %s'), [formatWhen(order.promised_at)]);
  const late = Date.now() - Date.parse(order.promised_at);
  if (late > LATE_AFTER_MS) {
    text += ' · ' + interpolate(gettext('running ~%s min late'), [Math.round(late / 60_000)]);
    node.classList.add('is-late');
  }
  node.textContent = text;
}

/** This order's line in the customer's list keeps up with it, in the same general words as the others. */
function renderListEntry(order) {
  const words = document.querySelector(`[data-testid="my-order-${order.id}"] .track-order-words`);
  if (!words) return;
  words.textContent = statusWords({ restaurants: [], courier: null }, order.status);
  words.className = `track-order-words status-${order.status}`;
}

function renderPlace(order) {
  const note = part('place-note');
  const words = {
    not_found: gettext('Address not found on the map'),
    failed: gettext('Your address could not be placed on the map right now'),
  }[order.destination_status];
  note.textContent = words || '';
  note.hidden = !words || order.status === 'delivered';
}

function renderCourier(order) {
  const card = byTestId('courier-card');
  const courier = order.courier;
  const shown = Boolean(courier) && !STOPPED.has(order.status);
  card.hidden = !shown;
  part('courier').textContent = shown ? '' : courierNote(order);
  if (!shown) return;
  const name = firstName(courier) || gettext('Your courier');
  part('courier-name').textContent =
    order.status === 'delivered'
      ? interpolate(gettext('%s brought your order to your door'), [name])
      : interpolate(gettext('Your courier: %s'), [courier.name || name]);
  const phone = byTestId('courier-phone');
  const number = (courier.phone || '').trim();
  phone.hidden = !number || order.status === 'delivered';
  if (number) {
    phone.href = telHref(number);
    phone.textContent = interpolate(gettext('Call %(name)s: %(phone)s'), { name, phone: number }, true);
  }
}

function courierNote(order) {
  if (STOPPED.has(order.status) || order.status === 'delivered') return '';
  if (order.status === 'ready' || order.status === 'courier_search') {
    return gettext('Your food is ready; we are finding a courier.');
  }
  return gettext('A courier is assigned once the food is ready.');
}

/** When each status was first reached, from the history (the order's creation for the first). */
function reachedAt() {
  const reached = new Map();
  for (const event of [...events.values()].sort((a, b) => a.seq - b.seq)) {
    if (event.to && !reached.has(event.to)) reached.set(event.to, event.at);
  }
  const order = orders.get(orderId);
  if (!reached.has('scheduled') && order && order.created_at) reached.set('scheduled', order.created_at);
  return reached;
}

function renderSteps(order) {
  steps.dataset.status = order.status;
  const reached = reachedAt();
  const names = Object.keys(stepsOf);
  const stopped = STOPPED.has(order.status);
  // A failed or cancelled order keeps the steps it got through; the last one it was in shows where.
  let at = stepOf(order.status);
  if (stopped) {
    const stop = [...events.values()].sort((a, b) => b.seq - a.seq).find((event) => event.to === order.status);
    at = stop && stop.from ? stepOf(stop.from) : names[0];
  }
  const current = names.indexOf(at);
  const finished = order.status === 'delivered';
  for (const step of steps.querySelectorAll('[data-step]')) {
    const name = step.dataset.step;
    const time = step.querySelector('time');
    if (name === 'end') {
      step.hidden = !stopped;
      step.querySelector('[data-role="end-label"]').textContent = stopped ? statusWords(order) : '';
      step.classList.toggle('is-failed', stopped);
      setTime(time, stopped ? reached.get(order.status) : null);
      if (stopped) step.setAttribute('aria-current', 'step');
      else step.removeAttribute('aria-current');
      continue;
    }
    const index = names.indexOf(name);
    const isCurrent = index === current && !stopped && !finished;
    step.classList.toggle('is-done', index < current || (index === current && (stopped || finished)));
    step.classList.toggle('is-current', isCurrent || (finished && name === 'delivered'));
    step.classList.toggle('is-todo', index > current);
    if (isCurrent || (finished && name === 'delivered')) step.setAttribute('aria-current', 'step');
    else step.removeAttribute('aria-current');
    // The step in words: the current one names who (the kitchens, the courier); the others stay general.
    const statuses = stepsOf[name] || [];
    const shownStatus = statuses.includes(order.status) ? order.status : statuses[0];
    step.querySelector('.step-label').textContent = statusWords(order, shownStatus);
    const first = statuses.map((status) => reached.get(status)).find(Boolean);
    setTime(time, index <= current ? first : null);
  }
}

function setTime(node, iso) {
  if (!node) return;
  node.textContent = iso ? formatClock(iso) : '';
  if (iso) node.setAttribute('datetime', iso);
  else node.removeAttribute('datetime');
}

function renderEvents() {
  const order = orders.get(orderId);
  const listNode = part('events');
  const shown = [...events.values()]
    .filter((event) => SHOWN_TYPES.has(event.type))
    .sort((a, b) => b.seq - a.seq)
    .map((event) => ({ event, words: eventWords(event, order || {}) }))
    .filter((item) => item.words);
  listNode.replaceChildren(
    ...shown.map(({ event, words }) =>
      h(
        'li',
        { class: `timeline-item type-${event.type.replace('.', '-')}`, dataset: { seq: event.seq, type: event.type } },
        h('time', { datetime: event.at, text: formatClock(event.at) }),
        h(
          'div',
          { class: 'timeline-body' },
          h('span', { class: 'timeline-title', text: words }),
          // The customer's own words when they cancelled (the only reason the public shape carries).
          event.reason && event.type !== 'order.located'
            ? h('span', { class: 'timeline-reason', text: event.reason })
            : null,
        ),
      ),
    ),
  );
  part('events-empty').hidden = shown.length > 0;
}

// --- the map: the courier ends at the door ------------------------------------------------------------

const hasPoint = (point) => Array.isArray(point) && Number.isFinite(point[0]) && Number.isFinite(point[1]);
let latestCourierAt = 0; // the newest courier report seen, so that the door outranks it on the map

/**
 * The order as the map draws it. Once delivered, the courier stands at the door (the destination), not
 * wherever their last report happened to be; with no known door they leave the map.
 */
function mapOrders(order) {
  let courier = order.courier;
  if (courier && order.status === 'delivered') {
    courier = hasPoint(order.destination)
      ? {
          ...courier,
          lat: order.destination[0],
          lng: order.destination[1],
          at: new Date(Math.max(Date.now(), latestCourierAt + 1)).toISOString(),
        }
      : null;
  } else if (courier && STOPPED.has(order.status)) {
    courier = null;
  }
  if (courier && courier.at) latestCourierAt = Math.max(latestCourierAt, Date.parse(courier.at) || 0);
  return new Map([[order.id, { ...order, courier }]]);
}

// --- the customer's actions -----------------------------------------------------------------------------

const cancelButton = byTestId('cancel-order');
const confirmBox = byTestId('cancel-confirm');
const actionError = byTestId('action-error');

function showActionError(text) {
  if (!actionError) return;
  actionError.textContent = text || '';
  actionError.hidden = !text;
}

function renderActions(order) {
  if (!cancelButton) return;
  const allowed = cancellable.has(order.status);
  cancelButton.hidden = !allowed || !confirmBox.hidden;
  if (!allowed) confirmBox.hidden = true;
}

if (cancelButton && config.cancelUrl) {
  cancelButton.addEventListener('click', () => {
    showActionError('');
    confirmBox.hidden = false;
    cancelButton.hidden = true;
    byTestId('cancel-no').focus();
  });
  byTestId('cancel-no').addEventListener('click', () => {
    confirmBox.hidden = true;
    render();
    cancelButton.focus();
  });
  byTestId('cancel-yes').addEventListener('click', async (click) => {
    const button = click.currentTarget;
    button.disabled = true;
    try {
      await api(config.cancelUrl, { method: 'POST', body: { reason: '' } });
      confirmBox.hidden = true; // the socket brings the cancelled order
    } catch (error) {
      showActionError(error.message);
    } finally {
      button.disabled = false;
      render();
    }
  });
}

const shareButton = byTestId('share-link');
if (shareButton && config.shareUrl) {
  const box = byTestId('share-box');
  const field = byTestId('share-url');
  shareButton.addEventListener('click', async () => {
    showActionError('');
    shareButton.disabled = true;
    try {
      const link = await api(config.shareUrl, { method: 'POST' });
      field.value = new URL(link.url, window.location.origin).href;
      box.hidden = false;
      field.select();
    } catch (error) {
      showActionError(error.message);
    } finally {
      shareButton.disabled = false;
    }
  });
  byTestId('share-copy').addEventListener('click', async (click) => {
    const button = click.currentTarget;
    field.select();
    try {
      await navigator.clipboard.writeText(field.value);
      button.textContent = gettext('Copied');
    } catch (error) {
      // No clipboard here (plain HTTP, a refused permission): the link stays selected for copying by hand.
      button.textContent = gettext('Select and copy');
    }
  });
}

// --- the stream ----------------------------------------------------------------------------------------

function remember(event) {
  // Live events and the API give the same public event (seqs with gaps: operators' events are not sent
  // here); a live one also carries the order as it then was, which names its courier.
  const known = events.get(event.seq);
  events.set(event.seq, {
    seq: event.seq,
    type: event.type,
    from: event.from,
    to: event.to,
    at: event.at,
    reason: event.reason,
    order: event.order || (known && known.order) || null,
  });
}

const live = new LiveSocket(config.wsPath, {
  onSnapshot(frame) {
    const order = (frame.orders || []).find((item) => item.id === orderId);
    if (order) orders.set(orderId, order);
    renderEvents();
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
    if (!order || !order.courier || TERMINAL.has(order.status)) return; // delivered: at the door
    const report = couriers.find((courier) => courier.id === order.courier.id);
    if (!report) return;
    order.courier = { ...order.courier, ...report };
    map.moveCouriers([], mapOrders(order));
  },
  onState: bindIndicator(byTestId('live-indicator')),
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
setInterval(render, 30_000); // "running ~10 min late" moves on by itself

window.liveops = {
  lastSeq: () => live.lastSeq,
  orders: () => orders,
  dropConnection: () => live.dropConnection(),
  // Where the map's marker of this order's courier stands (null: not on the map), for tests.
  courierOnMap: () => {
    const order = orders.get(orderId);
    const marker = order && order.courier && map.markers && map.markers.couriers.get(order.courier.id);
    if (!marker) return null;
    const point = marker.getLatLng();
    return [point.lat, point.lng];
  },
  mapMarkers: () =>
    Object.fromEntries(Object.entries(map.markers || {}).map(([kind, markers]) => [kind, [...markers.keys()]])),
};
