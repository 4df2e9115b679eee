// app.js - the meshllm web console: chat with streaming (OpenAI SSE), a small markdown
// renderer of our own (HTML is escaped first, so model output can never inject markup),
// the model picker, per-request settings and the node's live status.
'use strict';

const $ = (id) => document.getElementById(id);
const state = { history: [], controller: null };

function headers() {
  const h = { 'Content-Type': 'application/json' };
  const key = $('api-key').value.trim();
  if (key) h.Authorization = 'Bearer ' + key;
  return h;
}

// ---- markdown ------------------------------------------------------------------------
function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

function inline(s) {
  // s is already escaped
  s = s.replace(/`([^`\n]+)`/g, '<code>$1</code>');
  s = s.replace(/\*\*([^*\n]+)\*\*/g, '<strong>$1</strong>');
  s = s.replace(/(^|[^*])\*([^*\n]+)\*/g, '$1<em>$2</em>');
  s = s.replace(/\[([^\]\n]+)\]\((https?:\/\/[^)\s]+)\)/g, '<a href="$2" target="_blank" rel="noopener noreferrer">$1</a>');
  return s;
}

function renderMarkdown(src) {
  const out = [];
  const parts = src.split(/```/);
  parts.forEach((part, i) => {
    if (i % 2 === 1) { // code fence (an unclosed one while streaming is shown as code too)
      const nl = part.indexOf('\n');
      const body = nl >= 0 ? part.slice(nl + 1) : part;
      out.push('<pre><code>' + escapeHtml(body) + '</code></pre>');
      return;
    }
    const lines = escapeHtml(part).split('\n');
    let list = null, para = [];
    const flushPara = () => { if (para.length) { out.push('<p>' + inline(para.join('<br>')) + '</p>'); para = []; } };
    const flushList = () => { if (list) { out.push('<' + list.tag + '>' + list.items.map((x) => '<li>' + inline(x) + '</li>').join('') + '</' + list.tag + '>'); list = null; } };
    for (const line of lines) {
      let m;
      if ((m = line.match(/^(#{1,4})\s+(.*)$/))) {
        flushPara(); flushList();
        const n = m[1].length + 2;
        out.push('<h' + n + '>' + inline(m[2]) + '</h' + n + '>');
      } else if ((m = line.match(/^\s*[-*]\s+(.*)$/)) || (m = line.match(/^\s*\d+\.\s+(.*)$/))) {
        flushPara();
        const tag = /^\s*\d/.test(line) ? 'ol' : 'ul';
        if (!list || list.tag !== tag) { flushList(); list = { tag, items: [] }; }
        list.items.push(m[1]);
      } else if (line.trim() === '') {
        flushPara(); flushList();
      } else {
        flushList();
        para.push(line);
      }
    }
    flushPara(); flushList();
  });
  return out.join('');
}

// ---- chat ----------------------------------------------------------------------------
function addMessage(role, text) {
  const div = document.createElement('div');
  div.className = 'msg ' + role;
  div.innerHTML = '<div class="role">' + role + '</div><div class="body"></div>';
  div.querySelector('.body').innerHTML = renderMarkdown(text);
  $('messages').appendChild(div);
  $('messages').scrollTop = $('messages').scrollHeight;
  return div;
}

function requestBody() {
  const msgs = [];
  const sys = $('system').value.trim();
  if (sys) msgs.push({ role: 'system', content: sys });
  msgs.push(...state.history);
  const body = {
    model: $('model').value,
    messages: msgs,
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number($('temperature').value),
    top_p: Number($('top_p').value),
    max_tokens: Number($('max_tokens').value) || undefined,
  };
  if ($('seed').value !== '') body.seed = Number($('seed').value);
  const stop = $('stop-seq').value;
  if (stop) body.stop = stop.replace(/\\n/g, '\n');
  return body;
}

async function send(text) {
  state.history.push({ role: 'user', content: text });
  addMessage('user', text);
  const div = addMessage('assistant', '');
  const body = div.querySelector('.body');
  div.dataset.done = '0';
  $('send').disabled = true;
  $('stop').disabled = false;
  state.controller = new AbortController();
  let reply = '', usage = null, n = 0;
  const t0 = performance.now();
  try {
    const res = await fetch('/v1/chat/completions', {
      method: 'POST', headers: headers(), body: JSON.stringify(requestBody()), signal: state.controller.signal,
    });
    if (!res.ok) {
      const err = await res.json().catch(() => ({}));
      throw new Error((err.error && err.error.message) || res.statusText);
    }
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, i);
        buf = buf.slice(i + 2);
        for (const line of event.split('\n')) {
          if (!line.startsWith('data: ')) continue;
          const data = line.slice(6);
          if (data === '[DONE]') continue;
          const j = JSON.parse(data);
          if (j.error) throw new Error(j.error.message);
          if (j.usage) usage = j.usage;
          const d = j.choices && j.choices[0] && j.choices[0].delta;
          if (d && d.content) {
            reply += d.content;
            n++;
            body.innerHTML = renderMarkdown(reply);
            div.dataset.chunks = String(n);
            $('messages').scrollTop = $('messages').scrollHeight;
          }
        }
      }
    }
    state.history.push({ role: 'assistant', content: reply });
    const s = (performance.now() - t0) / 1000;
    const toks = usage ? usage.completion_tokens : n;
    $('gen-stats').textContent = toks + ' tokens in ' + s.toFixed(2) + ' s (' + (toks / s).toFixed(1) + ' tok/s)';
  } catch (e) {
    if (e.name !== 'AbortError') {
      div.classList.add('error');
      body.textContent = 'Error: ' + e.message;
      state.history.pop();
    } else {
      state.history.push({ role: 'assistant', content: reply });
    }
  } finally {
    div.dataset.done = '1';
    $('send').disabled = false;
    $('stop').disabled = true;
    state.controller = null;
  }
}

