#!/usr/bin/env bash
# bench/serve_concurrency.sh - aggregate generation speed of `meshllm serve` with 1 client vs
# N concurrent clients (continuous batching). Not a test: prints a Markdown table row set.
#
#   bench/serve_concurrency.sh [MODEL.gguf] [N=8] [TOKENS=256] [THREADS=0]
#
# Each client sends chat completions (temperature 0.8, fixed seeds, max_tokens TOKENS) for
# the same list of N prompts; "serial" runs them one after another, "concurrent" all at once.
# tok/s = completion tokens reported in usage / wall time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=${1:-$root/../shared/models/stories260K.gguf}
n=${2:-8}
tokens=${3:-256}
threads=${4:-0}
bin=${MESHLLM_BIN:-$root/build/meshllm}
log=$(mktemp)
"$bin" serve --model "$model" --host 127.0.0.1 --port 0 --slots "$n" --threads "$threads" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
port=""
for _ in $(seq 200); do
    port=$(grep -oE 'API at http://127\.0\.0\.1:[0-9]+' "$log" | grep -oE '[0-9]+$' || true)
    [ -n "$port" ] && break
    sleep 0.05
done
[ -n "$port" ] || { cat "$log" >&2; exit 1; }
for _ in $(seq 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ] && break
    sleep 0.05
done
name=$(basename "$model" .gguf)
URL=http://127.0.0.1:$port N=$n TOKENS=$tokens MODEL=$name node --input-type=module -e '
const { URL, N, TOKENS, MODEL } = process.env;
const prompts = Array.from({ length: Number(N) }, (_, i) => "Once upon a time, story number " + i);
async function one(p, i) {
  const r = await fetch(URL + "/v1/chat/completions", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content: p }], max_tokens: Number(TOKENS), temperature: 0.8, seed: 1000 + i }) });
  const j = await r.json();
  if (!r.ok) throw new Error(JSON.stringify(j));
  return j.usage.completion_tokens;
}
await one("warm up", 0);
let t0 = performance.now(), toks = 0;
for (let i = 0; i < prompts.length; i++) toks += await one(prompts[i], i);
const serial = toks / ((performance.now() - t0) / 1000);
const serialToks = toks;
t0 = performance.now();
toks = (await Promise.all(prompts.map(one))).reduce((a, b) => a + b, 0);
const conc = toks / ((performance.now() - t0) / 1000);
console.log("| " + MODEL + " | 1 (serial, " + N + " requests) | " + serialToks + " | " + serial.toFixed(0) + " |");
console.log("| " + MODEL + " | " + N + " concurrent | " + toks + " | " + conc.toFixed(0) + " |");
console.log("speed-up: " + (conc / serial).toFixed(2) + "x");
'
