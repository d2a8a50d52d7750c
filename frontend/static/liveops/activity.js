'use strict';
/**
 * A short live feed of the latest events, newest first: what just happened, without opening a card.
 * It shows events as they arrive on this page (it is not a history: the drawer has the full one).
 */
import { eventTypeLabel, formatClock, gettext, h, interpolate } from './util.js';

const KEEP = 40;

export class ActivityFeed {
  constructor(list, { labels, onOpen }) {
    this.list = list;
    this.labels = labels;
    this.onOpen = onOpen;
    this.empty = list.parentElement.querySelector('[data-role="activity-empty"]');
  }

  add(events) {
    if (!events.length) return;
    const items = events.map((event) => this.item(event)).reverse();
    this.list.prepend(...items);
    while (this.list.children.length > KEEP) this.list.lastElementChild.remove();
    if (this.empty) this.empty.hidden = this.list.children.length > 0;
  }

  item(event) {
    const order = event.order || {};
    let what;
    if (event.type === 'leg.status') {
      what = interpolate(gettext('provider reports “%s”'), [event.provider_status || '?']);
    } else if (event.from && event.to && event.from !== event.to) {
      what = `${this.label(event.from)} → ${this.label(event.to)}`;
    } else {
      what = eventTypeLabel(event.type);
    }
    const button = h(
      'button',
      { type: 'button', class: 'activity-link', onclick: () => this.onOpen(order.id) },
      h('span', { class: 'activity-id', text: `#${order.id}` }),
      h('span', { class: 'activity-what', text: what }),
    );
    return h(
      'li',
      { class: `activity-item status-${event.to || order.status}`, dataset: { seq: event.seq } },
      h('time', { datetime: event.at, text: formatClock(event.at, true) }),
      button,
    );
  }

  label(status) {
    return this.labels[status] || status;
  }
}
