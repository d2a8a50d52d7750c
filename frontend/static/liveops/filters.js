'use strict';
/**
 * The dashboard's filters: one set for the board, its map and activity feed, and the History view.
 *
 * The URL's query string is the state (`?q=&status=&restaurant=&provider=&courier=&from=&to=`), so
 * a reload or a shared link shows the same thing. A value that cannot be used (an unknown status in a
 * link, "#abc" as an order number, "to" before "from") is kept where the operator can see and fix it,
 * and said in words; it is never dropped silently.
 */
import { gettext, h, interpolate, providerName } from './util.js';

export const FIELDS = ['q', 'status', 'restaurant', 'provider', 'courier', 'from', 'to'];
// Filters the board applies; `from` / `to` are for History (the board holds today's orders anyway).
const BOARD_FIELDS = ['q', 'status', 'restaurant', 'provider', 'courier'];
const MAX_TEXT = 200; // the API's limit for `q`
const INPUT_DELAY_MS = 200;

export class Filters {
  /**
   * @param {HTMLFormElement} form  holds one control per field, named as in FIELDS
   * @param {object} options  statuses (valid values), onChange(filters) after any change
   */
  constructor(form, { statuses, onChange }) {
    this.form = form;
    this.statuses = new Set(statuses);
    this.onChange = onChange;
    this.controls = Object.fromEntries(FIELDS.map((name) => [name, form.elements.namedItem(name)]));
    this.errorsNode = document.querySelector('[data-testid="filter-errors"]');
    this.clearButton = form.querySelector('[data-action="clear-filters"]');
    this.values = readQuery(window.location.search);
    this.timer = null;
    this.loaded = { restaurant: false, courier: true, provider: true }; // restaurants come from the API
    for (const name of FIELDS) this.show(name, this.values[name]);

    form.addEventListener('submit', (event) => event.preventDefault()); // Enter must not reload the page
    for (const name of FIELDS) {
      const control = this.controls[name];
      if (!control) continue;
      const typing = control.tagName === 'INPUT' && control.type === 'search';
      control.addEventListener(typing ? 'input' : 'change', () => {
        clearTimeout(this.timer);
        if (typing) this.timer = setTimeout(() => this.read(), INPUT_DELAY_MS);
        else this.read();
      });
      if (typing) control.addEventListener('change', () => this.read());
    }
    this.clearButton.addEventListener('click', () => this.clear());
    window.addEventListener('popstate', () => {
      this.values = readQuery(window.location.search);
      for (const name of FIELDS) this.show(name, this.values[name]);
      this.changed(false);
    });
    this.validate();
  }

  /** The values in effect: the raw ones, minus those found invalid (they are reported instead). */
  get effective() {
    return this.current;
  }

  /** Any board filter in effect (the status filter included). */
  get active() {
    const values = this.effective;
    return BOARD_FIELDS.some((name) => values[name]);
  }

  /** A board filter other than status: those make counters read "3 of 12". */
  get narrowing() {
    const values = this.effective;
    return BOARD_FIELDS.some((name) => name !== 'status' && values[name]);
  }

  read() {
    clearTimeout(this.timer);
    const values = {};
    for (const name of FIELDS) {
      const control = this.controls[name];
      values[name] = control ? control.value.trim() : '';
    }
    if (FIELDS.every((name) => values[name] === this.values[name])) return;
    this.values = values;
    this.changed(true);
  }

  clear() {
    this.values = Object.fromEntries(FIELDS.map((name) => [name, '']));
    for (const name of FIELDS) this.show(name, '');
    this.changed(true);
    this.controls.q.focus();
  }

  changed(pushUrl) {
    this.validate();
    if (pushUrl) this.writeUrl();
    this.onChange(this);
  }

  /** Writes the filters into the query string, keeping whatever else is there (the view, the page). */
  writeUrl(extra = {}) {
    const params = new URLSearchParams(window.location.search);
    for (const name of FIELDS) {
      if (this.values[name]) params.set(name, this.values[name]);
      else params.delete(name);
    }
    params.delete('page'); // other filters, other pages
    for (const [name, value] of Object.entries(extra)) {
      if (value) params.set(name, value);
      else params.delete(name);
    }
    const query = params.toString();
    window.history.replaceState(window.history.state, '', `${window.location.pathname}${query ? `?${query}` : ''}`);
  }

  /** A select gets an option for a value it does not list (from a link), so the value stays visible. */
  show(name, value) {
    const control = this.controls[name];
    if (!control) return;
    if (control.tagName === 'SELECT' && value && ![...control.options].some((option) => option.value === value)) {
      const text = interpolate(gettext('%s (unknown)'), [value]);
      control.append(h('option', { value, dataset: { unknown: 'true' }, text }));
    }
    control.value = value || '';
  }

  /** Options arrived (restaurants from the API): a value they do not list is now known to be wrong. */
  setOptions(name, items) {
    const control = this.controls[name];
    const listed = [...control.options].filter((option) => !option.dataset.unknown);
    const known = new Set(listed.map((option) => option.value));
    for (const item of items) {
      const value = String(item.id);
      if (known.has(value)) continue;
      known.add(value);
      const placeholder = [...control.options].find((option) => option.value === value);
      if (placeholder) placeholder.remove();
      control.append(h('option', { value, text: item.name }));
    }
    this.show(name, this.values[name]);
    this.loaded[name] = true;
    this.changed(false);
  }

