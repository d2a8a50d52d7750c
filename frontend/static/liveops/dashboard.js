'use strict';
/**
 * The operators' dashboard: wires the socket to the attention lane, the board, the map and its
 * couriers panel, the activity feed, the chart, the History view and the drawer.
 *
 * State lives in one Map (order id → latest payload). A snapshot replaces it; an event replaces one
 * order, but only when its seq is newer than the payload held (replays and live frames may overlap).
 * The filters (filters.js) live in the URL and apply to the board, its counters, the map and the feed.
 */
import { ActivityFeed } from './activity.js';
import { AcknowledgeDialog, AlertNotifier } from './alerts.js';
import { AttentionLane } from './attention.js';
import { Board } from './board.js';
import { ThroughputChart } from './chart.js';
import { CourierPanel } from './couriers.js';
import { OrderDrawer } from './drawer.js';
import { Filters } from './filters.js';
import { HistoryView } from './history.js';
import { LiveSocket, bindIndicator } from './live.js';
import { LiveMap } from './map.js';
import { api, formatWhen, gettext, h, interpolate, ngettext, readJSON, store } from './util.js';

const config = readJSON('liveops-config');
const labels = readJSON('liveops-labels');
const orders = new Map();
// Seqs already counted by the chart and the activity feed: a replay may overlap what came live.
const counted = new Set();
const COUNTED_LIMIT = 5000;
const LOOKUP_SIZE = 5;
const LOOKUP_DELAY_MS = 250;

const filters = new Filters(document.querySelector('[data-role="filters"]'), {
  statuses: config.statuses,
  onChange: () => filtersChanged(),
});
const board = new Board(document.querySelector('[data-role="board"]'), { filters, onOpen: openOrder });
const map = new LiveMap(document.querySelector('[data-testid="map"]'), { onOpen: openOrder });
const couriers = new CourierPanel(document.querySelector('[data-testid="couriers"]'), {
  onOpen: openOrder,
  onFocus: (courierId) => map.focusCourier(courierId),
});
const chart = new ThroughputChart(document.querySelector('[data-testid="chart"]'));
const acknowledgeDialog = new AcknowledgeDialog(document.getElementById('acknowledge'));
const acknowledge = (alert, order) => acknowledgeDialog.open(alert, order);
const drawer = new OrderDrawer(document.querySelector('[data-testid="drawer"]'), document.getElementById('confirm'), {
  labels,
  getOrder: (orderId) => orders.get(orderId),
  onSelect: () => renderMap(),
  onAcknowledge: acknowledge,
});
const activity = new ActivityFeed(document.querySelector('[data-role="activity"]'), {
  labels,
  onOpen: openOrder,
  matches: (orderId, order) => filters.matches(orders.get(orderId) || order),
});
const lane = new AttentionLane(document.querySelector('[data-testid="attention"]'), {
  onOpen: openOrder,
  onAcknowledge: acknowledge,
});
const notifier = new AlertNotifier(
  {
    sound: document.querySelector('[data-testid="alert-sound"]'),
    desktop: document.querySelector('[data-testid="alert-desktop"]'),
    status: document.querySelector('[data-role="notify-status"]'),
  },
  { onOpen: openOrder },
);
const historyView = new HistoryView(document.querySelector('[data-testid="history"]'), {
  filters,
  labels,
  onOpen: (orderId, opener, order) => drawer.open(orderId, opener, order),
});
const indicator = bindIndicator(document.querySelector('[data-testid="live-indicator"]'));

/** Opens the drawer for any order: on the board, in History's page, or found by the search lookup. */
function openOrder(orderId, opener) {
  drawer.open(orderId, opener, historyView.orders.get(orderId) || lookup.found.get(orderId) || null);
}

// --- socket -------------------------------------------------------------------------------------------

function onSnapshot(frame) {
  counted.clear(); // the chart reloads its history from the API below
  orders.clear();
  for (const order of frame.orders || []) orders.set(order.id, order);
  learnOptions(orders.values());
  board.replace(orders);
  lane.replace(orders); // a snapshot is what is there, not news: no sound, no notification
  renderMap();
  renderSummary();
  lookup.update();
  chart.load(); // the snapshot may have skipped events the chart would have counted
  drawer.orderChanged(drawer.orderId);
}

function onEvents(events) {
  const changed = new Map();
  const fresh = events.filter((event) => !counted.has(event.seq));
  for (const event of fresh) {
    counted.add(event.seq);
    chart.count(event);
  }
  if (counted.size > COUNTED_LIMIT) {
    [...counted].slice(0, counted.size - COUNTED_LIMIT / 2).forEach((seq) => counted.delete(seq));
  }
  for (const event of events) {
    const order = event.order;
    if (!order) continue;
    const known = orders.get(order.id);
    if (known && event.seq <= known.seq) continue; // already shown: a replay overlapping a live frame
    orders.set(order.id, order);
    changed.set(order.id, order);
  }
  activity.add(fresh); // after the orders: the feed filters by the orders' latest payloads
  if (!changed.size) return;
  learnOptions(changed.values());
  board.update(changed.values());
  lane.update(changed.values());
  notifier.notify(raisedAndWaiting(fresh));
  renderMap();
  renderSummary();
  lookup.update();
  for (const orderId of changed.keys()) drawer.orderChanged(orderId);
}

