// split_bench.mjs - the measuring client of bench/split_bench.sh (plain fetch, SSE parsed here).
//   stream URL MODEL N PROMPT [CONCURRENT]   CONCURRENT greedy completions of N tokens at once,
//                                            streamed; prints the aggregate decode tokens/s
//                                            (tokens after each stream's first, over the time
//                                            from the first first-token to the last end)
const [cmd, url, model, n, prompt, conc] = process.argv.slice(2);
const now = () => Number(process.hrtime.bigint()) / 1e6;

async function one(t0) {
  const r = await fetch(url + '/v1/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, prompt, max_tokens: Number(n), temperature: 0, stream: true,
      stream_options: { include_usage: true } }),
  });
  if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
  const dec = new TextDecoder();
  let buf = '', first = null, last = null, tokens = 0;
  for await (const part of r.body) {
    buf += dec.decode(part, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const line = buf.slice(0, i).split('\n').find((l) => l.startsWith('data: '));
      buf = buf.slice(i + 2);
      if (!line || line === 'data: [DONE]') continue;
      const j = JSON.parse(line.slice(6));
      if (j.usage) tokens = j.usage.completion_tokens;
      if (j.choices?.[0]?.text) {
        if (first === null) first = now() - t0;
        last = now() - t0;
      }
    }
  }
  return { first, last, tokens };
}

if (cmd !== 'stream') {
  console.error('usage: split_bench.mjs stream URL MODEL N PROMPT [CONCURRENT]');
  process.exit(2);
}
const t0 = now();
const rs = await Promise.all(Array.from({ length: Number(conc ?? 1) }, () => one(t0)));
const start = Math.min(...rs.map((r) => r.first)), end = Math.max(...rs.map((r) => r.last));
const toks = rs.reduce((s, r) => s + Math.max(0, r.tokens - 1), 0);
console.log(end > start ? (toks / ((end - start) / 1000)).toFixed(2) : '0');
