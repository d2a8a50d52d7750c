'use strict';
/**
 * The couriers panel beside the dashboard's map: every courier on the job (carrying an order on the
 * board) or on shift (reporting their position lately), with what they carry, how fresh their position
 * is and their phone. A row focuses the map on its courier; an order number opens the order.
 *
 * Couriers come from two places: the orders' `courier` (who carries what) and the `locations` frames
 * (where they are, including those with no order). The list is rebuilt only when what it says changes;
 * the ages tick every second on their own.
 */
import { COURIER_SHOWN_MS, phoneLink } from './map.js';
import { TERMINAL, formatAgo, gettext, h, interpolate, ngettext } from './util.js';

// A position older than this says little about where the courier is now: such couriers go last.
const STALE_MS = 2 * 60_000;
const TICK_MS = 1000;

export class CourierPanel {
  /**
   * @param {HTMLElement} root  the panel ([data-role="couriers"] list, [data-role="couriers-empty"],
   *   [data-role="couriers-count"], [data-role="couriers-note"])
   * @param {object} options  onOpen(orderId, opener): open an order; onFocus(courierId): show the
   *   courier on the map, false when the map cannot
   */
  constructor(root, { onOpen, onFocus }) {
    this.root = root;
    this.onOpen = onOpen;
    this.onFocus = onFocus;
    this.list = root.querySelector('[data-role="couriers"]');
    this.empty = root.querySelector('[data-role="couriers-empty"]');
    this.count = root.querySelector('[data-role="couriers-count"]');
    this.note = root.querySelector('[data-role="couriers-note"]');
    this.known = new Map(); // id → {id, name, phone, at, reportedAt}
    this.orders = new Map();
    this.signature = null;
    setInterval(() => this.render(), TICK_MS); // ages tick; positions go stale
  }

  /** Positions from a `locations` frame. */
  report(couriers) {
    const now = Date.now();
    for (const courier of couriers) this.learn(courier, now);
  }

  learn(courier, reportedAt = null) {
    const known = this.known.get(courier.id) || { reportedAt: 0 };
    if (known.at && courier.at && Date.parse(courier.at) < Date.parse(known.at)) return;
    this.known.set(courier.id, {
      ...known,
      ...courier,
      phone: courier.phone || known.phone || '',
      reportedAt: reportedAt ?? known.reportedAt,
    });
  }

  /** Every order on the board (not only the filtered ones: a courier's load is all they carry). */
  update(orders) {
    this.orders = orders;
    for (const order of orders.values()) if (order.courier) this.learn(order.courier);
    this.render();
  }

  couriers(now = Date.now()) {
    const carried = new Map();
    for (const order of this.orders.values()) {
      if (!order.courier || TERMINAL.has(order.status)) continue;
      if (!carried.has(order.courier.id)) carried.set(order.courier.id, []);
      carried.get(order.courier.id).push(order);
    }
    const rows = [];
    for (const courier of this.known.values()) {
      const orders = (carried.get(courier.id) || []).sort((a, b) => a.id - b.id);
      if (!orders.length && now - courier.reportedAt >= COURIER_SHOWN_MS) continue;
      const stale = !courier.at || now - Date.parse(courier.at) > STALE_MS;
      rows.push({ ...courier, orders, stale });
    }
    // Carrying first (the busiest on top), then free; a stale position sinks to the end.
    const rank = (row) => (row.stale ? 2 : row.orders.length ? 0 : 1);
    return rows.sort(
      (a, b) => rank(a) - rank(b) || b.orders.length - a.orders.length || (a.name || '').localeCompare(b.name || ''),
    );
  }

  render() {
    const rows = this.couriers();
    const signature = JSON.stringify(
      rows.map((row) => [row.id, row.name, row.phone, row.stale, row.orders.map((order) => order.id)]),
    );
    if (signature !== this.signature) {
      this.signature = signature;
      this.list.replaceChildren(...rows.map((row) => this.row(row)));
      this.count.textContent = rows.length ? String(rows.length) : '';
      this.empty.hidden = rows.length > 0;
    }
    this.tick();
  }

  row(courier) {
    const carrying = courier.orders.length;
    const item = h(
      'li',
      {
        class: `courier-row ${carrying ? 'is-carrying' : 'is-free'}${courier.stale ? ' is-stale' : ''}`,
        dataset: { testid: `courier-row-${courier.id}`, courierId: courier.id, state: carrying ? 'carrying' : 'free' },
      },
      h(
        'div',
        { class: 'courier-row-head' },
        h('button', {
          type: 'button',
          class: 'courier-focus',
          dataset: { action: 'focus' },
          title: gettext('Show on the map'),
          text: courier.name || interpolate(gettext('Courier #%s'), [courier.id]),
        }),
        h('span', {
          class: 'courier-state',
          text: carrying
            ? interpolate(ngettext('carrying %s order', 'carrying %s orders', carrying), [carrying])
            : gettext('free'),
        }),
      ),
      h(
        'div',
        { class: 'courier-row-meta' },
        h('span', { class: 'courier-age muted', dataset: { role: 'age' } }),
        phoneLink(courier.phone),
      ),
      carrying
        ? h(
            'ul',
            { class: 'courier-orders', 'aria-label': gettext('Orders carried') },
            courier.orders.map((order) =>
              h(
                'li',
                {},
                h('button', {
                  type: 'button',
                  class: `link-button status-${order.status}`,
                  dataset: { orderId: order.id },
                  text: `#${order.id}`,
                  onclick: (event) => this.onOpen(order.id, event.currentTarget),
                }),
              ),
            ),
          )
        : null,
    );
    // The whole row focuses the map, except its links and order buttons, which do their own thing.
    item.addEventListener('click', (event) => {
      const control = event.target.closest('a, button');
      if (control && control.dataset.action !== 'focus') return;
      this.focus(courier);
    });
    return item;
  }

  focus(courier) {
    const shown = this.onFocus(courier.id);
    this.note.textContent = shown
      ? ''
      : interpolate(gettext('%s is not on the map: no position yet, or hidden by the filters.'), [courier.name]);
    this.note.hidden = shown;
  }

  /** "12 s ago", kept current without rebuilding the rows. */
  tick() {
    const now = Date.now();
    for (const row of this.list.children) {
      const courier = this.known.get(Number(row.dataset.courierId));
      const at = courier && courier.at;
      row.querySelector('[data-role="age"]').textContent = at
        ? interpolate(gettext('seen %s'), [formatAgo(at, now)])
        : gettext('no position yet');
    }
  }
}
