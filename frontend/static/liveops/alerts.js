'use strict';
/**
 * Alerts as the dashboard shows them: their words, the acknowledge dialog, and the opt-in sound and
 * desktop notification for new ones. The server decides what is an alert (orders/alerts.py); each
 * order payload carries its open alerts, newest first.
 */
import {
  TERMINAL,
  api,
  formatDuration,
  formatWhen,
  gettext,
  interpolate,
  legName,
  ngettext,
  readJSON,
  store,
} from './util.js';

const kindLabels = readJSON('liveops-alert-labels');
const statusLabels = readJSON('liveops-labels');

export function alertKindLabel(kind) {
  return kindLabels[kind] || kind;
}

function legOf(alert, order) {
  if (!alert.leg || !order) return null;
  return (order.legs || []).find((leg) => leg.id === alert.leg) || null;
}

/**
 * Why the alert is there, in the operator's language and in words: which kitchen or courier service,
 * how late. The server's `detail` (English, with the technical cause) is shown next to it.
 */
export function alertHeadline(alert, order, now = Date.now()) {
  const leg = legOf(alert, order);
  const who = leg ? legName(leg) : gettext('A provider');
  switch (alert.kind) {
    case 'provider_failing':
      // No count of attempts: retries do not send events, so a count here would go stale at once.
      return interpolate(gettext('%(who)s is failing'), { who }, true);
    case 'cancel_refused':
      return interpolate(gettext('%(who)s refused to cancel'), { who }, true);
    case 'late': {
      const promised = order && (order.promised_at || order.eta);
      if (promised && !TERMINAL.has(order.status) && now > Date.parse(promised)) {
        return interpolate(
          gettext('Late %(duration)s (promised %(time)s)'),
          { duration: formatDuration(now - Date.parse(promised)), time: formatWhen(promised, now) },
          true,
        );
      }
      return gettext('Late: past its promised time');
    }
    case 'stuck':
      if (order && !TERMINAL.has(order.status)) {
        return interpolate(
          gettext('No progress in %(status)s for %(duration)s'),
          {
            status: statusLabels[order.status] || order.status,
            duration: formatDuration(now - Date.parse(order.updated_at)),
          },
          true,
        );
      }
      return alertKindLabel(alert.kind);
    case 'failed':
      return order && order.failure_reason
        ? interpolate(gettext('Order failed: %s'), [order.failure_reason])
        : gettext('Order failed');
    default:
      return alertKindLabel(alert.kind);
  }
}

/** "Acknowledged by olena 10:15: calling the kitchen". */
export function acknowledgement(alert, now = Date.now()) {
  if (!alert.acknowledged_at) return '';
  const text = interpolate(
    gettext('Acknowledged by %(who)s at %(time)s'),
    { who: alert.acknowledged_by || '?', time: formatWhen(alert.acknowledged_at, now) },
    true,
  );
  return alert.note ? `${text}: ${alert.note}` : text;
}

/**
 * The "Acknowledge" dialog: the alert in words and an optional note. The request is the only effect:
 * the acknowledged alert reaches this board, like every other, through the socket.
 */
export class AcknowledgeDialog {
  constructor(dialog) {
    this.dialog = dialog;
    this.form = dialog.querySelector('form');
    this.note = dialog.querySelector('[name="note"]');
    this.error = dialog.querySelector('[data-role="error"]');
    this.submit = dialog.querySelector('[data-testid="acknowledge-confirm"]');
    this.current = null;
    this.form.addEventListener('submit', (event) => {
      if (event.submitter && event.submitter.value === 'cancel') return; // the dialog closes itself
      event.preventDefault();
      this.send();
    });
  }

  open(alert, order) {
    this.current = alert;
    this.dialog.querySelector('[data-role="title"]').textContent = interpolate(
      gettext('Acknowledge: %(kind)s on order #%(id)s'),
      { kind: alertKindLabel(alert.kind), id: order ? order.id : '?' },
      true,
    );
    this.dialog.querySelector('[data-role="headline"]').textContent = alertHeadline(alert, order);
    this.dialog.querySelector('[data-role="detail"]').textContent = alert.detail || '';
    this.note.value = '';
    this.setError('');
    this.submit.disabled = false;
    this.dialog.showModal();
    this.note.focus();
  }

  async send() {
    const alert = this.current;
    if (!alert) return;
    this.submit.disabled = true;
    this.setError('');
    try {
      await api(`/api/alerts/${encodeURIComponent(alert.id)}/acknowledge/`, {
        method: 'POST',
        body: { note: this.note.value.trim() },
      });
      if (this.current === alert) this.dialog.close('done');
    } catch (error) {
      if (this.current !== alert) return;
      this.setError(error.message);
      this.submit.disabled = false;
    }
  }

