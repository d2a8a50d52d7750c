'use strict';
/**
 * The board: one column per status (rendered by the server in dashboard.html), one card per order.
 *
 * The board never decides an order's status: it shows the payloads it is handed (snapshot, events).
 * It owns what is purely presentational: ages ticking, late / stuck highlighting, filters, counters.
 */
import { TERMINAL, formatClock, formatDuration, formatMoney, gettext, h, interpolate, ngettext } from './util.js';

const TICK_MS = 1000;
const MINUTE_MS = 60_000;

export class Board {
  /**
   * @param {HTMLElement} root  the element holding the [data-column] lists
   * @param {object} options  config (lateMinutes, stuckMinutes, statuses), filters (the three controls),
   *                          onOpen(orderId) when a card is activated
   */
  constructor(root, { config, filters, onOpen }) {
    this.root = root;
    this.config = config;
    this.filters = filters;
    this.onOpen = onOpen;
    this.cards = new Map(); // order id → card element
    this.orders = new Map(); // order id → the payload the card shows
    this.columns = new Map();
    for (const column of root.querySelectorAll('[data-column]')) {
      this.columns.set(column.dataset.column, {
        section: column,
        list: column.querySelector('[data-role="cards"]'),
        counter: column.querySelector('[data-role="counter"]'),
        empty: column.querySelector('[data-role="empty"]'),
      });
    }
    for (const control of Object.values(filters)) {
      control.addEventListener('input', () => this.applyFilters());
      control.addEventListener('change', () => this.applyFilters());
    }
    this.knownRestaurants = new Set(
      [...filters.restaurant.options].map((option) => option.value).filter(Boolean),
    );
    setInterval(() => this.tick(), TICK_MS);
  }

  /** A snapshot: the board becomes exactly this set of orders. */
  replace(orders) {
    for (const id of [...this.cards.keys()]) {
      if (!orders.has(id)) this.remove(id);
    }
    for (const order of orders.values()) this.upsert(order);
    this.refreshCounters();
    this.applyFilters();
  }

  /** Orders changed by events (already checked to be newer than what the board holds). */
  update(orders) {
    for (const order of orders) this.upsert(order);
    this.refreshCounters();
    this.applyFilters();
  }

  remove(id) {
    const card = this.cards.get(id);
    if (card) card.parentElement.remove();
    this.cards.delete(id);
    this.orders.delete(id);
  }

  upsert(order) {
    const column = this.columns.get(order.status);
    if (!column) return; // a status this page does not know (newer server): skip rather than break
    let card = this.cards.get(order.id);
    const previous = this.orders.get(order.id);
    if (!card) {
      card = h('button', { type: 'button', class: 'card', onclick: () => this.onOpen(order.id) });
      card.dataset.testid = `card-${order.id}`;
      card.dataset.orderId = order.id;
      this.cards.set(order.id, card);
    }
    this.orders.set(order.id, order);
    this.fill(card, order);
    if (!previous || previous.status !== order.status || !card.isConnected) {
      const item = card.parentElement || h('li', { class: 'card-item' }, card);
      this.place(column.list, item, order);
      if (previous && previous.status !== order.status) flash(card);
    }
    this.addRestaurantOptions(order);
  }

  /** Active columns list the oldest order first (the one most likely late); finished ones newest first. */
  place(list, item, order) {
    const key = sortKey(order);
    let before = null;
    for (const other of list.children) {
      if (other === item) continue;
      const otherOrder = this.orders.get(Number(other.firstElementChild.dataset.orderId));
      if (otherOrder && sortKey(otherOrder) > key) {
        before = other;
        break;
      }
    }
    list.insertBefore(item, before);
  }

