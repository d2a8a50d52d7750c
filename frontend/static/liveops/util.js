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

const pad = (value) => String(value).padStart(2, '0');

/** "4 min 05 s" under an hour, "1 h 03 min" above: short enough for a card, exact enough to watch. */
export function formatDuration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  if (hours > 0) {
    return interpolate(gettext('%(hours)s h %(minutes)s min'), { hours, minutes: pad(minutes) }, true);
  }
  return interpolate(gettext('%(minutes)s min %(seconds)s s'), { minutes, seconds: pad(seconds) }, true);
}

export function eventTypeLabel(type) {
  const labels = {
    'order.created': gettext('Order created'),
    'order.status': gettext('Status changed'),
    'leg.status': gettext('Provider update'),
    'order.override': gettext('Status overridden'),
    'order.retry': gettext('Retried by an operator'),
  };
  return labels[type] || type;
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
