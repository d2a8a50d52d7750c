'use strict';
/**
 * The board: one column per status (rendered by the server in dashboard.html), one card per order.
 *
 * The board never decides an order's status, nor whether it is late or stuck: the server does, and
 * says so in the order's `alerts`. The board owns what is purely presentational: ages and countdowns
 * ticking, alert badges, filters and the counters that follow them.
 */
import { alertKindLabel } from './alerts.js';
import {
  TERMINAL,
  formatCountdown,
  formatDuration,
  formatMoney,
  formatWhen,
  gettext,
  h,
  interpolate,
  ngettext,
} from './util.js';

const TICK_MS = 1000;

export class Board {
  /**
   * @param {HTMLElement} root  the element holding the [data-column] sections
   * @param {object} options  filters (a Filters), onOpen(orderId, card) when a card is activated
   */
  constructor(root, { filters, onOpen }) {
    this.root = root;
    this.filters = filters;
    this.onOpen = onOpen;
    this.cards = new Map(); // order id → card element
    this.orders = new Map(); // order id → the payload the card shows
    this.columns = new Map();
    for (const column of root.querySelectorAll('[data-column]')) {
      const toggle = column.querySelector('[data-action="expand"]');
      this.columns.set(column.dataset.column, {
        section: column,
        list: column.querySelector('[data-role="cards"]'),
        counter: column.querySelector('[data-role="counter"]'),
        empty: column.querySelector('[data-role="empty"]'),
      });
      // Finished columns fold into their counters on narrow screens; a click unfolds one.
      if (toggle) {
        toggle.addEventListener('click', () => {
          const expanded = column.classList.toggle('is-expanded');
          toggle.setAttribute('aria-expanded', String(expanded));
        });
      }
    }
    this.shown = 0;
    setInterval(() => this.tick(), TICK_MS);
  }

  /** A snapshot: the board becomes exactly this set of orders. */
  replace(orders) {
    for (const id of [...this.cards.keys()]) {
      if (!orders.has(id)) this.remove(id);
    }
    for (const order of orders.values()) this.upsert(order);
    this.applyFilters();
  }

  /** Orders changed by events (already checked to be newer than what the board holds). */
  update(orders) {
    for (const order of orders) this.upsert(order);
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
      card = h('button', { type: 'button', class: 'card', onclick: () => this.onOpen(order.id, card) });
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
    const alerts = order.alerts || [];
    const waiting = alerts.filter((alert) => !alert.acknowledged_at);
    card.classList.toggle('has-alert', waiting.length > 0);
    card.classList.toggle('has-acknowledged-alert', alerts.length > 0 && !waiting.length);
    card.dataset.alerts = alerts.map((alert) => alert.kind).join(' ');

    const restaurants = (order.restaurants || []).map((restaurant) => restaurant.name).join(' · ');
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
    const badges = alerts.length
      ? h(
          'span',
          { class: 'card-badges' },
          alerts.map((alert) =>
            h('span', {
              class: `badge badge-${alert.kind}` + (alert.acknowledged_at ? ' is-acknowledged' : ''),
              title: alert.detail || null,
              text: alertKindLabel(alert.kind),
            }),
          ),
        )
      : null;
    const parts = [
      h(
        'span',
        { class: 'card-top' },
        h('span', { class: 'card-id', text: `#${order.id}` }),
        h('span', { class: 'card-age', dataset: { role: 'age' } }),
      ),
      h('span', { class: 'card-restaurants', text: restaurants || gettext('No restaurant') }),
      h(
        'span',
        { class: 'card-meta' },
        h('span', { class: 'card-due', dataset: { role: 'due' } }),
        h('span', { class: 'card-total', text: formatMoney(order.total) }),
      ),
      courier,
      failure,
      badges,
    ];
    // No aria-label: the card's own text (id, age, kitchens, due time, courier, alerts) is its
    // accessible name, and the column heading says the status.
    card.replaceChildren(...parts.filter(Boolean));
    this.tickCard(card, order, Date.now());
  }

  /** Ages and countdowns move with the clock, not with events. A finished order's stand still. */
  tick() {
    const now = Date.now();
    for (const [id, card] of this.cards) {
      const order = this.orders.get(id);
      if (!TERMINAL.has(order.status)) this.tickCard(card, order, now);
    }
  }

  tickCard(card, order, now) {
    const finished = TERMINAL.has(order.status);
    const age = (finished ? Date.parse(order.updated_at) : now) - Date.parse(order.created_at);
    setText(card.querySelector('[data-role="age"]'), formatDuration(age));
    const due = card.querySelector('[data-role="due"]');
    const promised = order.promised_at || order.eta;
    if (finished) {
      setText(due, interpolate(gettext('ended %s'), [formatWhen(order.updated_at, now)]));
      due.classList.remove('is-late');
    } else if (promised) {
      const countdown = formatCountdown(promised, now);
      setText(due, countdown.text);
      due.title = countdown.title;
      due.classList.toggle('is-late', countdown.late);
    } else {
      setText(due, gettext('ASAP'));
    }
  }

  /** Shows the orders that pass the filters; counters say "3 of 12" while a filter narrows them. */
  applyFilters() {
    const filters = this.filters;
    const status = filters.effective.status;
    const narrowing = filters.narrowing;
    this.root.classList.toggle('is-single', Boolean(status));
    let shown = 0;
    for (const [name, column] of this.columns) {
      column.section.hidden = Boolean(status) && status !== name;
      let visible = 0;
      for (const item of column.list.children) {
        const order = this.orders.get(Number(item.firstElementChild.dataset.orderId));
        const matches = filters.matches(order);
        if (item.hidden === matches) item.hidden = !matches;
        if (matches) visible += 1;
      }
      const total = column.list.children.length;
      column.empty.hidden = visible > 0;
      column.empty.textContent = total ? gettext('No matching orders') : gettext('No orders');
      const counts = { shown: visible, total };
      setText(column.counter, narrowing ? interpolate(gettext('%(shown)s of %(total)s'), counts, true) : String(total));
      column.counter.dataset.shown = visible;
      column.counter.dataset.total = total;
      column.counter.setAttribute(
        'aria-label',
        narrowing
          ? interpolate(ngettext('%(shown)s of %(total)s order', '%(shown)s of %(total)s orders', total), counts, true)
          : interpolate(ngettext('%s order', '%s orders', total), [total]),
      );
      if (!column.section.hidden) shown += visible;
    }
    this.shown = shown;
  }

  /** The orders on the board that pass the filters. */
  visibleOrders() {
    const visible = new Map();
    for (const [id, order] of this.orders) {
      if (this.filters.matches(order)) visible.set(id, order);
    }
    return visible;
  }
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
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
