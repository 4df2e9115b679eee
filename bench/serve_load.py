#!/usr/bin/env python3
"""serve_load.py - time to first token and aggregate tokens/s under N concurrent streamed
/v1/completions, for meshllm serve and (optionally) llama-server on the same GGUF, the two
servers started and measured in turns (interleaved rounds). Not a test: prints a table.

  bench/serve_load.py MODEL.gguf [--llama-server PATH] [-n 8] [--tokens 64] [--rounds 3]
                      [--threads 2] [--prompt-words 40] [--also LABEL=PATH]

Each round, for each server: one stream alone (its first-token time), then N at once
(median and max first-token time over the N, and completion tokens / wall time). Both
servers get N slots, the same threads, the same prompts and temperature 0."""
import argparse, json, os, socket, statistics, subprocess, sys, tempfile, threading, time
import http.client

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def start(kind, exe, model, n, threads, port):
    if kind != "llama-server":
        cmd = [exe, "serve", "--model", model, "--host", "127.0.0.1", "--port", str(port),
               "--slots", str(n), "--threads", str(threads)]
    else:
        cmd = [exe, "-m", model, "--host", "127.0.0.1", "--port", str(port), "-np", str(n),
               "-t", str(threads), "-c", str(2048 * n), "--no-webui"]
    log = tempfile.TemporaryFile()
    p = subprocess.Popen(cmd, stdout=log, stderr=log)
    for _ in range(600):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health"); r = c.getresponse(); r.read()
            if r.status == 200: return p
        except OSError:
            pass
        time.sleep(0.1)
    p.kill(); raise SystemExit(f"{kind} did not start")

def stream(port, prompt, tokens, out):
    body = json.dumps({"prompt": prompt, "max_tokens": tokens, "temperature": 0,
                       "stream": True, "stream_options": {"include_usage": True}})
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    first, n = None, 0
    for line in r:
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]": continue
        d = json.loads(line[6:])
        ch = d.get("choices") or []
        if ch and ch[0].get("text"):
            if first is None: first = time.monotonic() - t0
        if d.get("usage"): n = d["usage"]["completion_tokens"]
    out.append((first if first is not None else time.monotonic() - t0, n, time.monotonic() - t0))

def burst(port, prompts, tokens):
    out = []
    ts = [threading.Thread(target=stream, args=(port, p, tokens, out)) for p in prompts]
    t0 = time.monotonic()
    for t in ts: t.start()
    for t in ts: t.join()
    wall = time.monotonic() - t0
    return [o[0] for o in out], sum(o[1] for o in out) / wall

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model"); ap.add_argument("--llama-server"); ap.add_argument("-n", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64); ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--also", action="append", default=[], metavar="LABEL=PATH",
                    help="another meshllm binary to measure in the same rounds");
    ap.add_argument("--threads", type=int, default=2); ap.add_argument("--prompt-words", type=int, default=40)
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    servers = [("meshllm", os.environ.get("MESHLLM_BIN", os.path.join(root, "build", "meshllm")))]
    for x in a.also:
        label, _, path = x.partition("=")
        servers.append((label, path))
    if a.llama_server: servers.append(("llama-server", a.llama_server))
    words = "once upon a time there was a little girl named lily who loved to play in the park".split()
    prompts = [" ".join(words[(i + k) % len(words)] for k in range(a.prompt_words)) for i in range(a.n)]
    res = {k: {"alone": [], "med": [], "max": [], "tps": []} for k, _ in servers}
    for rnd in range(a.rounds):
        for kind, exe in servers:
            port = free_port(); p = start(kind, exe, a.model, a.n, a.threads, port)
            try:
                burst(port, prompts[:1], 4)  # warm-up
                ft, _ = burst(port, prompts[:1], a.tokens)
                res[kind]["alone"].append(ft[0])
                ft, tps = burst(port, prompts, a.tokens)
                res[kind]["med"].append(statistics.median(ft)); res[kind]["max"].append(max(ft))
                res[kind]["tps"].append(tps)
            finally:
                p.terminate(); p.wait()
            print(f"round {rnd + 1} {kind}: alone {res[kind]['alone'][-1]*1e3:.0f} ms, {a.n} at once median "
                  f"{res[kind]['med'][-1]*1e3:.0f} ms max {res[kind]['max'][-1]*1e3:.0f} ms, {res[kind]['tps'][-1]:.1f} tok/s",
                  file=sys.stderr)
    print(f"\n{a.n} concurrent streamed /v1/completions of {a.tokens} tokens, {a.threads} threads, "
          f"{a.rounds} rounds (medians), {os.path.basename(a.model)}\n")
    print("| server | first token alone (ms) | first token, median of N (ms) | worst of N (ms) | aggregate tok/s |")
    print("|---|---:|---:|---:|---:|")
    for kind, _ in servers:
        r = res[kind]; m = statistics.median
        print(f"| {kind} | {m(r['alone'])*1e3:.0f} | {m(r['med'])*1e3:.0f} | {m(r['max'])*1e3:.0f} | {m(r['tps']):.1f} |")

if __name__ == "__main__":
    main()
