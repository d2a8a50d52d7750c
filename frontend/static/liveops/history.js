'use strict';
/**
 * The History view: every order, paged by the server (GET /api/orders/), with the board's filters plus
 * a date range. A row opens the same drawer as a card, for any order however old.
 */
import { alertKindLabel } from './alerts.js';
import { api, formatMoney, formatWhen, gettext, h, interpolate, ngettext } from './util.js';

export const PAGE_SIZE = 50;

export class HistoryView {
  /**
   * @param {HTMLElement} root  the view (data-testid="history")
   * @param {object} options  filters (a Filters), labels (status → label), onOpen(orderId, opener, order)
   */
  constructor(root, { filters, labels, onOpen }) {
    this.root = root;
    this.filters = filters;
    this.labels = labels;
    this.onOpen = onOpen;
    this.body = root.querySelector('tbody');
    this.summary = root.querySelector('[data-role="summary"]');
    this.state = root.querySelector('[data-role="state"]');
    this.prev = root.querySelector('[data-action="previous"]');
    this.next = root.querySelector('[data-action="next"]');
    this.page = Math.max(1, Number(new URLSearchParams(window.location.search).get('page')) || 1);
    this.request = 0;
    this.orders = new Map(); // id → the row's order (REST shape), for the drawer until its detail loads
    this.prev.addEventListener('click', () => this.go(this.page - 1));
    this.next.addEventListener('click', () => this.go(this.page + 1));
  }

  go(page) {
    this.page = Math.max(1, page);
    const params = new URLSearchParams(window.location.search);
    if (this.page > 1) params.set('page', this.page);
    else params.delete('page');
    const query = params.toString();
    window.history.replaceState(window.history.state, '', `${window.location.pathname}${query ? `?${query}` : ''}`);
    this.load();
  }

  /** The view is shown: the page the URL names (a reload, the back button). */
  show() {
    this.page = Math.max(1, Number(new URLSearchParams(window.location.search).get('page')) || 1);
    this.load();
  }

  /** The filters changed: back to the first page. */
  filtersChanged() {
    this.page = 1;
    this.load();
  }

  async load() {
    const request = ++this.request;
    if (Object.keys(this.filters.errors).length) {
      // Say what is wrong instead of listing orders the operator did not ask for.
      this.body.replaceChildren();
      this.setState(gettext('Fix the filters above to search.'));
      this.summary.textContent = '';
      this.prev.disabled = this.next.disabled = true;
      return;
    }
    const params = this.filters.apiQuery();
    params.set('page', this.page);
    params.set('page_size', PAGE_SIZE);
    this.root.setAttribute('aria-busy', 'true');
    this.setState(gettext('Loading…'));
    try {
      const data = await api(`/api/orders/?${params}`);
      if (request !== this.request) return;
      this.render(data);
      this.filters.report();
    } catch (error) {
      if (request !== this.request) return;
      if (error.status === 404 && this.page > 1) {
        this.go(1); // a page past the end (fewer orders now, or an old link)
        return;
      }
      this.body.replaceChildren();
      this.summary.textContent = '';
      this.setState(error.message);
      if (error.status === 400) this.filters.report(error.message);
    } finally {
      if (request === this.request) this.root.removeAttribute('aria-busy');
    }
  }

  setState(text) {
    this.state.textContent = text;
    this.state.hidden = !text;
  }

  render(data) {
    const results = data.results || [];
    this.orders = new Map(results.map((order) => [order.id, order]));
    this.body.replaceChildren(...results.map((order) => this.row(order)));
    const pages = Math.max(1, Math.ceil(data.count / PAGE_SIZE));
    const first = data.count ? (this.page - 1) * PAGE_SIZE + 1 : 0;
    const last = (this.page - 1) * PAGE_SIZE + results.length;
    this.summary.textContent = data.count
      ? interpolate(
          ngettext(
            '%(first)s–%(last)s of %(count)s order · page %(page)s of %(pages)s',
            '%(first)s–%(last)s of %(count)s orders · page %(page)s of %(pages)s',
            data.count,
          ),
          { first, last, count: data.count, page: this.page, pages },
          true,
        )
      : '';
    this.root.dataset.count = data.count;
    this.setState(data.count ? '' : gettext('No order matches these filters.'));
    this.prev.disabled = !data.previous;
    this.next.disabled = !data.next;
  }

  row(order) {
    const kitchens = (order.legs || [])
      .filter((leg) => leg.kind === 'kitchen')
      .map((leg) => leg.restaurant)
      .filter(Boolean);
    const open = h('button', {
      type: 'button',
      class: 'link-button history-open',
      text: `#${order.id}`,
      'aria-label': interpolate(gettext('Open order #%s'), [order.id]),
    });
    const row = h(
      'tr',
      { dataset: { orderId: order.id, testid: `history-row-${order.id}` }, class: `status-${order.status}` },
      h('td', {}, open),
      h('td', { class: 'num', text: formatWhen(order.created_at) }),
      h(
        'td',
        {},
        h('span', { class: `status-pill status-${order.status}`, text: this.labels[order.status] || order.status }),
      ),
      h('td', { text: [...new Set(kitchens)].join(' · ') || '—' }),
      h('td', { text: order.courier ? order.courier.name : '—' }),
      h('td', { class: 'history-address', text: order.delivery_address }),
      h('td', { class: 'num', text: formatMoney(order.total) }),
      h(
        'td',
        {},
        (order.alerts || []).map((alert) =>
          h('span', {
            class: `badge badge-${alert.kind}` + (alert.acknowledged_at ? ' is-acknowledged' : ''),
            title: alert.detail || null,
            text: alertKindLabel(alert.kind),
          }),
        ),
        order.failure_reason ? h('span', { class: 'history-reason', text: order.failure_reason }) : null,
      ),
    );
    // The whole row is a target for the mouse; the button is the one for the keyboard.
    row.addEventListener('click', () => this.onOpen(order.id, open, order));
    return row;
  }
}