/** Alerts these events raised that are still open and waiting once the batch is applied. */
function raisedAndWaiting(events) {
  const items = [];
  for (const event of events) {
    if (event.type !== 'alert.raised' || !event.alert || !event.order) continue;
    const order = orders.get(event.order.id);
    const alert = order && (order.alerts || []).find((item) => item.id === event.alert.id);
    if (alert && !alert.acknowledged_at) items.push({ alert, order });
  }
  return items;
}

const live = new LiveSocket(config.wsPath, {
  onSnapshot,
  onEvents,
  onLocations: (positions) => {
    map.moveCouriers(positions, mapOrders());
    couriers.report(positions);
    couriers.update(orders);
  },
  onState: (state, reason) => {
    indicator(state, reason);
    document.body.dataset.live = state;
  },
});

// --- filters: board, counters, map, feed, History ---------------------------------------------------

const knownOptions = { restaurant: new Set(), courier: new Set() };

/** Kitchens and couriers seen in orders join the filter lists (the lists may predate them). */
function learnOptions(changedOrders) {
  let reapply = false;
  for (const order of changedOrders) {
    for (const restaurant of order.restaurants || []) {
      if (knownOptions.restaurant.has(restaurant.id)) continue;
      knownOptions.restaurant.add(restaurant.id);
      reapply = filters.addOption('restaurant', restaurant.id, restaurant.name) || reapply;
    }
    if (order.courier && !knownOptions.courier.has(order.courier.id)) {
      knownOptions.courier.add(order.courier.id);
      reapply = filters.addOption('courier', order.courier.id, order.courier.name) || reapply;
    }
  }
  if (reapply) filters.changed(false); // a value from the URL turned out to exist after all
}

function filtersChanged() {
  board.applyFilters();
  activity.refilter();
  renderMap();
  renderSummary();
  lookup.update();
  if (view === 'history') historyView.filtersChanged();
}

/** The orders the map shows: those the filters let through, and the one open in the drawer. */
function mapOrders() {
  if (!filters.active) return orders;
  const shown = board.visibleOrders();
  const selected = drawer.orderId !== null && orders.get(drawer.orderId);
  if (selected) shown.set(selected.id, selected);
  return shown;
}

function renderMap() {
  map.selected = drawer.orderId;
  map.render(mapOrders(), { onlyOrderCouriers: filters.active });
  couriers.update(orders);
}

const summary = document.querySelector('[data-testid="filter-summary"]');

function renderSummary() {
  const total = board.orders.size;
  summary.dataset.shown = board.shown;
  summary.dataset.total = total;
  summary.textContent = filters.active
    ? interpolate(
        ngettext('Showing %(shown)s of %(total)s order', 'Showing %(shown)s of %(total)s orders', total),
        { shown: board.shown, total },
        true,
      )
    : interpolate(ngettext('%s order on the board', '%s orders on the board', total), [total]);
}

/**
 * The board holds today's orders; a search that finds none of them asks the API, which knows every
 * order (an order number from last week, a customer's name, a provider's sub-order id).
 */
const lookup = {
  box: document.querySelector('[data-testid="search-lookup"]'),
  found: new Map(),
  key: '',
  timer: null,
  request: 0,

  update() {
    const q = filters.effective.q;
    const wanted = view === 'board' && q && board.shown === 0 && !Object.keys(filters.errors).length;
    if (!wanted) {
      clearTimeout(this.timer);
      this.key = '';
      this.request += 1;
      this.box.hidden = true;
      return;
    }
    const params = filters.apiQuery({ withDates: false });
    params.set('page_size', LOOKUP_SIZE);
    const key = params.toString();
    if (key === this.key) return; // already shown, or on its way
    this.key = key;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.load(params, q), LOOKUP_DELAY_MS);
  },

  async load(params, q) {
    const request = ++this.request;
    this.show(interpolate(gettext('No order on the board matches “%s”. Searching all orders…'), [q]), []);
    try {
      const data = await api(`/api/orders/?${params}`);
      if (request !== this.request) return;
      this.found = new Map(data.results.map((order) => [order.id, order]));
      const message = data.count
        ? interpolate(
            ngettext(
              'No order on the board matches “%(q)s”; %(count)s order among all orders does:',
              'No order on the board matches “%(q)s”; %(count)s orders among all orders do:',
              data.count,
            ),
            { q, count: data.count },
            true,
          )
        : interpolate(gettext('No order matches “%s”, on the board or among all orders.'), [q]);
      this.show(message, data.results, data.count > data.results.length);
    } catch (error) {
      if (request === this.request) this.show(error.message, []);
    }
  },

  show(message, results, more = false) {
    this.box.querySelector('[data-role="message"]').textContent = message;
    this.box.querySelector('[data-role="results"]').replaceChildren(
      ...results.map((order) => {
        const legs = (order.legs || []).filter((leg) => leg.kind === 'kitchen');
        const kitchens = [...new Set(legs.map((leg) => leg.restaurant))].join(' · ');
        const button = h(
          'button',
          { type: 'button', class: 'lookup-result', dataset: { testid: `lookup-${order.id}` } },
          h('strong', { text: `#${order.id}` }),
          h('span', { class: `status-pill status-${order.status}`, text: labels[order.status] || order.status }),
          h('span', { text: formatWhen(order.created_at) }),
          h('span', { class: 'muted', text: [kitchens, order.delivery_address].filter(Boolean).join(' — ') }),
        );
        button.addEventListener('click', () => drawer.open(order.id, button, order));
        return h('li', {}, button);
      }),
    );
    this.box.querySelector('[data-role="more"]').hidden = !more;
    this.box.hidden = false;
  },
};