// ---- models and status ---------------------------------------------------------------
async function loadModels() {
  try {
    const res = await fetch('/v1/models', { headers: headers() });
    const j = await res.json();
    const sel = $('model');
    const cur = sel.value;
    sel.innerHTML = '';
    for (const m of j.data || []) {
      const o = document.createElement('option');
      o.value = o.textContent = m.id;
      sel.appendChild(o);
    }
    if (cur) sel.value = cur;
  } catch (e) { /* shown by the status dot */ }
}

function fmtBytes(n) {
  const u = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + ' ' + u[i];
}

async function refreshStatus() {
  try {
    const res = await fetch('/node/status', { headers: headers() });
    if (!res.ok) throw new Error(res.statusText);
    const j = await res.json();
    $('conn').classList.add('ok');
    $('status').innerHTML = '<dt>uptime</dt><dd>' + j.uptime_s + ' s</dd>' +
      '<dt>memory</dt><dd>' + fmtBytes(j.rss_bytes) + '</dd>' +
      '<dt>tokens/s</dt><dd>' + j.tokens_per_s.toFixed(1) + '</dd>' +
      '<dt>active</dt><dd>' + j.active + '</dd><dt>queued</dt><dd>' + j.queued + '</dd>';
    $('model-table').tBodies[0].innerHTML = j.models.map((m) => '<tr><td>' + escapeHtml(m.name) + '</td><td>' + m.state +
      '</td><td>' + (m.tokens_per_s || 0).toFixed(1) + '</td><td>' + (m.active || 0) + '/' + (m.slots || 0) +
      '</td><td>' + (m.queued || 0) + '</td></tr>').join('');
    if ($('model').options.length !== j.models.filter((m) => m.state !== 'failed').length) loadModels();
  } catch (e) {
    $('conn').classList.remove('ok');
  }
}

// The mesh panel: this node's peers from GET /node/peers (meshllm serve --p2p).
async function refreshPeers() {
  try {
    const res = await fetch('/node/peers', { headers: headers() });
    if (!res.ok) return;
    const j = await res.json();
    if (!j.enabled) return; // keeps the "this node only" text
    const peers = j.peers || [];
    const n = peers.filter((p) => p.connected).length;
    $('mesh-body').textContent = 'Peer ID ' + j.peer_id + ' - ' + n + ' connected, ' + peers.length + ' known.';
    let t = $('peer-table');
    if (!t) {
      t = document.createElement('table');
      t.id = 'peer-table';
      t.innerHTML = '<thead><tr><th>peer</th><th>found by</th><th>state</th><th>latency</th><th>address</th></tr></thead><tbody></tbody>';
      $('mesh-body').after(t);
    }
    t.tBodies[0].innerHTML = peers.map((p) => '<tr><td title="' + escapeHtml(p.id) + '">' +
      escapeHtml(p.id.slice(0, 8) + '...' + p.id.slice(-6)) + '</td><td>' + escapeHtml(p.how) + '</td><td>' +
      (p.connected ? 'connected' : 'known') + '</td><td>' +
      (typeof p.latency_ms === 'number' ? p.latency_ms.toFixed(2) + ' ms' : '-') + '</td><td>' +
      escapeHtml((p.addrs && p.addrs[0]) || '-') + '</td></tr>').join('');
  } catch (e) { /* the status dot shows connection problems */ }
}

$('composer').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = $('input').value.trim();
  if (!text || state.controller) return;
  $('input').value = '';
  send(text);
});
$('input').addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey) { ev.preventDefault(); $('composer').requestSubmit(); }
});
$('stop').addEventListener('click', () => state.controller && state.controller.abort());
$('new-chat').addEventListener('click', () => { state.history = []; $('messages').innerHTML = ''; });
$('api-key').addEventListener('change', () => { loadModels(); refreshStatus(); });

loadModels();
refreshStatus();
refreshPeers();
setInterval(refreshStatus, 2000);
setInterval(refreshPeers, 3000);
