// The payments panel: every gateway's recent payments, newest first, as they happen; a click opens
// that payment's timeline (timeline.js).
import {amount, el, on, stateKind} from './feed.js';
import {follow, open} from './timeline.js';

const panel = document.getElementById('payments');
const body = panel.querySelector('tbody');
const note = panel.querySelector('.note');
const empty = panel.querySelector('.empty');
const rows = new Map();  // txn_id -> the payment's row, as the console sent it last
const drawn = new Map();  // txn_id -> {v, tr}: a row drawn is drawn again only when it changed
let stale = false;  // changed while the tab was hidden: drawn when it shows again
let lastDrawn = 0;  // performance.now() of the last drawing
let pending = null;  // the drawing put off, if any
// Under load every row is new at each event, twice a second: the table is drawn at most once a
// second then (a change after a quiet second is drawn at once), which halves what watching costs.
const DRAW_EVERY_MS = 1000;

// The console's order too (payments.py newest_first): newest record first, the id breaking ties.
function newestFirst(a, b) {
  return b.created_at - a.created_at || (a.txn_id < b.txn_id ? 1 : a.txn_id > b.txn_id ? -1 : 0);
}

// Unix seconds as the local time of day, to the millisecond.
function clock(unix) {
  const d = new Date(unix * 1000);
  const two = (n) => String(n).padStart(2, '0');
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

function row(p) {
  const tr = el('tr', {onclick: () => select(p.txn_id)},
    el('td', {className: 'time', textContent: clock(p.created_at)}),
    el('td', {className: 'id', textContent: p.txn_id.slice(0, 8), title: p.txn_id}),
    el('td', {className: 'from', textContent: p.from}),
    el('td', {className: 'to', textContent: p.to}),
    el('td', {className: 'amount', textContent: `${amount(p.amount_minor)} ${p.currency}`}),
    el('td', {className: 'kind', textContent: p.kind}),
    el('td', {className: 'state'}, el('span', {className: `badge ${stateKind(p.state)}`, textContent: p.state})),
    el('td', {className: 'reason', textContent: p.reason}));
  tr.dataset.txn = p.txn_id;
  tr.classList.toggle('selected', p.txn_id === selected);
  return tr;
}

let selected = null;

// Mark the payment whose timeline is open (null: none), and open it.
function select(txnId) {
  selected = txnId;
  for (const {tr} of drawn.values()) tr.classList.toggle('selected', tr.dataset.txn === txnId);
  if (txnId !== null) open(rows.get(txnId));
}

document.querySelector('#timeline .close').addEventListener('click', () => select(null));

function draw() {
  stale = false;
  pending = null;
  lastDrawn = performance.now();
  const shown = [...rows.values()].sort(newestFirst);
  const trs = shown.map((p) => {
    const known = drawn.get(p.txn_id);
    if (known !== undefined && known.v === p.v) return known.tr;
    const tr = row(p);
    drawn.set(p.txn_id, {v: p.v, tr});
    return tr;
  });
  for (const txnId of drawn.keys()) if (!rows.has(txnId)) drawn.delete(txnId);
  body.replaceChildren(...trs);
  empty.hidden = shown.length > 0;
}

on('payments', (data, first) => {
  if (first || data.whole) rows.clear();
  for (const p of data.payments) rows.set(p.txn_id, p);
  const byAge = [...rows.values()].sort(newestFirst);
  for (const p of byAge.slice(data.keep)) rows.delete(p.txn_id);  // the console keeps as many
  note.textContent = data.note ?? '';
  note.hidden = !data.note;
  if (document.hidden) stale = true;  // a tab nobody looks at is spared the drawing
  else if (pending === null) pending = setTimeout(draw, Math.max(0, lastDrawn + DRAW_EVERY_MS - performance.now()));
  if (selected !== null) follow(rows.get(selected));
});

document.addEventListener('visibilitychange', () => {
  if (!document.hidden && stale) draw();
});
