'use strict';
/**
 * The order drawer: details, open alerts, legs, the full event timeline, and the Cancel / Retry actions.
 * It opens for any order: one on the board (its live payload), or one from History or a search (the
 * REST shape, until the order changes and its live payload arrives).
 *
 * Actions only send the request. The result reaches every open dashboard, this one included, through
 * the socket; the REST answer is used for nothing but showing an error. That keeps one source of truth
 * for the board and proves the live path works.
 */
import { acknowledgement, alertHeadline, alertKindLabel } from './alerts.js';
import {
  TERMINAL,
  api,
  cancelStatusLabel,
  destinationLabel,
  eventTypeLabel,
  formatAgo,
  formatDateTime,
  formatStamp,
  formatMoney,
  gettext,
  h,
  interpolate,
  legKindLabel,
  legName,
  providerName,
  providerStatusLabel,
  sourceLabel,
} from './util.js';

const REFETCH_DELAY_MS = 250; // events come in bursts: one detail request per burst

export class OrderDrawer {
  /**
   * @param {HTMLElement} element  the drawer (data-testid="drawer")
   * @param {HTMLDialogElement} dialog  the confirmation dialog
   * @param {object} options  labels (status → label), getOrder(id) → live payload, onSelect(id | null),
   *                          onAcknowledge(alert, order)
   */
  constructor(element, dialog, { labels, getOrder, onSelect, onAcknowledge }) {
    this.element = element;
    this.dialog = dialog;
    this.labels = labels;
    this.getOrder = getOrder;
    this.onSelect = onSelect;
    this.onAcknowledge = onAcknowledge;
    this.orderId = null;
    this.detail = null;
    this.seed = null;
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

  /** Opens for `orderId`; `seed` is the order as History listed it, when it is not on the board. */
  open(orderId, opener, seed = null) {
    this.orderId = orderId;
    this.opener = opener || null;
    this.detail = null;
    this.seed = seed;
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

  /** The freshest view of the order: its live payload, else its REST detail, else History's row. */
  current() {
    return this.getOrder(this.orderId) || this.detail || this.seed;
  }

  renderLive() {
    const order = this.current();
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
      [gettext('Map'), destinationLabel(order.destination_status)],
      [gettext('Restaurants'), kitchensOf(order).join(', ')],
      [gettext('Courier'), order.courier ? order.courier.name : '—'],
    ];
    if (order.promised_at && !order.eta) rows.splice(4, 0, [gettext('Promised'), formatDateTime(order.promised_at)]);
    if (order.failure_reason) rows.push([gettext('Reason'), order.failure_reason]);
    this.part('summary').replaceChildren(
      ...rows.flatMap(([term, value]) => [h('dt', { text: term }), h('dd', { text: value || '—' })]),
    );
    this.renderAlerts(order);
    this.renderLegs(order.legs || []);

    const finished = TERMINAL.has(order.status);
    const failing = (order.legs || []).some((leg) => leg.attempts > 0 || leg.last_error);
    this.cancelButton.disabled = finished;
    this.retryButton.disabled = !(order.status === 'failed' || (!finished && failing));
    this.retryButton.title = this.retryButton.disabled
      ? gettext('Retry is for failed orders and failing provider calls')
      : '';
  }

  renderAlerts(order) {
    const alerts = order.alerts || [];
    const section = this.part('alerts-section');
    section.hidden = !alerts.length;
    this.part('alerts').replaceChildren(
      ...alerts.map((alert) => {
        const acknowledged = Boolean(alert.acknowledged_at);
        return h(
          'li',
          {
            class: `drawer-alert kind-${alert.kind}` + (acknowledged ? ' is-acknowledged' : ''),
            dataset: { alertId: alert.id },
          },
          h(
            'div',
            { class: 'drawer-alert-head' },
            h('span', { class: `badge badge-${alert.kind}`, text: alertKindLabel(alert.kind) }),
            h('strong', { text: alertHeadline(alert, order) }),
            h('time', { datetime: alert.raised_at, text: formatAgo(alert.raised_at) }),
          ),
          alert.detail ? h('p', { class: 'drawer-alert-detail', text: alert.detail }) : null,
          acknowledged
            ? h('p', { class: 'drawer-alert-ack', text: acknowledgement(alert) })
            : h('button', {
                type: 'button',
                class: 'button small',
                text: gettext('Acknowledge'),
                onclick: () => this.onAcknowledge(alert, order),
              }),
        );
      }),
    );
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
            h('span', { class: 'leg-provider', text: `${legKindLabel(leg.kind)} · ${providerName(leg.provider)}` }),
            h('span', { class: `status-pill status-${leg.status}`, text: this.labels[leg.status] || leg.status }),
          ),
          h(
            'div',
            { class: 'leg-body' },
            h('span', {
              title: leg.provider_status || null,
              text: interpolate(gettext('Provider status: %s'), [providerStatusLabel(leg.provider_status) || '—']),
            }),
            leg.attempts
              ? h('span', { class: 'leg-attempts', text: interpolate(gettext('Failed attempts: %s'), [leg.attempts]) })
              : null,
            leg.cancel_status
              ? h('span', {
                  class: `leg-cancel cancel-${leg.cancel_status}`,
                  dataset: { testid: 'leg-cancel-status' },
                  text: cancelStatusLabel(leg.cancel_status) || leg.cancel_status,
                })
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
    const change = event.cancel_status
      ? cancelStatusLabel(event.cancel_status)
      : event.from && event.to && event.from !== event.to
        ? `${this.labels[event.from] || event.from} → ${this.labels[event.to] || event.to}`
        : event.to
          ? this.labels[event.to] || event.to
          : '';
    const meta = [sourceLabel(event.source)];
    if (leg) meta.push(legName(leg));
    if (event.provider_status) {
      meta.push(interpolate(gettext('provider: %s'), [providerStatusLabel(event.provider_status)]));
    }
    if (event.actor) meta.push(interpolate(gettext('by %s'), [event.actor]));
    return h(
      'li',
      { class: `timeline-item type-${event.type.replace('.', '-')}`, dataset: { seq: event.seq, type: event.type } },
      h('time', { datetime: event.at, text: formatStamp(event.at) }),
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
      if (!this.getOrder(orderId)) this.renderLive(); // not on the board: the detail is the freshest view
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
      message: cancelMessage(this.current()),
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

/** Kitchen names of an order in either shape: live (`restaurants`) or REST (its kitchen legs). */
function kitchensOf(order) {
  if (order.restaurants) return order.restaurants.map((item) => item.name);
  const names = (order.legs || []).filter((leg) => leg.kind === 'kitchen').map((leg) => leg.restaurant);
  return [...new Set(names.filter(Boolean))];
}

/**
 * What cancelling will really do to this order: it is cancelled here at once; each provider that
 * already has its part is asked to cancel, and may refuse (a kitchen that has cooked it): a refusal
 * becomes a "Cancel refused" alert. Parts not sent yet are simply never sent.
 */
function cancelMessage(order) {
  const legs = (order && order.legs) || [];
  const sent = legs.filter((leg) => leg.status !== 'scheduled' && !TERMINAL.has(leg.status));
  const unsent = legs.filter((leg) => leg.status === 'scheduled');
  const parts = [gettext('The order is cancelled here at once, and this cannot be undone.')];
  if (sent.length) {
    parts.push(
      interpolate(gettext('These providers are asked to cancel their part: %s.'), [sent.map(legName).join(', ')]),
    );
    parts.push(
      gettext(
        'A kitchen that has already cooked, or a courier who has delivered, may refuse: a refusal appears under “Needs attention” as “Cancel refused”, and the food may still be made.',
      ),
    );
  }
  if (unsent.length) {
    const names = unsent.map(legName).join(', ');
    parts.push(interpolate(gettext('Not placed with the provider yet, so it never will be: %s.'), [names]));
  }
  if (!sent.length && !unsent.length) parts.push(gettext('No provider has this order yet.'));
  return parts.join(' ');
}
