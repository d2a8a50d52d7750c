'use strict';
/**
 * The order drawer: details, legs, the full event timeline, and the Cancel / Retry actions.
 *
 * Actions only send the request. The result reaches every open dashboard, this one included, through
 * the socket; the REST answer is used for nothing but showing an error. That keeps one source of truth
 * for the board and proves the live path works.
 */
import {
  TERMINAL,
  api,
  eventTypeLabel,
  formatDateTime,
  formatClock,
  formatMoney,
  gettext,
  h,
  interpolate,
  legKindLabel,
  sourceLabel,
} from './util.js';

const REFETCH_DELAY_MS = 250; // events come in bursts: one detail request per burst

export class OrderDrawer {
  /**
   * @param {HTMLElement} element  the drawer (data-testid="drawer")
   * @param {HTMLDialogElement} dialog  the confirmation dialog
   * @param {object} options  labels (status → label), getOrder(id) → live payload, onSelect(id | null)
   */
  constructor(element, dialog, { labels, getOrder, onSelect }) {
    this.element = element;
    this.dialog = dialog;
    this.labels = labels;
    this.getOrder = getOrder;
    this.onSelect = onSelect;
    this.orderId = null;
    this.detail = null;
    this.request = 0;
    this.refetchTimer = null;
    this.part = (role) => element.querySelector(`[data-role="${role}"]`);
    element.querySelector('[data-action="close"]').addEventListener('click', () => this.close());
    this.cancelButton = element.querySelector('[data-action="cancel"]');
    this.retryButton = element.querySelector('[data-action="retry"]');
    this.cancelButton.addEventListener('click', () => this.confirmCancel());
    this.retryButton.addEventListener('click', () => this.confirmRetry());
    document.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && this.orderId !== null && !this.dialog.open) this.close();
    });
  }

  open(orderId, opener) {
    this.orderId = orderId;
    this.opener = opener || null;
    this.detail = null;
    this.setError('');
    this.setNote('');
    this.part('items').replaceChildren(h('p', { class: 'muted', text: gettext('Loading…') }));
    this.part('timeline').replaceChildren();
    this.element.hidden = false;
    this.element.classList.add('is-open');
    this.renderLive();
    this.fetchDetail();
    this.onSelect(orderId);
    this.element.focus();
  }

  close() {
    if (this.orderId === null) return;
    this.orderId = null;
    this.element.classList.remove('is-open');
    this.element.hidden = true;
    this.onSelect(null);
    if (this.opener && this.opener.isConnected) this.opener.focus();
  }

  /** The board got a newer payload for an order: refresh if it is the one shown. */
  orderChanged(orderId) {
    if (orderId !== this.orderId) return;
    this.setNote('');
    this.renderLive();
    clearTimeout(this.refetchTimer);
    this.refetchTimer = setTimeout(() => this.fetchDetail(), REFETCH_DELAY_MS);
  }

  // --- rendering ----------------------------------------------------------------------------------------

  renderLive() {
    const order = this.getOrder(this.orderId);
    if (!order) return;
    this.part('title').textContent = interpolate(gettext('Order #%s'), [order.id]);
    const status = this.part('status');
    status.textContent = this.labels[order.status] || order.status;
    status.className = `status-pill status-${order.status}`;
    this.element.dataset.status = order.status;

    const rows = [
      [gettext('Total'), formatMoney(order.total)],
      [gettext('Created'), formatDateTime(order.created_at)],
      [gettext('Updated'), formatDateTime(order.updated_at)],
      [gettext('ETA'), order.eta ? formatDateTime(order.eta) : gettext('As soon as possible')],
      [gettext('Address'), order.delivery_address],
      [gettext('Restaurants'), (order.restaurants || []).map((item) => item.name).join(', ')],
      [gettext('Courier'), order.courier ? order.courier.name : '—'],
    ];
    if (order.failure_reason) rows.push([gettext('Reason'), order.failure_reason]);
    this.part('summary').replaceChildren(
      ...rows.flatMap(([term, value]) => [h('dt', { text: term }), h('dd', { text: value || '—' })]),
    );
    this.renderLegs(order.legs || []);

    const finished = TERMINAL.has(order.status);
    const failing = (order.legs || []).some((leg) => leg.attempts > 0 || leg.last_error);
    this.cancelButton.disabled = finished;
    this.retryButton.disabled = !(order.status === 'failed' || (!finished && failing));
    this.retryButton.title = this.retryButton.disabled
      ? gettext('Retry is for failed orders and failing provider calls')
      : '';
  }

  renderLegs(legs) {
    const list = this.part('legs');
    if (!legs.length) {
      list.replaceChildren(h('p', { class: 'muted', text: gettext('No provider legs yet.') }));
      return;
    }
    list.replaceChildren(
      ...legs.map((leg) =>
        h(
          'li',
          { class: `leg status-${leg.status}` + (leg.last_error ? ' has-error' : '') },
          h(
            'div',
            { class: 'leg-head' },
            h('strong', { text: leg.restaurant || legKindLabel(leg.kind) }),
            h('span', { class: 'leg-provider', text: `${legKindLabel(leg.kind)} · ${leg.provider}` }),
            h('span', { class: `status-pill status-${leg.status}`, text: this.labels[leg.status] || leg.status }),
          ),
          h(
            'div',
            { class: 'leg-body' },
            h('span', {
              text: interpolate(gettext('Provider status: %s'), [leg.provider_status || '—']),
            }),
            leg.attempts
              ? h('span', { class: 'leg-attempts', text: interpolate(gettext('Failed attempts: %s'), [leg.attempts]) })
              : null,
          ),
          leg.last_error ? h('p', { class: 'leg-error', text: leg.last_error }) : null,
        ),
      ),
    );
  }

  renderDetail(detail) {
    const items = detail.items || [];
    this.part('items').replaceChildren(
      items.length
        ? h(
            'table',
            { class: 'items' },
            h(
              'thead',
              {},
              h(
                'tr',
                {},
                h('th', { scope: 'col', text: gettext('Dish') }),
                h('th', { scope: 'col', text: gettext('Restaurant') }),
                h('th', { scope: 'col', class: 'num', text: gettext('Qty') }),
                h('th', { scope: 'col', class: 'num', text: gettext('Price') }),
              ),
            ),
            h(
              'tbody',
              {},
              items.map((item) =>
                h(
                  'tr',
                  {},
                  h('td', { text: item.name }),
                  h('td', { text: item.restaurant }),
                  h('td', { class: 'num', text: item.quantity }),
                  h('td', { class: 'num', text: formatMoney(item.price * item.quantity) }),
                ),
              ),
            ),
          )
        : h('p', { class: 'muted', text: gettext('No items.') }),
    );
    const legs = new Map((detail.legs || []).map((leg) => [leg.id, leg]));
    const events = [...(detail.events || [])].sort((a, b) => b.seq - a.seq); // newest first
    this.part('timeline').replaceChildren(...events.map((event) => this.timelineItem(event, legs)));
  }

  timelineItem(event, legs) {
    const leg = event.leg ? legs.get(event.leg) : null;
    const change =
      event.from && event.to && event.from !== event.to
        ? `${this.labels[event.from] || event.from} → ${this.labels[event.to] || event.to}`
        : event.to
          ? this.labels[event.to] || event.to
          : '';
    const meta = [sourceLabel(event.source)];
    if (leg) meta.push(`${leg.restaurant || legKindLabel(leg.kind)} (${leg.provider})`);
    if (event.provider_status) meta.push(interpolate(gettext('provider: %s'), [event.provider_status]));
    if (event.actor) meta.push(interpolate(gettext('by %s'), [event.actor]));
    return h(
      'li',
      { class: `timeline-item type-${event.type.replace('.', '-')}`, dataset: { seq: event.seq, type: event.type } },
      h('time', { datetime: event.at, text: formatClock(event.at, true) }),
      h(
        'div',
        { class: 'timeline-body' },
        h('span', { class: 'timeline-title', text: eventTypeLabel(event.type) }),
        change ? h('span', { class: 'timeline-change', text: change }) : null,
        h('span', { class: 'timeline-meta', text: meta.filter(Boolean).join(' · ') }),
        event.reason ? h('span', { class: 'timeline-reason', text: event.reason }) : null,
      ),
    );
  }

  async fetchDetail() {
    const orderId = this.orderId;
    if (orderId === null) return;
    const request = ++this.request;
    try {
      const detail = await api(`/api/orders/${encodeURIComponent(orderId)}/`);
      if (request !== this.request || orderId !== this.orderId) return; // a newer request or another order
      this.detail = detail;
      this.renderDetail(detail);
      this.element.dataset.loadedSeq = Math.max(0, ...(detail.events || []).map((event) => event.seq));
    } catch (error) {
      if (request === this.request && orderId === this.orderId) this.setError(error.message);
    }
  }

  // --- actions ------------------------------------------------------------------------------------------

  confirmCancel() {
    const orderId = this.orderId;
    this.ask({
      title: interpolate(gettext('Cancel order #%s?'), [orderId]),
      message: gettext('The kitchens and the courier are told to stop. This cannot be undone.'),
      confirm: gettext('Cancel order'),
      reason: true,
    }).then((answer) => {
      if (answer) this.act(orderId, 'cancel', { reason: answer.reason });
    });
  }

  confirmRetry() {
    const orderId = this.orderId;
    this.ask({
      title: interpolate(gettext('Retry order #%s?'), [orderId]),
      message: gettext('Failing provider calls are made again right away.'),
      confirm: gettext('Retry'),
      reason: false,
    }).then((answer) => {
      if (answer) this.act(orderId, 'retry', undefined);
    });
  }

  async act(orderId, action, body) {
    this.setError('');
    this.setNote(gettext('Sent. The board changes when the server records it.'));
    try {
      await api(`/api/orders/${encodeURIComponent(orderId)}/${action}/`, { method: 'POST', body });
    } catch (error) {
      if (orderId === this.orderId) {
        this.setNote('');
        this.setError(error.message);
      }
    }
  }

  /** Shows the confirmation dialog; resolves to {reason} when confirmed, null otherwise. */
  ask({ title, message, confirm, reason }) {
    const dialog = this.dialog;
    const form = dialog.querySelector('form');
    const field = dialog.querySelector('[data-role="reason-field"]');
    const textarea = field.querySelector('textarea');
    dialog.querySelector('[data-role="title"]').textContent = title;
    dialog.querySelector('[data-role="message"]').textContent = message;
    dialog.querySelector('[data-testid="confirm-yes"]').textContent = confirm;
    field.hidden = !reason;
    textarea.disabled = !reason; // a disabled field is skipped by validation
    textarea.value = '';
    form.reset();
    dialog.returnValue = '';
    return new Promise((resolve) => {
      dialog.addEventListener(
        'close',
        () => resolve(dialog.returnValue === 'yes' ? { reason: textarea.value.trim() } : null),
        { once: true },
      );
      dialog.showModal();
      (reason ? textarea : dialog.querySelector('[data-testid="confirm-yes"]')).focus();
    });
  }

  setError(text) {
    const node = this.part('error');
    node.textContent = text;
    node.hidden = !text;
  }

  setNote(text) {
    this.part('note').textContent = text;
  }
}
