// The audit panel: run the audit on demand, and show each invariant with its verdict.
import {change, el} from './feed.js';

const panel = document.getElementById('audit');
const button = panel.querySelector('#run-audit');
const summary = panel.querySelector('.summary');
const list = panel.querySelector('.invariants');

// Minor units as a decimal string, without floating point: money is never a float here.
function amount(minor) {
  const digits = String(Math.abs(minor)).padStart(3, '0');
  return `${minor < 0 ? '-' : ''}${digits.slice(0, -2)}.${digits.slice(-2)}`;
}

function show(report) {
  summary.hidden = false;
  if (report.error) {
    summary.className = 'summary bad';
    summary.textContent = `The audit could not run: ${report.error}`;
    list.replaceChildren();
    return;
  }
  summary.className = `summary ${report.ok ? 'good' : 'bad'}`;
  summary.textContent = `${report.ok ? 'Every invariant holds' : `${report.violations.length} violations`}: `
    + `${report.banks} banks, ${report.accounts} accounts, total ${amount(report.total_minor)} `
    + `(issued ${amount(report.issued_minor)}); ${report.committed} committed, ${report.aborted} aborted.`;
  list.replaceChildren(...report.invariants.map((v) => {
    const item = el('li', {className: v.holds ? 'holds' : 'fails'},
      el('span', {className: 'verdict', textContent: v.holds ? '✓ holds' : '✗ broken'}),
      el('strong', {className: 'name', textContent: v.name}),
      el('span', {className: 'means', textContent: v.means}));
    item.dataset.invariant = v.name;
    if (!v.holds) item.append(el('ul', {}, ...v.violations.slice(0, 20).map((line) => el('li', {textContent: line}))));
    return item;
  }));
}

button.addEventListener('click', async () => {
  button.disabled = true;
  button.textContent = 'Auditing…';
  show(await change('/api/audit'));
  button.disabled = false;
  button.textContent = 'Run the audit again';
});