  fill(card, order) {
    card.dataset.status = order.status;
    const restaurants = (order.restaurants || []).map((restaurant) => restaurant.name).join(' · ');
    const eta = order.eta ? interpolate(gettext('ETA %s'), [formatClock(order.eta)]) : gettext('ASAP');
    const meta = [
      h('span', { class: 'card-eta', text: eta }),
      h('span', { class: 'card-total', text: formatMoney(order.total) }),
    ];
    const courier = order.courier
      ? h(
          'span',
          { class: 'card-courier' },
          h('span', { class: 'icon-courier', 'aria-hidden': 'true' }),
          h('span', { class: 'card-courier-name', text: order.courier.name }),
        )
      : null;
    const failure =
      order.failure_reason && (order.status === 'failed' || order.status === 'cancelled')
        ? h('span', { class: 'card-reason', text: order.failure_reason })
        : null;
    const parts = [
      h(
        'span',
        { class: 'card-top' },
        h('span', { class: 'card-id', text: `#${order.id}` }),
        h('span', { class: 'card-age', dataset: { role: 'age' } }),
      ),
      h('span', { class: 'card-restaurants', text: restaurants || gettext('No restaurant') }),
      h('span', { class: 'card-meta' }, meta),
      courier,
      failure,
      h('span', { class: 'card-badges', dataset: { role: 'badges' } }),
    ];
    // No aria-label: the card's own text (id, age, kitchens, ETA, courier, flags) is its accessible name,
    // and the column heading says the status.
    card.replaceChildren(...parts.filter(Boolean));
    this.tickCard(card, order, Date.now());
  }

  /** Ages and late / stuck flags move with the clock, not with events. */
  tick() {
    const now = Date.now();
    for (const [id, card] of this.cards) this.tickCard(card, this.orders.get(id), now);
  }

  tickCard(card, order, now) {
    const finished = TERMINAL.has(order.status);
    const age = (finished ? Date.parse(order.updated_at) : now) - Date.parse(order.created_at);
    const ageNode = card.querySelector('[data-role="age"]');
    const ageText = formatDuration(age);
    if (ageNode.textContent !== ageText) ageNode.textContent = ageText;

    const pastEta = order.eta !== null && now > Date.parse(order.eta);
    const late = !finished && (age > this.config.lateMinutes * MINUTE_MS || pastEta);
    const stuck = !finished && now - Date.parse(order.updated_at) > this.config.stuckMinutes * MINUTE_MS;
    card.classList.toggle('is-late', late);
    card.classList.toggle('is-stuck', stuck);
    // fill() starts the badges afresh, so compare against what this badges element shows.
    const badges = card.querySelector('[data-role="badges"]');
    const key = `${late}/${stuck}`;
    if (badges.dataset.key !== key) {
      badges.dataset.key = key;
      const flags = [];
      if (late) flags.push(h('span', { class: 'badge badge-late', text: gettext('Late') }));
      if (stuck) flags.push(h('span', { class: 'badge badge-stuck', text: gettext('Stuck') }));
      badges.replaceChildren(...flags);
    }
  }

  refreshCounters() {
    for (const column of this.columns.values()) {
      const count = column.list.children.length;
      column.counter.textContent = String(count);
      column.counter.setAttribute(
        'aria-label',
        interpolate(ngettext('%s order', '%s orders', count), [count]),
      );
    }
  }

  addRestaurantOptions(order) {
    for (const restaurant of order.restaurants || []) {
      const value = String(restaurant.id);
      if (this.knownRestaurants.has(value)) continue;
      this.knownRestaurants.add(value);
      this.filters.restaurant.append(h('option', { value, text: restaurant.name }));
    }
  }

  /** Restaurants from the API, so the filter lists every kitchen and not only those on the board now. */
  setRestaurants(restaurants) {
    for (const restaurant of restaurants) {
      this.addRestaurantOptions({ restaurants: [restaurant] });
    }
  }

  applyFilters() {
    const status = this.filters.status.value;
    const restaurant = this.filters.restaurant.value;
    const orderQuery = this.filters.order.value.replace(/[^0-9]/g, '');
    for (const [name, column] of this.columns) {
      column.section.hidden = Boolean(status) && status !== name;
    }
    for (const [id, card] of this.cards) {
      const order = this.orders.get(id);
      const matches =
        (!restaurant || (order.restaurants || []).some((item) => String(item.id) === restaurant)) &&
        (!orderQuery || String(id).includes(orderQuery));
      card.parentElement.hidden = !matches;
    }
    for (const column of this.columns.values()) {
      const shown = [...column.list.children].some((item) => !item.hidden);
      column.empty.hidden = shown;
    }
  }
}

function sortKey(order) {
  const created = Date.parse(order.created_at);
  return TERMINAL.has(order.status) ? -Date.parse(order.updated_at) : created;
}

/** A brief highlight when a card changes column, so a moving order catches the eye. */
function flash(card) {
  card.classList.remove('is-moved');
  void card.offsetWidth; // restart the animation
  card.classList.add('is-moved');
}
