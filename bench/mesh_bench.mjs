// mesh_bench.mjs - the measuring client of bench/mesh_bench.sh (plain fetch, SSE parsed here).
// Each command prints one JSON line.
//   stream URL MODEL N                    greedy completion of N tokens, streamed: ttft_ms,
//                                         decode tokens/s after the first token, ran_on
//   failover URL MODEL N AFTER PIDS_JSON  as stream, and SIGKILL the serving peer (pid from
//                                         PIDS_JSON {peer id: pid}) after AFTER pieces: the
//                                         longest gap between pieces after the kill, ran_on
//   chat URL MODEL TURNS TAG              one conversation (TAG makes it unique) of TURNS turns: ttft_ms,
//                                         prompt and cached tokens, ran_on
//   median JSON_ARRAY                     median of numbers
const [cmd, ...args] = process.argv.slice(2);
const PROMPT = 'Once upon a time, in a small village by the sea, there lived a fisherman';
const now = () => Number(process.hrtime.bigint()) / 1e6;

// POSTs body to URL+path with stream:true; calls onEvent(json, t_ms) per SSE event.
async function sse(url, path, body, onEvent) {
  const t0 = now();
  const r = await fetch(url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  const dec = new TextDecoder();
  let buf = '';
  for await (const part of r.body) {
    buf += dec.decode(part, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const line = ev.split('\n').find((l) => l.startsWith('data: '));
      if (!line || line === 'data: [DONE]') continue;
      onEvent(JSON.parse(line.slice(6)), now() - t0);
    }
  }
  return r.headers.get('x-meshllm-ran-on');
}

async function stream(url, model, n) {
  const times = [];
  let ranOn = null, usage = null;
  const header = await sse(url, '/v1/completions', { model, prompt: PROMPT, max_tokens: n, temperature: 0 }, (j, t) => {
    if (j.usage) usage = j.usage;
    if (j.meshllm?.ran_on) ranOn = j.meshllm.ran_on;
    if (j.choices?.[0]?.text) times.push(t);
  });
  const tps = times.length > 1 ? (times.length - 1) / ((times.at(-1) - times[0]) / 1000) : 0;
  return { ttft_ms: times[0], tps, pieces: times.length, tokens: usage?.completion_tokens, ran_on: ranOn ?? header };
}

// The failover command needs the serving peer before the stream ends: read the header first.
async function failover(url, model, n, after, pids) {
  const times = [];
  let ranOn = null, usage = null, serving = null, killed = false;
  const t0 = now();
  const r = await fetch(url + '/v1/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, prompt: PROMPT, max_tokens: n, temperature: 0, stream: true, stream_options: { include_usage: true } }),
  });
  serving = r.headers.get('x-meshllm-ran-on');
  const dec = new TextDecoder();
  let buf = '', killIdx = -1;
  for await (const part of r.body) {
    buf += dec.decode(part, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const line = ev.split('\n').find((l) => l.startsWith('data: '));
      if (!line || line === 'data: [DONE]') continue;
      const j = JSON.parse(line.slice(6));
      if (j.usage) usage = j.usage;
      if (j.meshllm?.ran_on) ranOn = j.meshllm.ran_on;
      if (j.choices?.[0]?.text) {
        times.push(now() - t0);
        if (!killed && times.length >= after) {
          process.kill(pids[serving], 'SIGKILL');
          killed = true;
          killIdx = times.length;
        }
      }
    }
  }
  let gap = 0;
  for (let i = killIdx; i > 0 && i < times.length; i++) gap = Math.max(gap, times[i] - times[i - 1]);
  const before = [];
  for (let i = 1; i < killIdx - 1; i++) before.push(times[i] - times[i - 1]);
  before.sort((a, b) => a - b);
  return { served_first: serving, ran_on: ranOn, tokens: usage?.completion_tokens, gap_ms: gap,
    usual_gap_ms: before[before.length >> 1] ?? 0 };
}

async function chat(url, model, turns, tag) {
  // tag makes each conversation its own: no slot holds a prefix of it beforehand
  const msgs = [{ role: 'system', content: `Conversation ${tag}. You are a storyteller. ` + 'Tell long stories. '.repeat(20) }];
  const out = [];
  for (let k = 0; k < turns; k++) {
    msgs.push({ role: 'user', content: `Turn ${k + 1}: ` + 'the fisherman walked along the shore and found a bottle. '.repeat(12) });
    let text = '', ttft = null, usage = null, ranOn = null;
    const header = await sse(url, '/v1/chat/completions', { model, messages: msgs, max_tokens: 24, temperature: 0 }, (j, t) => {
      if (j.usage) usage = j.usage;
      if (j.meshllm?.ran_on) ranOn = j.meshllm.ran_on;
      const c = j.choices?.[0]?.delta?.content;
      if (c) {
        if (ttft === null) ttft = t;
        text += c;
      }
    });
    msgs.push({ role: 'assistant', content: text });
    out.push({ turn: k + 1, ttft_ms: ttft, prompt: usage?.prompt_tokens, cached: usage?.prompt_tokens_details?.cached_tokens ?? 0, ran_on: ranOn ?? header });
  }
  return out;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN;
};

let res;
if (cmd === 'stream') res = await stream(args[0], args[1], Number(args[2]));
else if (cmd === 'failover') res = await failover(args[0], args[1], Number(args[2]), Number(args[3]), JSON.parse(args[4]));
else if (cmd === 'chat') res = await chat(args[0], args[1], Number(args[2]), args[3] ?? '1');
else if (cmd === 'median') res = median(JSON.parse(args[0]));
else {
  console.error('usage: mesh_bench.mjs stream|failover|chat|median ...');
  process.exit(2);
}
console.log(JSON.stringify(res));