  /** Adds options seen in orders (a kitchen or courier the lists did not have yet). */
  addOption(name, value, label) {
    const control = this.controls[name];
    value = String(value);
    const existing = [...control.options].find((option) => option.value === value);
    if (existing && !existing.dataset.unknown) return false;
    if (existing) existing.remove();
    control.append(h('option', { value, text: label }));
    if (this.values[name] === value) {
      control.value = value;
      return true; // it was reported unknown: the caller re-applies the filters
    }
    return false;
  }

  validate() {
    const errors = {};
    const { q, status, from, to } = this.values;
    if (q.length > MAX_TEXT) {
      errors.q = interpolate(gettext('The search text is too long (at most %s characters).'), [MAX_TEXT]);
    } else if (q.startsWith('#') && !/^#\d+$/.test(q)) {
      errors.q = interpolate(gettext('“%s” is not an order number: use digits after #, e.g. #123.'), [q]);
    }
    if (status && !this.statuses.has(status)) {
      errors.status = interpolate(gettext('There is no status “%s”.'), [status]);
    }
    for (const name of ['restaurant', 'courier']) {
      const value = this.values[name];
      if (!value) continue;
      if (!/^\d+$/.test(value)) errors[name] = interpolate(gettext('“%s” is not a valid choice.'), [value]);
      else if (this.loaded[name] && this.isUnknown(name, value)) {
        errors[name] = interpolate(
          name === 'restaurant' ? gettext('There is no restaurant #%s.') : gettext('There is no courier #%s.'),
          [value],
        );
      }
    }
    if (this.values.provider && this.isUnknown('provider', this.values.provider)) {
      errors.provider = interpolate(gettext('There is no provider “%s”.'), [providerName(this.values.provider)]);
    }
    for (const name of ['from', 'to']) {
      if (this.values[name] && !isDate(this.values[name])) {
        errors[name] = interpolate(gettext('“%s” is not a date (YYYY-MM-DD).'), [this.values[name]]);
      }
    }
    if (!errors.from && !errors.to && from && to && to < from) {
      errors.to = gettext('“To” is before “From”.');
    }
    this.errors = errors;
    this.current = { ...this.values };
    for (const name of Object.keys(errors)) this.current[name] = '';
    this.report();
  }

  isUnknown(name, value) {
    const option = [...this.controls[name].options].find((item) => item.value === value);
    return !option || Boolean(option.dataset.unknown);
  }

  /** Reports invalid values by their field, and an extra message (e.g. the API's) after them. */
  report(extra = '') {
    for (const name of FIELDS) {
      const control = this.controls[name];
      if (!control) continue;
      if (this.errors[name]) control.setAttribute('aria-invalid', 'true');
      else control.removeAttribute('aria-invalid');
    }
    const messages = Object.values(this.errors);
    if (extra) messages.push(extra);
    this.errorsNode.replaceChildren(...messages.map((text) => h('span', { text })));
    this.errorsNode.hidden = !messages.length;
    this.clearButton.disabled = FIELDS.every((name) => !this.values[name]);
  }

  /** Whether an order (a live payload) passes the board's filters. */
  matches(order) {
    const { q, status, restaurant, provider, courier } = this.effective;
    if (status && order.status !== status) return false;
    if (restaurant && !(order.restaurants || []).some((item) => String(item.id) === restaurant)) return false;
    if (provider && !(order.legs || []).some((leg) => leg.provider === provider)) return false;
    if (courier && !(order.courier && String(order.courier.id) === courier)) return false;
    return !q || textMatches(order, q);
  }

  /** The filters as the orders API takes them (`from` / `to` as the local day's bounds). */
  apiQuery({ withDates = true } = {}) {
    const values = this.effective;
    const params = new URLSearchParams();
    for (const name of ['q', 'status', 'restaurant', 'provider', 'courier']) {
      if (values[name]) params.set(name, values[name]);
    }
    if (withDates && values.from) params.set('created_after', dayStart(values.from).toISOString());
    if (withDates && values.to) {
      const end = dayStart(values.to);
      end.setDate(end.getDate() + 1); // "to" includes its whole day
      params.set('created_before', end.toISOString());
    }
    return params;
  }
}

/** Order number (`123`, `#123`), or text in the address, a kitchen's, courier's or provider's name. */
export function textMatches(order, q) {
  const text = q.toLowerCase();
  if (/^#\d+$/.test(text)) return String(order.id) === text.slice(1);
  if (/^\d+$/.test(text) && String(order.id) === text) return true;
  const haystack = [
    order.delivery_address,
    ...(order.restaurants || []).map((item) => item.name),
    order.courier && order.courier.name,
    ...(order.legs || []).map((leg) => leg.provider),
  ];
  return haystack.some((value) => value && String(value).toLowerCase().includes(text));
}

function readQuery(search) {
  const params = new URLSearchParams(search);
  return Object.fromEntries(FIELDS.map((name) => [name, (params.get(name) || '').trim()]));
}

function isDate(value) {
  return /^\d{4}-\d{2}-\d{2}$/.test(value) && !Number.isNaN(dayStart(value).getTime());
}

/** Midnight at the start of a YYYY-MM-DD day, in the browser's time zone. */
function dayStart(value) {
  const [year, month, day] = value.split('-').map(Number);
  return new Date(year, month - 1, day);
}
