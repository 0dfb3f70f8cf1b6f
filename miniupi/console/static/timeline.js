// The timeline panel: one payment's two-phase commit as the gateways saw it, a lane per node:
// recorded, each prepare sent, each bank's vote, the decision and its durable write, each
// acknowledgement, and any resend, each at its time after the record.
import {amount, el, stateKind} from './feed.js';

const panel = document.getElementById('timeline');
const title = panel.querySelector('.title');
const note = panel.querySelector('.note');
const head = panel.querySelector('thead tr');
const body = panel.querySelector('tbody');
let shown = null;  // {txn_id, v}: the payment drawn, and the version of it drawn
let loading = null;

const LABELS = {
  recorded: () => 'recorded',
  prepare: () => 'prepare sent',
  vote: (s) => `voted ${s.detail}`,
  decided: (s) => `decided ${s.detail}`,
  durable: (s) => `${s.detail} durable`,
  ack: (s) => `acknowledged ${s.detail}`,
  resent: (s) => `resent ${s.detail}`,
};

function tone(s) {
  if (s.step === 'vote') return s.detail === 'yes' ? 'good' : 'bad';
  if (s.step === 'durable' || s.step === 'decided') return stateKind(s.detail);
  if (s.step === 'resent') return 'busy';
  return '';
}

function ms(seconds) {
  return `+${(seconds * 1000).toFixed(1)} ms`;
}

function draw(p) {
  const t0 = (p.steps.find((s) => s.step === 'recorded') ?? {at: p.created_at}).at;
  // The gateway's lane, then a lane per bank in the order they were first named (the payer's first).
  const banks = [...new Set(p.steps.filter((s) => s.bank).map((s) => s.bank))];
  head.replaceChildren(el('th', {textContent: 'after record'}), el('th', {textContent: 'gateway'}),
    ...banks.map((b) => el('th', {textContent: b})));
  body.replaceChildren(...p.steps.map((s) => {
    const lanes = ['', ...banks].map((b) => el('td', {className: 'lane'}));
    lanes[s.bank ? banks.indexOf(s.bank) + 1 : 0].append(
      el('span', {className: `step ${tone(s)}`, textContent: (LABELS[s.step] ?? (() => s.step))(s)}));
    const tr = el('tr', {}, el('td', {className: 'at', textContent: ms(s.at - t0)}), ...lanes);
    tr.dataset.step = s.step;
    tr.dataset.bank = s.bank;
    return tr;
  }));
  title.replaceChildren(...el('span', {},
    el('code', {textContent: p.txn_id, className: 'id'}),
    ` ${p.from} → ${p.to}, ${amount(p.amount_minor)} ${p.currency} (${p.kind}) `,
    el('span', {className: `badge ${stateKind(p.state)}`, textContent: p.state}),
    p.reason ? el('span', {className: 'reason', textContent: ` ${p.reason}`}) : null).childNodes);
}

async function load(row) {
  const wanted = {txn_id: row.txn_id, v: row.v};
  loading = wanted;
  let reply;
  try {
    reply = await fetch(`/api/payments/${encodeURIComponent(row.txn_id)}`, {credentials: 'same-origin'});
  } catch (e) {
    reply = null;
  }
  if (loading !== wanted) return;  // another payment was clicked meanwhile
  loading = null;
  if (reply === null || !reply.ok) {
    const why = reply === null ? 'the console did not answer' : (await reply.json()).error;
    note.textContent = `${row.txn_id}: ${why}`;
    note.hidden = false;
    return;
  }
  const p = await reply.json();
  note.hidden = true;
  shown = {txn_id: p.txn_id, v: p.v};
  draw(p);
}

// Show this payment's timeline (a row of the payments table).
export function open(row) {
  panel.hidden = false;
  shown = null;
  body.replaceChildren();
  title.textContent = row.txn_id;
  load(row);
}

// The table changed: draw the open payment again if it did (undefined: it left the table).
export function follow(row) {
  if (panel.hidden || row === undefined || loading !== null) return;
  if (shown === null || shown.txn_id !== row.txn_id || shown.v !== row.v) load(row);
}

panel.querySelector('.close').addEventListener('click', () => {
  panel.hidden = true;
  shown = null;
});
