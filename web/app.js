// app.js - the meshllm web console: chat with streaming (OpenAI SSE), a small markdown
// renderer of our own (HTML is escaped first, so model output can never inject markup),
// the model picker, per-request settings (including where a request may run), where each
// reply ran, the node's live status and the mesh map.
'use strict';

const $ = (id) => document.getElementById(id);
const state = { history: [], controller: null };

// withRoute: a generation request, which says where it may run (the "Runs on" setting;
// empty = the node's default route).
function headers(withRoute) {
  const h = { 'Content-Type': 'application/json' };
  const key = $('api-key').value.trim();
  if (key) h.Authorization = 'Bearer ' + key;
  const route = withRoute && $('route').value;
  if (route) h['X-Meshllm-Route'] = route;
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
  div.innerHTML = '<div class="role">' + role + '<span class="ran-on"></span></div><div class="body"></div>';
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
      method: 'POST', headers: headers(true), body: JSON.stringify(requestBody()), signal: state.controller.signal,
    });
    if (!res.ok) {
      const err = await res.json().catch(() => ({}));
      throw new Error((err.error && err.error.message) || res.statusText);
    }
    // Where the reply ran: the X-Meshllm-Ran-On header, confirmed by meshllm.ran_on in the
    // last chunk ("local", or peer IDs in the order they served it after a failover).
    const showRanOn = (who) => {
      if (!who) return;
      div.dataset.ranOn = who;
      div.querySelector('.ran-on').textContent = ' - ran on ' + who.split(',').map((x) => x.trim()).filter(Boolean)
        .map((x) => (x === 'local' ? 'this device' : shortIdText(x))).join(', then ');
    };
    showRanOn(res.headers.get('X-Meshllm-Ran-On'));
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
          if (j.meshllm && j.meshllm.ran_on) showRanOn(j.meshllm.ran_on);
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

