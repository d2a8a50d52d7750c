'use strict';
/**
 * The operators' dashboard: wires the socket to the board, the map, the chart and the drawer.
 *
 * State lives in one Map (order id → latest payload). A snapshot replaces it; an event replaces one
 * order, but only when its seq is newer than the payload held (replays and live frames may overlap).
 */
import { ActivityFeed } from './activity.js';
import { Board } from './board.js';
import { ThroughputChart } from './chart.js';
import { OrderDrawer } from './drawer.js';
import { LiveSocket, bindIndicator } from './live.js';
import { LiveMap } from './map.js';
import { api, gettext, readJSON } from './util.js';

const config = readJSON('liveops-config');
const labels = readJSON('liveops-labels');
const orders = new Map();
// Seqs already counted by the chart and the activity feed: a replay may overlap what came live.
const counted = new Set();
const COUNTED_LIMIT = 5000;

const board = new Board(document.querySelector('[data-role="board"]'), {
  config,
  filters: {
    status: document.querySelector('[data-testid="filter-status"]'),
    restaurant: document.querySelector('[data-testid="filter-restaurant"]'),
    order: document.querySelector('[data-testid="filter-order"]'),
  },
  onOpen: (orderId) => drawer.open(orderId, board.cards.get(orderId)),
});
const map = new LiveMap(document.querySelector('[data-testid="map"]'));
const chart = new ThroughputChart(document.querySelector('[data-testid="chart"]'));
const drawer = new OrderDrawer(document.querySelector('[data-testid="drawer"]'), document.getElementById('confirm'), {
  labels,
  getOrder: (orderId) => orders.get(orderId),
  onSelect: (orderId) => map.select(orderId, orders),
});

const activity = new ActivityFeed(document.querySelector('[data-role="activity"]'), {
  labels,
  onOpen: (orderId) => orders.has(orderId) && drawer.open(orderId, board.cards.get(orderId)),
});
// The filters act as you type; Enter must not submit (and reload) the page.
document.querySelector('.filters').addEventListener('submit', (event) => event.preventDefault());

const indicator = bindIndicator(document.querySelector('[data-testid="live-indicator"]'));

function onSnapshot(frame) {
  counted.clear(); // the chart reloads its history from the API below
  orders.clear();
  for (const order of frame.orders || []) orders.set(order.id, order);
  board.replace(orders);
  map.render(orders);
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
  activity.add(fresh);
  for (const event of events) {
    const order = event.order;
    if (!order) continue;
    const known = orders.get(order.id);
    if (known && event.seq <= known.seq) continue; // already shown: a replay overlapping a live frame
    orders.set(order.id, order);
    changed.set(order.id, order);
  }
  if (!changed.size) return;
  board.update(changed.values());
  map.render(orders);
  for (const orderId of changed.keys()) drawer.orderChanged(orderId);
}

function onLocations(couriers) {
  map.moveCouriers(couriers, orders);
}

const live = new LiveSocket(config.wsPath, {
  onSnapshot,
  onEvents,
  onLocations,
  onState: (state, reason) => {
    indicator(state, reason);
    document.body.dataset.live = state;
  },
});

// Every kitchen in the restaurant filter, not only those with orders on the board right now.
api('/api/restaurants/')
  .then((restaurants) => board.setRestaurants(restaurants))
  .catch(() => {
    /* the filter still offers the restaurants seen in orders */
  });

live.start();

// Hooks for tests and for poking at the board from the console.
window.liveops = {
  lastSeq: () => live.lastSeq,
  orders: () => orders,
  dropConnection: () => live.dropConnection(),
};
