// The page's core: the live feed, changes sent with the page's CSRF token, and confirmations.
// A panel registers for the feed's event of its name with on(); main.js imports every panel, then connects.

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const handlers = new Map();

// handler(data, first): first is true for the first event of this name since the feed (re)connected,
// which carries the whole state (a chart's history, say) rather than what changed.
export function on(event, handler) {
  handlers.set(event, handler);
}

export function connect() {
  const live = document.getElementById('live');
  const seen = new Set();
  const source = new EventSource('/api/feed');
  for (const [event, handler] of handlers) {
    source.addEventListener(event, (e) => {
      handler(JSON.parse(e.data), !seen.has(event));
      seen.add(event);
    });
  }
  source.onopen = () => {
    seen.clear();
    live.textContent = 'live';
    live.className = 'live on';
  };
  source.onerror = () => {
    const closed = source.readyState === EventSource.CLOSED;
    live.textContent = closed ? 'signed out: reload the page' : 'reconnecting';
    live.className = 'live off';
  };
}

// POST a change; resolves to the console's JSON answer ({message} or {error}).
export async function change(path) {
  let reply;
  try {
    reply = await fetch(path, {method: 'POST', headers: {'X-CSRF-Token': csrf}, credentials: 'same-origin'});
  } catch (e) {
    return {error: `the console did not answer (${e.message})`};
  }
  try {
    const body = await reply.json();
    return reply.ok || body.error ? body : {error: `${reply.status} ${reply.statusText}`};
  } catch {
    return {error: `${reply.status} ${reply.statusText}`};
  }
}

// Ask before acting; resolves to true only when the operator confirms.
export function confirmed(question, action) {
  const dialog = document.getElementById('confirm');
  dialog.querySelector('.question').textContent = question;
  dialog.querySelector('.ok').textContent = action;
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), {once: true});
  });
}

// A DOM element: el('td', {className: 'pid'}, 'text', child, ...).
export function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}