// The mesh panel, from GET /node/peers. With --p2p and a mesh (its "mesh" object) a map of
// the other members: the models each announces with their load, the RTT, and how they have
// served this node; then the libp2p peers. Without a mesh, a sentence saying why.
function shortIdText(id) {
  id = String(id || '');
  return id.length > 16 ? id.slice(0, 8) + '...' + id.slice(-6) : id;
}
function shortId(id) { return escapeHtml(shortIdText(id)); }
function fixed(x, digits) { return typeof x === 'number' && isFinite(x) ? x.toFixed(digits) : '-'; }
function table(id, head, after) {
  let t = $(id);
  if (!t) {
    t = document.createElement('table');
    t.id = id;
    t.innerHTML = '<thead><tr>' + head.map((h) => '<th>' + h + '</th>').join('') + '</tr></thead><tbody></tbody>';
    after.after(t);
  }
  return t;
}
function dropTable(id) {
  const t = $(id);
  if (t) t.remove();
}
function memberModels(p) {
  if (!p.announced) return 'not announced yet';
  const ms = Array.isArray(p.models) ? p.models : [];
  if (!ms.length) return 'no models (lite node)';
  return ms.map((m) => escapeHtml(String(m.name)) + ' ' + (m.active || 0) + '/' + (m.slots || 0) + ', ' +
    (m.queued || 0) + ', ' + fixed(m.tokens_per_s, 0)).join('<br>');
}
function memberRow(p) {
  return '<tr><td title="' + escapeHtml(String(p.id)) + '">' + shortId(p.id) + (p.own ? ' (own)' : '') +
    (p.connected ? '' : ' (offline)') + '</td><td>' + memberModels(p) + '</td><td>' +
    (typeof p.rtt_ms === 'number' ? p.rtt_ms.toFixed(1) + ' ms' : '-') + '</td><td>' +
    (p.ok || 0) + '/' + (p.failed || 0) + '/' + (p.busy || 0) + (p.lies ? ', ' + p.lies + ' lies' : '') +
    (p.inflight ? ', ' + p.inflight + ' now' : '') + '</td></tr>';
}
function renderMeshMap(j) {
  const note = $('mesh-map-note');
  const mesh = j.mesh;
  const route = j.route || 'local';
  $('route-default').textContent = "node's default (" + route + ')';
  if (!mesh || typeof mesh !== 'object') {
    note.textContent = j.enabled ? 'No mesh map: this node runs peer-to-peer but not the mesh yet, so requests run here.'
      : 'No mesh map: peer-to-peer is off on this node (start it with meshllm serve --p2p), so requests run here.';
    dropTable('mesh-map');
    return note;
  }
  if (!mesh.member) {
    note.textContent = 'This node is not a member of a mesh yet: create one (meshllm mesh create) or join with an invite.';
    dropTable('mesh-map');
    return note;
  }
  const members = (Array.isArray(mesh.peers) ? mesh.peers : []).filter((p) => p && p.member);
  note.textContent = 'Mesh ' + shortIdText(mesh.id) + ': ' + members.length + ' other member' + (members.length === 1 ? '' : 's') +
    ', ' + members.filter((p) => p.connected).length + ' connected. Default route: ' + route + '.';
  const mt = table('mesh-map', ['member', 'models (active/slots, queue, tok/s)', 'RTT', 'served ok/failed/busy'], note);
  mt.tBodies[0].innerHTML = members.map(memberRow).join('') || '<tr><td colspan="4">no other member yet</td></tr>';
  return mt;
}
// Each split model's route (the "routes" of /node/peers): its stages in layer order with
// their layers, peer and RTT, or the layers no member announces.
function routeRows(r) {
  const name = escapeHtml(String(r.model));
  const stages = Array.isArray(r.stages) ? r.stages : [];
  if (!r.covered) {
    const miss = (Array.isArray(r.missing) ? r.missing : []).map((g) => escapeHtml(String(g.layers)));
    const why = miss.length ? 'no route: layers ' + miss.join(', ') + ' missing (start a node with --layers ' + miss[0] + ')'
      : 'no route: ' + escapeHtml(String(r.message || 'not planned yet'));
    return '<tr class="no-route" data-model="' + name + '"><td>' + name + '</td><td colspan="5">' + why + '</td></tr>';
  }
  return stages.map((s, i) => '<tr data-model="' + name + '" data-layers="' + escapeHtml(String(s.layers)) + '"><td>' +
    (i ? '' : name) + '</td><td>' + (i + 1) + '</td><td>' + escapeHtml(String(s.layers)) + '</td><td' +
    (s.local ? '>this node' : ' title="' + escapeHtml(String(s.peer)) + '">' + shortId(s.peer)) + '</td><td>' +
    (s.local ? '-' : typeof s.rtt_ms === 'number' ? s.rtt_ms.toFixed(1) + ' ms' : '-') + '</td><td>' +
    (typeof s.slots === 'number' ? (s.active || 0) + '/' + s.slots + ', ' + (s.queued || 0) : '-') + '</td></tr>').join('');
}
function renderRoutes(j, after) {
  const routes = Array.isArray(j.routes) ? j.routes.filter((r) => r && r.split) : [];
  if (!routes.length) { dropTable('route-map'); return after; }
  const t = table('route-map', ['split model', 'stage', 'layers', 'peer', 'RTT', 'load (active/slots, queue)'], after);
  t.tBodies[0].innerHTML = routes.map(routeRows).join('');
  return t;
}
async function refreshPeers() {
  try {
    const res = await fetch('/node/peers', { headers: headers() });
    if (!res.ok) return;
    const j = await res.json();
    const last = renderRoutes(j, renderMeshMap(j));
    if (!j.enabled) { // p2p off: the note says it all
      $('mesh-body').textContent = 'This node only.';
      dropTable('peer-table');
      return;
    }
    const peers = j.peers || [];
    const n = peers.filter((p) => p.connected).length;
    $('mesh-body').textContent = 'Peer ID ' + j.peer_id + ' - ' + n + ' connected, ' + peers.length + ' known.';
    const t = table('peer-table', ['peer', 'found by', 'state', 'latency', 'address'], last);
    t.tBodies[0].innerHTML = peers.map((p) => '<tr><td title="' + escapeHtml(p.id) + '">' + shortId(p.id) +
      '</td><td>' + escapeHtml(String(p.how || '-')) + '</td><td>' + (p.connected ? 'connected' : 'known') + '</td><td>' +
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