document.querySelector('[data-role="more"]').addEventListener('click', (event) => {
  event.preventDefault();
  setView('history', true);
});

// --- views: Board and History -------------------------------------------------------------------------

let view = 'board';
const viewLinks = [...document.querySelectorAll('[data-view]')];

function setView(name, push) {
  view = name === 'history' ? 'history' : 'board';
  document.body.dataset.view = view;
  document.querySelector('[data-testid="history"]').hidden = view !== 'history';
  document.querySelector('[data-role="board"]').hidden = view !== 'board';
  for (const link of viewLinks) {
    if (link.dataset.view === view) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (push) {
    const params = new URLSearchParams(window.location.search);
    if (view === 'history') params.set('view', 'history');
    else params.delete('view');
    params.delete('page');
    window.history.pushState({ view }, '', `${window.location.pathname}?${params}`);
  }
  if (view === 'history') historyView.show();
  lookup.update();
}

for (const link of viewLinks) {
  link.addEventListener('click', (event) => {
    event.preventDefault();
    if (link.dataset.view !== view) setView(link.dataset.view, true);
  });
}
window.addEventListener('popstate', () => setView(new URLSearchParams(window.location.search).get('view'), false));

// --- panels: map, activity, chart ---------------------------------------------------------------------

// Wide screens have room for a side rail with every panel open; elsewhere the panels sit under the
// board, folded to their titles until opened. Each layout remembers what the operator opened.
const railQuery = window.matchMedia('(min-width: 1800px) and (min-height: 800px)');
const panels = [...document.querySelectorAll('[data-panel]')];

function layoutKey() {
  return `liveops.panels.${railQuery.matches ? 'rail' : 'dock'}`;
}

function applyPanels() {
  let saved = {};
  try {
    saved = JSON.parse(store.get(layoutKey(), '{}')) || {};
  } catch (error) {
    saved = {};
  }
  for (const panel of panels) {
    const open = saved[panel.dataset.panel] ?? railQuery.matches;
    setPanel(panel, open);
  }
}

function setPanel(panel, open) {
  panel.classList.toggle('is-collapsed', !open);
  panel.querySelector('.panel-toggle').setAttribute('aria-expanded', String(open));
  panel.querySelector('.panel-body').hidden = !open;
}

for (const panel of panels) {
  panel.querySelector('.panel-toggle').addEventListener('click', () => {
    const open = panel.classList.contains('is-collapsed');
    setPanel(panel, open);
    const state = Object.fromEntries(
      panels.map((item) => [item.dataset.panel, !item.classList.contains('is-collapsed')]),
    );
    store.set(layoutKey(), JSON.stringify(state));
  });
}
railQuery.addEventListener('change', applyPanels);
applyPanels();

// --- start ----------------------------------------------------------------------------------------------

// Every kitchen in the restaurant filter, not only those with orders on the board right now.
api('/api/restaurants/')
  .then((restaurants) => {
    restaurants.forEach((restaurant) => knownOptions.restaurant.add(restaurant.id));
    filters.setOptions('restaurant', restaurants);
  })
  .catch(() => {
    /* the filter still offers the restaurants seen in orders */
  });

setView(new URLSearchParams(window.location.search).get('view'), false);
renderSummary();
live.start();

// Hooks for tests and for poking at the board from the console.
window.liveops = {
  lastSeq: () => live.lastSeq,
  orders: () => orders,
  dropConnection: () => live.dropConnection(),
  // What the map holds (clustered or not) and where it looks.
  mapMarkers: () => Object.fromEntries(Object.entries(map.markers).map(([kind, markers]) => [kind, [...markers.keys()]])),
  mapView: () => {
    const bounds = map.map.getBounds();
    return {
      zoom: map.map.getZoom(),
      center: [map.map.getCenter().lat, map.map.getCenter().lng],
      bounds: [
        [bounds.getSouth(), bounds.getWest()],
        [bounds.getNorth(), bounds.getEast()],
      ],
    };
  },
};
