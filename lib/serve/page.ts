/**
 * The search page `GET /` serves: one self-contained HTML document (inline style and script,
 * no external assets) where a person types a query and sees the retrieved items with their
 * scores. It asks `GET /v1/info` which fields the query tower reads and offers one input per
 * field; items are rendered generically, every field of a record as a name and a value.
 * Everything from the server is inserted as text (never as HTML), and the Content-Security-
 * Policy allows only this script (by its hash) and requests to the same origin.
 */
import { createHash } from 'node:crypto';

const STYLE = `
  :root { font-family: system-ui, sans-serif; color: #1d232a; background: #f6f7f9; }
  body { max-width: 56rem; margin: 2rem auto; padding: 0 1rem; }
  h1 { font-size: 1.4rem; margin: 0 0 .25rem; }
  .muted { color: #5c6670; font-size: .9rem; }
  form { display: flex; flex-wrap: wrap; gap: .5rem; align-items: end; margin: 1rem 0; }
  label { display: flex; flex-direction: column; font-size: .85rem; gap: .2rem; }
  input, select, button { font: inherit; padding: .45rem .6rem; border: 1px solid #b9c1c9; border-radius: 6px; }
  #fields { display: contents; }
  input.query { min-width: 22rem; }
  button { background: #1f5fbf; color: white; border-color: #1f5fbf; cursor: pointer; }
  ol { padding-left: 1.5rem; }
  li.item { background: white; border: 1px solid #dde2e7; border-radius: 8px; padding: .6rem .8rem; margin: .5rem 0; }
  .scores { font-variant-numeric: tabular-nums; font-size: .85rem; color: #3b4650; }
  .scores b { color: #1d232a; }
  dl { display: grid; grid-template-columns: max-content 1fr; gap: .15rem .8rem; margin: .4rem 0 0; font-size: .9rem; }
  dt { color: #5c6670; }
  dd { margin: 0; overflow-wrap: anywhere; }
  .error { color: #a11d1d; }
  [hidden] { display: none !important; }
`;

const SCRIPT = `
'use strict';
const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
};
let info = { queryFields: [], tasks: [] };

function headers() {
  const h = { 'content-type': 'application/json' };
  const token = sessionStorage.getItem('ebrix-token');
  if (token) h.authorization = 'Bearer ' + token;
  return h;
}

function showError(message) {
  $('status').textContent = message;
  $('status').className = 'error';
}

async function call(path, init) {
  const response = await fetch(path, { ...init, headers: headers() });
  if (response.status === 401) {
    $('token-field').hidden = false;
    throw new Error('This server needs a token: enter it and search again.');
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error ? body.error.code + ': ' + body.error.message : 'HTTP ' + response.status);
  return body;
}

function describeModel() {
  $('model').textContent = info.model
    ? info.model.name + ' · version ' + info.model.version + ' · ' + (info.index ? info.index.size + ' items' : 'no index')
    : 'no model: this server searches by vector only';
  const task = $('task');
  task.replaceChildren(el('option', { value: '', textContent: 'default' }));
  for (const t of info.tasks) task.append(el('option', { value: t, textContent: t }));
  $('task-field').hidden = info.tasks.length === 0;
}

function buildFields() {
  const fields = $('fields');
  fields.replaceChildren();
  const queryFields = info.queryFields.length > 0 ? info.queryFields : [{ field: 'text', kind: 'text' }];
  queryFields.forEach((f, i) => {
    const input = el('input', { name: f.field, className: f.kind === 'text' ? 'query' : '', autocomplete: 'off' });
    input.dataset.kind = f.kind;
    if (f.kind === 'dense') { input.type = 'number'; input.step = 'any'; }
    if (f.kind === 'text') input.placeholder = 'Type a query';
    if (i === 0) input.autofocus = true;
    fields.append(el('label', {}, f.field, input));
  });
}

function render(result) {
  const list = $('results');
  list.replaceChildren();
  for (const item of result.items) {
    const scores = el('div', { className: 'scores' },
      'id ', el('b', { textContent: item.id }),
      ' · score ', el('b', { textContent: Number(item.score).toFixed(4) }),
      ' · tower score ' + Number(item.towerScore).toFixed(4));
    const li = el('li', { className: 'item' }, scores);
    if (item.record && typeof item.record === 'object') {
      const dl = el('dl');
      for (const [key, value] of Object.entries(item.record)) {
        dl.append(el('dt', { textContent: key }), el('dd', { textContent: typeof value === 'string' ? value : JSON.stringify(value) }));
      }
      li.append(dl);
    }
    list.append(li);
  }
  const t = result.timings;
  $('status').className = 'muted';
  $('status').textContent = result.items.length + ' items · embed ' + t.embedMs.toFixed(2) + ' ms · search ' + t.searchMs.toFixed(2) +
    ' ms · rank ' + t.rankMs.toFixed(2) + ' ms · total ' + t.totalMs.toFixed(2) + ' ms';
}

async function search(event) {
  event.preventDefault();
  const token = $('token').value.trim();
  if (token) sessionStorage.setItem('ebrix-token', token);
  const query = {};
  for (const input of $('fields').querySelectorAll('input')) {
    if (input.dataset.kind === 'dense') { if (input.value !== '') query[input.name] = Number(input.value); }
    else query[input.name] = input.value;
  }
  const body = { query, k: Number($('k').value) };
  if ($('task').value) body.task = $('task').value;
  $('status').className = 'muted';
  $('status').textContent = 'Searching…';
  try {
    render(await call('/v1/search', { method: 'POST', body: JSON.stringify(body) }));
    // The first load may have lacked the token: describe the model now that it works.
    if (!info.model) {
      info = await call('/v1/info', { method: 'GET' });
      describeModel();
    }
  } catch (error) {
    showError(error.message);
  }
}

async function start() {
  $('form').addEventListener('submit', search);
  try {
    info = await call('/v1/info', { method: 'GET' });
    describeModel();
  } catch (error) {
    $('model').textContent = '';
    showError(error.message);
  }
  buildFields();
}
start();
`;

const HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ebrix search</title>
<style>${STYLE}</style>
</head>
<body>
<h1>ebrix search</h1>
<div id="model" class="muted">loading…</div>
<form id="form">
  <span id="fields"></span>
  <label id="task-field" hidden>task <select id="task"></select></label>
  <label>k <select id="k"><option>5</option><option selected>10</option><option>20</option><option>50</option></select></label>
  <label id="token-field" hidden>token <input id="token" type="password" autocomplete="off"></label>
  <button type="submit">Search</button>
</form>
<div id="status" class="muted"></div>
<ol id="results"></ol>
<script>${SCRIPT}</script>
</body>
</html>
`;

/** The page and the Content-Security-Policy that goes with it. */
export function searchPage(): { html: string; contentSecurityPolicy: string } {
  const scriptHash = createHash('sha256').update(SCRIPT).digest('base64');
  const styleHash = createHash('sha256').update(STYLE).digest('base64');
  return {
    html: HTML,
    contentSecurityPolicy:
      `default-src 'none'; script-src 'sha256-${scriptHash}'; style-src 'sha256-${styleHash}'; ` +
      `connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
  };
}
