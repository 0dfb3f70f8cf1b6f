// The nodes panel: every program with its state, pid, address and health, and its controls.
import {on, change, confirmed, el} from './feed.js';

const panel = document.getElementById('nodes');
const body = panel.querySelector('tbody');
const note = panel.querySelector('.note');
const pending = new Map();  // node -> the action under way
const SHOWN_MS = 8000;  // how long a control's success stays said; a failure stays until the next one
let last = null;

const ACTIONS = [
  ['stop', 'Stop', (n) => n.state === 'RUNNING' || n.state === 'STARTING' || n.state === 'BACKOFF'],
  ['start', 'Start', (n) => n.state !== 'RUNNING' && n.state !== 'STARTING'],
  ['restart', 'Restart', (n) => n.state === 'RUNNING'],
];
const QUESTIONS = {
  stop: (name) => `Stop ${name}? Payments through it abort until it is started again.`,
  start: (name) => `Start ${name}?`,
  restart: (name) => `Restart ${name}? Payments in flight through it wait or abort while it restarts.`,
};

function badge(text, kind) {
  return el('span', {className: `badge ${kind}`, textContent: text});
}

function stateKind(state) {
  if (state === 'RUNNING') return 'good';
  if (state === 'STOPPED' || state === 'UNSUPERVISED') return 'idle';
  if (state === 'STARTING' || state === 'STOPPING' || state === 'BACKOFF') return 'busy';
  return 'bad';
}

function row(n) {
  const actions = el('td', {className: 'actions'});
  if (pending.has(n.name)) {
    actions.append(el('span', {className: 'working', textContent: `${pending.get(n.name)}…`}));
  } else if (n.controllable) {
    for (const [action, label, allowed] of ACTIONS) {
      actions.append(el('button', {
        type: 'button', textContent: label, className: action, disabled: !allowed(n),
        onclick: () => act(n.name, action),
      }));
    }
  }
  const health = n.health === null ? el('span', {className: 'none', textContent: '—'})
    : badge(n.health, n.health === 'SERVING' ? 'good' : 'bad');
  const tr = el('tr', {},
    el('td', {className: 'name'}, n.name, el('small', {textContent: n.role === n.name ? '' : n.role})),
    el('td', {className: 'state'}, badge(n.state, stateKind(n.state))),
    el('td', {className: 'pid', textContent: n.pid ?? '—'}),
    el('td', {className: 'address', textContent: n.address}),
    el('td', {className: 'health'}, health),
    actions);
  tr.dataset.node = n.name;
  return tr;
}

function render() {
  if (last === null) return;
  body.replaceChildren(...last.nodes.map(row));
  if (last.supervisor) say(`${last.supervisor}. Health is shown; the controls need the supervisor.`, 'bad');
}

function say(text, kind) {
  note.textContent = text;
  note.className = `note ${kind}`;
  note.hidden = !text;
}

async function act(name, action) {
  if (!await confirmed(QUESTIONS[action](name), action[0].toUpperCase() + action.slice(1))) return;
  pending.set(name, {stop: 'stopping', start: 'starting', restart: 'restarting'}[action]);
  render();
  const answer = await change(`/api/nodes/${encodeURIComponent(name)}/${action}`);
  pending.delete(name);
  const text = answer.error ?? answer.message;
  say(text, answer.error ? 'bad' : 'good');
  if (!answer.error) setTimeout(() => { if (note.textContent === text) say('', 'good'); }, SHOWN_MS);
  render();
}

on('nodes', (data) => {
  last = data;
  render();
});
