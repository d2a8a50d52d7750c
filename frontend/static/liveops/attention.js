'use strict';
/**
 * "Needs attention": every open alert on the board, above the columns. Waiting ones (not acknowledged)
 * first, newest first; acknowledged ones stay, quieter, until the server clears them.
 *
 * It is derived from the orders' payloads, which carry their open alerts: a snapshot fills it, and
 * each changed order updates its own entries (keyed by alert id, so a burst touches only what moved).
 */
import { acknowledgement, alertHeadline, alertKindLabel } from './alerts.js';
import { formatAgo, formatWhen, gettext, h, interpolate, ngettext } from './util.js';

const TICK_MS = 15_000; // "4 min ago" and "late 12 min" move slowly

export class AttentionLane {
  /**
   * @param {HTMLElement} root  the lane (data-testid="attention")
   * @param {object} options  onOpen(orderId, opener), onAcknowledge(alert, order)
   */
  constructor(root, { onOpen, onAcknowledge }) {
    this.root = root;
    this.list = root.querySelector('[data-role="alerts"]');
    this.count = root.querySelector('[data-testid="attention-count"]');
    this.empty = root.querySelector('[data-role="empty"]');
    this.onOpen = onOpen;
    this.onAcknowledge = onAcknowledge;
    this.entries = new Map(); // alert id → {alert, order, node, key}
    this.baseTitle = document.title;
    this.pending = false;
    setInterval(() => this.refreshTimes(), TICK_MS);
  }

  /** A snapshot: exactly these orders' alerts. */
  replace(orders) {
    for (const entry of this.entries.values()) entry.node.remove();
    this.entries.clear();
    for (const order of orders.values()) this.setOrder(order, false);
    this.render();
  }

  /** Orders changed by events: their alerts replace what the lane showed for them. */
  update(orders) {
    for (const order of orders) this.setOrder(order, true);
    this.render();
  }

  setOrder(order, prune) {
    const alerts = order.alerts || [];
    if (prune) {
      const open = new Set(alerts.map((alert) => alert.id));
      for (const [id, entry] of this.entries) {
        if (entry.order.id === order.id && !open.has(id)) {
          entry.node.remove();
          this.entries.delete(id);
        }
      }
    }
    for (const alert of alerts) {
      const entry = this.entries.get(alert.id);
      if (entry) {
        entry.alert = alert;
        entry.order = order;
        this.fill(entry);
      } else {
        const created = { alert, order, node: h('li', { class: 'attention-item' }) };
        this.entries.set(alert.id, created);
        this.fill(created);
      }
    }
  }

  /** The waiting alerts, newest first, then the acknowledged ones: the order they are shown in. */
  sorted() {
    const rank = ({ alert }) => [alert.acknowledged_at ? 1 : 0, -Date.parse(alert.raised_at), -alert.id];
    return [...this.entries.values()].sort((a, b) => {
      const [x, y] = [rank(a), rank(b)];
      return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
    });
  }

  render() {
    const entries = this.sorted();
    // Reorder by moving only nodes that are out of place.
    let cursor = this.list.firstElementChild;
    for (const entry of entries) {
      if (entry.node === cursor) cursor = cursor.nextElementSibling;
      else this.list.insertBefore(entry.node, cursor);
    }
    const waiting = entries.filter(({ alert }) => !alert.acknowledged_at).length;
    this.count.textContent = String(waiting);
    this.count.dataset.total = entries.length;
    this.count.setAttribute(
      'aria-label',
      interpolate(ngettext('%s alert waiting', '%s alerts waiting', waiting), [waiting]),
    );
    this.root.dataset.waiting = waiting;
    this.root.classList.toggle('has-alerts', entries.length > 0);
    this.empty.hidden = entries.length > 0;
    document.title = waiting ? `(${waiting}) ${this.baseTitle}` : this.baseTitle;
  }

  fill(entry) {
    const { alert, order } = entry;
    const now = Date.now();
    const headline = alertHeadline(alert, order, now);
    const acknowledged = Boolean(alert.acknowledged_at);
    const key = [alert.kind, headline, alert.acknowledged_at, alert.note, alert.detail, order.status].join('|');
    if (entry.key === key) return;
    entry.key = key;
    const node = entry.node;
    node.className = `attention-item kind-${alert.kind}` + (acknowledged ? ' is-acknowledged' : '');
    node.dataset.alertId = alert.id;
    node.dataset.orderId = order.id;
    node.dataset.kind = alert.kind;
    node.dataset.testid = `alert-${alert.id}`;
    // The order's kitchens, unless the headline already names them.
    const names = (order.restaurants || []).map((restaurant) => restaurant.name);
    const kitchens = names.every((name) => headline.includes(name)) ? '' : names.join(' · ');
    const open = h('button', {
      type: 'button',
      class: 'attention-order',
      text: `#${order.id}`,
      'aria-label': interpolate(gettext('Open order #%s'), [order.id]),
      onclick: () => this.onOpen(order.id, open),
    });
    const detail = alert.detail && !headline.includes(alert.detail) ? alert.detail : '';
    const parts = [
      h('span', { class: `badge badge-${alert.kind}`, text: alertKindLabel(alert.kind) }),
      open,
      h(
        'span',
        { class: 'attention-why' },
        h('span', { class: 'attention-headline', dataset: { role: 'headline' }, text: headline }),
        kitchens ? h('span', { class: 'attention-context', text: kitchens }) : null,
        detail ? h('span', { class: 'attention-detail', text: detail }) : null,
      ),
      acknowledged
        ? h('span', { class: 'attention-ack', text: acknowledgement(alert, now) })
        : null,
      h('time', {
        class: 'attention-time',
        datetime: alert.raised_at,
        title: formatWhen(alert.raised_at, now),
        dataset: { role: 'time' },
        text: formatAgo(alert.raised_at, now),
      }),
      acknowledged
        ? null
        : h('button', {
            type: 'button',
            class: 'button small',
            dataset: { testid: 'acknowledge' },
            text: gettext('Acknowledge'),
            onclick: () => this.onAcknowledge(entry.alert, entry.order),
          }),
    ];
    // Redrawn while the operator is on one of its buttons: keep the focus there.
    const focused = node.contains(document.activeElement) ? document.activeElement.className : null;
    node.replaceChildren(...parts.filter(Boolean));
    if (focused) {
      const again = [...node.querySelectorAll('button')].find((button) => button.className === focused);
      if (again) again.focus();
    }
    node.title = alert.detail || headline;
  }

  refreshTimes() {
    const now = Date.now();
    for (const entry of this.entries.values()) {
      const time = entry.node.querySelector('[data-role="time"]');
      if (time) time.textContent = formatAgo(entry.alert.raised_at, now);
      const headline = entry.node.querySelector('[data-role="headline"]');
      if (headline) headline.textContent = alertHeadline(entry.alert, entry.order, now);
    }
  }
}