  setError(text) {
    this.error.textContent = text;
    this.error.hidden = !text;
  }
}

// --- sound and desktop notifications ------------------------------------------------------------------

const SOUND_KEY = 'liveops.alerts.sound';
const DESKTOP_KEY = 'liveops.alerts.desktop';
const SUMMARISE_OVER = 3; // more new alerts at once than this: one notification that counts them

/**
 * Opt-in sound and desktop notifications for alerts raised while the page is open. Both are off until
 * the operator turns them on; the browser's permission is asked for only from that click, and the
 * choice is remembered in localStorage.
 */
export class AlertNotifier {
  /**
   * @param {object} controls  sound, desktop: toggle buttons (aria-pressed); status: a note element
   * @param {object} options  onOpen(orderId) when a notification is clicked
   */
  constructor({ sound, desktop, status }, { onOpen }) {
    this.buttons = { sound, desktop };
    this.status = status;
    this.onOpen = onOpen;
    this.audio = null;
    this.supported = 'Notification' in window;
    this.sound = store.get(SOUND_KEY) === 'on';
    this.desktop = this.supported && store.get(DESKTOP_KEY) === 'on' && Notification.permission === 'granted';
    sound.addEventListener('click', () => this.toggleSound());
    desktop.addEventListener('click', () => this.toggleDesktop());
    if (!this.supported) {
      desktop.disabled = true;
      desktop.title = gettext('This browser has no desktop notifications.');
    }
    this.render();
  }

  toggleSound() {
    this.sound = !this.sound;
    store.set(SOUND_KEY, this.sound ? 'on' : 'off');
    if (this.sound) this.beep(); // also unlocks audio: browsers allow it after a click
    this.render();
  }

  async toggleDesktop() {
    if (this.desktop) {
      this.desktop = false;
      store.set(DESKTOP_KEY, 'off');
      this.render();
      return;
    }
    let permission = Notification.permission;
    if (permission === 'default') permission = await Notification.requestPermission();
    this.desktop = permission === 'granted';
    store.set(DESKTOP_KEY, this.desktop ? 'on' : 'off');
    const blocked = gettext('Notifications are blocked for this site in the browser settings.');
    this.render(permission === 'denied' ? blocked : '');
  }

  render(note = '') {
    const { sound, desktop } = this.buttons;
    sound.setAttribute('aria-pressed', String(this.sound));
    desktop.setAttribute('aria-pressed', String(this.desktop));
    this.status.textContent = note;
    this.status.hidden = !note;
  }

  /** New alerts (raised after the page loaded), each with its order: one sound, one notification. */
  notify(items) {
    if (!items.length) return;
    if (this.sound) this.beep();
    if (!this.desktop || Notification.permission !== 'granted') return;
    if (items.length <= SUMMARISE_OVER) {
      for (const { alert, order } of items) {
        this.show(`#${order.id}: ${alertKindLabel(alert.kind)}`, alertHeadline(alert, order), order.id, alert.id);
      }
      return;
    }
    const title = interpolate(ngettext('%s new alert', '%s new alerts', items.length), [items.length]);
    const first = items.slice(0, SUMMARISE_OVER).map(({ alert, order }) => `#${order.id} ${alertKindLabel(alert.kind)}`);
    this.show(title, `${first.join(', ')} …`, null, 'summary');
  }

  show(title, body, orderId, tag) {
    try {
      const notification = new Notification(title, { body, tag: `liveops-${tag}` });
      notification.onclick = () => {
        window.focus();
        if (orderId !== null) this.onOpen(orderId);
        notification.close();
      };
    } catch (error) {
      /* some browsers only notify from a service worker: the lane and the sound still work */
    }
  }

  /** Two short tones, made on the spot (no sound file to load). */
  beep() {
    try {
      this.audio = this.audio || new AudioContext();
      if (this.audio.state === 'suspended') this.audio.resume();
      const start = this.audio.currentTime;
      for (const [offset, frequency] of [[0, 880], [0.18, 660]]) {
        const tone = this.audio.createOscillator();
        const gain = this.audio.createGain();
        tone.frequency.value = frequency;
        gain.gain.setValueAtTime(0.0001, start + offset);
        gain.gain.exponentialRampToValueAtTime(0.2, start + offset + 0.02);
        gain.gain.exponentialRampToValueAtTime(0.0001, start + offset + 0.15);
        tone.connect(gain).connect(this.audio.destination);
        tone.start(start + offset);
        tone.stop(start + offset + 0.16);
      }
    } catch (error) {
      /* no audio device: the lane still shows the alert */
    }
  }
}
