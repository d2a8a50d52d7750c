'use strict';
/**
 * The live feed of the latest events, newest first: what just happened, without opening a card. It
 * shows events as they arrive on this page (the drawer has an order's full history).
 *
 * It keeps the last KEEP entries. Events are queued and added once per animation frame, as one
 * fragment, so a burst of hundreds costs one layout; only the newest KEEP of a burst are ever built.
 * Filtering toggles `hidden` on the entries; nothing is rebuilt.
 */
import { alertHeadline, alertKindLabel } from './alerts.js';
import {
  cancelStatusLabel,
  destinationLabel,
  eventTypeLabel,
  formatClock,
  gettext,
  h,
  interpolate,
  legName,
  providerStatusLabel,
} from './util.js';

export const KEEP = 500;

export class ActivityFeed {
  /**
   * @param {HTMLOListElement} list
   * @param {object} options  labels (status → label), onOpen(orderId, opener), matches(orderId, order)
   *                          tells whether an entry passes the filters (null: every entry does)
   */
  constructor(list, { labels, onOpen, matches = null }) {
    this.list = list;
    this.labels = labels;
    this.onOpen = onOpen;
    this.matches = matches;
    this.queue = [];
    this.frame = null;
    this.orderOf = new WeakMap(); // entry → the order payload it was about
    this.visible = 0;
    this.empty = list.parentElement.querySelector('[data-role="activity-empty"]');
    this.count = list.parentElement.querySelector('[data-role="activity-count"]');
  }

  add(events) {
    if (!events.length) return;
    this.queue.push(...events);
    if (this.queue.length > KEEP) this.queue.splice(0, this.queue.length - KEEP);
    if (this.frame === null) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = null;
    const events = this.queue;
    this.queue = [];
    const fragment = document.createDocumentFragment();
    for (let index = events.length - 1; index >= 0; index -= 1) {
      const item = this.item(events[index]);
      if (!item.hidden) this.visible += 1;
      fragment.append(item);
    }
    this.list.prepend(fragment);
    let extra = this.list.children.length - KEEP;
    while (extra-- > 0) {
      const last = this.list.lastElementChild;
      if (!last.hidden) this.visible -= 1;
      last.remove();
    }
    this.renderEmpty();
  }

  /** The filters changed: show the entries that pass them. */
  refilter() {
    let visible = 0;
    for (const item of this.list.children) {
      const show = this.passes(item);
      if (item.hidden === show) item.hidden = !show;
      if (show) visible += 1;
    }
    this.visible = visible;
    this.renderEmpty();
  }

  passes(item) {
    if (!this.matches) return true;
    const order = this.orderOf.get(item);
    return this.matches(order.id, order);
  }

  renderEmpty() {
    const total = this.list.children.length;
    if (this.empty) {
      this.empty.hidden = this.visible > 0;
      this.empty.textContent = total
        ? gettext('No activity for the orders the filters show.')
        : gettext('Changes appear here as they happen.');
    }
    if (this.count) this.count.textContent = this.visible ? String(this.visible) : '';
  }

  item(event) {
    const order = event.order || {};
    const leg = event.leg ? (order.legs || []).find((item) => item.id === event.leg) : null;
    const button = h(
      'button',
      { type: 'button', class: 'activity-link' },
      h('span', { class: 'activity-id', text: `#${order.id}` }),
      h('span', { class: 'activity-what', text: this.describe(event, order, leg) }),
    );
    button.addEventListener('click', () => this.onOpen(order.id, button));
    const kind = event.alert ? ` kind-${event.alert.kind}` : '';
    const item = h(
      'li',
      {
        class: `activity-item status-${event.to || order.status} type-${event.type.replace('.', '-')}${kind}`,
        dataset: { seq: event.seq, orderId: order.id },
      },
      h('time', { datetime: event.at, text: formatClock(event.at, true) }),
      button,
    );
    this.orderOf.set(item, order);
    item.hidden = !this.passes(item);
    return item;
  }

  /** The event in words, naming the kitchen or courier service it came from. */
  describe(event, order, leg) {
    const who = leg ? legName(leg) : '';
    switch (event.type) {
      case 'leg.status': {
        const said = providerStatusLabel(event.provider_status) || '?';
        return who ? `${who}: ${said}` : interpolate(gettext('provider reports “%s”'), [said]);
      }
      case 'leg.cancel': {
        const state = cancelStatusLabel(event.cancel_status) || eventTypeLabel(event.type);
        return who ? `${who}: ${state}` : state;
      }
      case 'order.located':
        return destinationLabel(order.destination_status) || eventTypeLabel(event.type);
      case 'alert.raised':
        // The headline names the cause ("Sushi Nord (Bueno) is failing", "Late 7 min …").
        return event.alert ? alertHeadline(event.alert, order, Date.parse(event.at)) : eventTypeLabel(event.type);
      case 'alert.cleared':
        return event.alert
          ? interpolate(gettext('%s: cleared'), [alertKindLabel(event.alert.kind)])
          : eventTypeLabel(event.type);
      case 'alert.acknowledged':
        return event.alert
          ? interpolate(
              gettext('%(kind)s: acknowledged by %(who)s'),
              { kind: alertKindLabel(event.alert.kind), who: event.alert.acknowledged_by || '?' },
              true,
            )
          : eventTypeLabel(event.type);
      default:
        break;
    }
    let what;
    if (event.from && event.to && event.from !== event.to) {
      what = `${this.label(event.from)} → ${this.label(event.to)}`;
    } else {
      what = eventTypeLabel(event.type);
      if (event.provider_status) what += ` (${providerStatusLabel(event.provider_status)})`;
    }
    return who ? `${who}: ${what}` : what;
  }

  label(status) {
    return this.labels[status] || status;
  }
}
