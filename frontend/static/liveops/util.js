'use strict';
/**
 * Small helpers shared by every page: DOM building, formatting, translations, REST calls.
 *
 * Every piece of server text reaches the page through textContent (see `h`), never innerHTML, so an
 * order note or a restaurant name can never become markup.
 */

// Django's JavaScriptCatalog (/jsi18n/) defines these globals before any module runs. The fallbacks
// keep the page usable (in English) if that script failed to load.
export const gettext = window.gettext || ((text) => text);
export const ngettext = window.ngettext || ((one, many, count) => (count === 1 ? one : many));
export const interpolate =
  window.interpolate ||
  ((format, values, named) =>
    named
      ? format.replace(/%\(\w+\)s/g, (match) => String(values[match.slice(2, -2)]))
      : format.replace(/%s/g, () => String(values.shift())));

export const LANG = document.documentElement.lang || 'en';
export const SVG_NS = 'http://www.w3.org/2000/svg';
export const TERMINAL = new Set(['delivered', 'failed', 'cancelled']);

/**
 * Builds an element. `attrs` keys: `class`, `text` (textContent), `dataset`, `on<Event>` listeners,
 * anything else becomes an attribute (null/false skipped). Children may be nodes or strings.
 */
export function h(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** The same for SVG elements, which need their namespace. */
export function s(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'text') node.textContent = String(value);
    else if (key === 'class') node.setAttribute('class', value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Parses a `{{ value|json_script:"id" }}` block. */
export function readJSON(id, fallback = {}) {
  const node = document.getElementById(id);
  return node ? JSON.parse(node.textContent) : fallback;
}

// --- formatting --------------------------------------------------------------------------------------

const money = new Intl.NumberFormat(LANG, { style: 'currency', currency: 'UAH', minimumFractionDigits: 2 });
// A 24-hour clock in every language: operators compare times at a glance, AM/PM only gets in the way.
const clock = new Intl.DateTimeFormat(LANG, { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
const clockSeconds = new Intl.DateTimeFormat(LANG, {
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
  hourCycle: 'h23',
});
const dateTime = new Intl.DateTimeFormat(LANG, {
  day: 'numeric',
  month: 'short',
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
  hourCycle: 'h23',
});

/** Totals travel in minor units (kopiykas) so that no float rounding touches money. */
export function formatMoney(minor) {
  return money.format((Number(minor) || 0) / 100);
}

export function formatClock(iso, withSeconds = false) {
  if (!iso) return '';
  return (withSeconds ? clockSeconds : clock).format(new Date(iso));
}

export function formatDateTime(iso) {
  return iso ? dateTime.format(new Date(iso)) : '';
}

const dayMonth = new Intl.DateTimeFormat(LANG, { day: 'numeric', month: 'short' });
const DAY_MS = 86_400_000;

const sameDay = (a, b) =>
  a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();

/** "10:15" today, "29 Nov, 10:15" on any other day: a time without its date misleads. */
export function formatWhen(iso, now = Date.now()) {
  if (!iso) return '';
  const date = new Date(iso);
  if (sameDay(date, new Date(now))) return clock.format(date);
  return interpolate(gettext('%(date)s, %(time)s'), { date: dayMonth.format(date), time: clock.format(date) }, true);
}

/** A moment in a history: the time to the second today, with its date on any other day. */
export function formatStamp(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  return sameDay(date, new Date()) ? clockSeconds.format(date) : dateTime.format(date);
}

/** "8 s", "4 min", "1 h 20 min", "3 d 2 h": as long as it takes to read, as exact as a glance needs. */
export function formatDuration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  if (total < 60) return interpolate(gettext('%s s'), [total]);
  const minutes = Math.floor(total / 60);
  if (minutes < 60) return interpolate(gettext('%s min'), [minutes]);
  const hours = Math.floor(minutes / 60);
  if (hours < 24) {
    const rest = minutes % 60;
    return rest
      ? interpolate(gettext('%(hours)s h %(minutes)s min'), { hours, minutes: rest }, true)
      : interpolate(gettext('%s h'), [hours]);
  }
  const days = Math.floor(hours / 24);
  const rest = hours % 24;
  return rest
    ? interpolate(gettext('%(days)s d %(hours)s h'), { days, hours: rest }, true)
    : interpolate(gettext('%s d'), [days]);
}

/**
 * The countdown to a promised time: {text, late, title}. "due in 12 min" or "late 5 min" when the time
 * is today and close; "due 29 Nov, 10:15" when it is on another day.
 */
export function formatCountdown(iso, now = Date.now()) {
  const promised = Date.parse(iso);
  const left = promised - now;
  const title = interpolate(gettext('Promised for %s'), [formatWhen(iso, now)]);
  if (left < 0) {
    // Minutes, not seconds: "late 0 min" would read as not late, so the first minute counts as one.
    const late = formatDuration(Math.max(-left, 60_000));
    return { text: interpolate(gettext('late %s'), [late]), late: true, title };
  }
  if (!sameDay(new Date(promised), new Date(now)) && left > 6 * 3600_000) {
    return { text: interpolate(gettext('due %s'), [formatWhen(iso, now)]), late: false, title };
  }
  return { text: interpolate(gettext('due in %s'), [formatDuration(Math.max(left, 60_000))]), late: false, title };
}

/** "4 min ago"; the date and time beyond a day. */
export function formatAgo(iso, now = Date.now()) {
  const ago = now - Date.parse(iso);
  if (ago > DAY_MS) return formatWhen(iso, now);
  return interpolate(gettext('%s ago'), [formatDuration(ago)]);
}

export function eventTypeLabel(type) {
  const labels = {
    'order.created': gettext('Order created'),
    'order.status': gettext('Status changed'),
    'leg.status': gettext('Provider update'),
    'order.override': gettext('Status overridden'),
    'order.retry': gettext('Retried by an operator'),
    'order.courier': gettext('Courier assigned'),
    'order.located': gettext('Delivery point looked up'),
    'leg.cancel': gettext('Cancellation at the provider'),
    'alert.raised': gettext('Alert raised'),
    'alert.cleared': gettext('Alert cleared'),
    'alert.acknowledged': gettext('Alert acknowledged'),
  };
  return labels[type] || type;
}

/** The `tel:` address of a phone number as people write it ("+380 67 123-45-67"). */
export function telHref(phone) {
  return `tel:${phone.replace(/[^\d+]/g, '')}`;
}

/** Where an order's door is on the map, in words (its `destination_status`). */
export function destinationLabel(status) {
  const labels = {
    pending: gettext('Being looked up on the map'),
    found: gettext('On the map'),
    not_found: gettext('Address not found on the map'),
    failed: gettext('Map lookup failed: the geocoder could not be reached'),
    off: gettext('Not on the map: no geocoder configured'),
  };
  return labels[status] || '';
}

export function sourceLabel(source) {
  const labels = {
    api: gettext('API'),
    poll: gettext('Poll'),
    webhook: gettext('Webhook'),
    operator: gettext('Operator'),
    system: gettext('System'),
  };
  return labels[source] || source || '';
}

export function legKindLabel(kind) {
  return { kitchen: gettext('Kitchen'), delivery: gettext('Delivery') }[kind] || kind;
}

/** A provider's name as people say it: the code is lower case ("uklon" → "Uklon"). */
export function providerName(code) {
  if (!code) return '';
  return code.charAt(0).toUpperCase() + code.slice(1);
}

/**
 * Provider status codes in words. The codes are the providers' own (orders/status.py lists them); a code
 * not listed here is shown as it came, which is what an operator needs to report it.
 */
export function providerStatusLabel(code) {
  const labels = {
    'not started': gettext('not started'),
    accepted: gettext('accepted'),
    cooking: gettext('cooking'),
    preparing: gettext('preparing'),
    cooked: gettext('cooked'),
    finished: gettext('finished'),
    ready: gettext('ready'),
    handed_over: gettext('handed over'),
    delivery: gettext('on the way'),
    delivered: gettext('delivered'),
    cancelled: gettext('cancelled'),
  };
  return labels[code] || code || '';
}

/** A leg as an operator names it: "Sushi Nord (Bueno)", "Courier (Uklon)"; "Bueno" for Bueno's own kitchen. */
export function legName(leg) {
  if (!leg) return '';
  const who = leg.restaurant || (leg.kind === 'delivery' ? gettext('Courier') : legKindLabel(leg.kind));
  if (!leg.provider || who.toLowerCase() === leg.provider.toLowerCase()) return who;
  return `${who} (${providerName(leg.provider)})`;
}

export function cancelStatusLabel(status) {
  return (
    {
      requested: gettext('Cancel requested'),
      confirmed: gettext('Cancel confirmed'),
      refused: gettext('Cancel refused'),
    }[status] || ''
  );
}

/** localStorage that never throws (private windows, disabled storage): preferences are best effort. */
export const store = {
  get(key, fallback = null) {
    try {
      const value = window.localStorage.getItem(key);
      return value === null ? fallback : value;
    } catch (error) {
      return fallback;
    }
  },
  set(key, value) {
    try {
      window.localStorage.setItem(key, value);
    } catch (error) {
      /* the preference lasts for this page only */
    }
  },
};

// --- REST ----------------------------------------------------------------------------------------------

function cookie(name) {
  const match = document.cookie.split('; ').find((part) => part.startsWith(name + '='));
  return match ? decodeURIComponent(match.slice(name.length + 1)) : '';
}

/** An API error with the server's own message (`detail`) when it sent one. */
export class ApiError extends Error {
  constructor(status, detail, code) {
    super(detail);
    this.status = status;
    this.code = code;
  }
}

/** JSON over the session; POSTs carry Django's CSRF token from its cookie. */
export async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') {
    headers['Content-Type'] = 'application/json';
    headers['X-CSRFToken'] = cookie('csrftoken');
  }
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiError(0, gettext('The server could not be reached. Check the connection and try again.'));
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, errorText(response.status, data), data && data.code);
  }
  return data;
}

function errorText(status, data) {
  if (data && typeof data.detail === 'string') return data.detail;
  if (data && typeof data === 'object') {
    // DRF validation errors: {"field": ["message", ...]}
    const messages = Object.values(data).flat().filter((item) => typeof item === 'string');
    if (messages.length) return messages.join(' ');
  }
  return interpolate(gettext('The request failed (HTTP %s).'), [status]);
}
