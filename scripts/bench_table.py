#!/usr/bin/env python3
"""Turns scripts/bench's rows into a Markdown table: Gloss and llama.cpp side by side, and
Gloss's decode time against its physical floors (weights read / bandwidth, dispatches x
per-dispatch cost)."""
import json, os, sys

BW = float(os.environ.get("BANDWIDTH", 2.75e12))
DISPATCH_US = float(os.environ.get("DISPATCH_US", 3.3))
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
files = sorted({r["file"] for r in rows})
print("| model | metric | Gloss | llama.cpp | Gloss / llama.cpp |")
print("| --- | --- | ---: | ---: | ---: |")
for f in files:
    g = [r for r in rows if r["file"] == f and r["engine"] == "gloss"]
    l = [r for r in rows if r["file"] == f and r["engine"] == "llama.cpp"]
    name = os.path.basename(f)
    def llama(n_prompt, n_gen):
        m = [r["tok_s"] for r in l if r["n_prompt"] == n_prompt and r["n_gen"] == n_gen]
        return m[0] if m else None
    def num(v):
        return "—" if v is None else f"{v:.0f}"
    def ratio(a, b):
        return "—" if not b else f"{a / b:.2f}"
    for r in g:
        ref = llama(r["prompt_tokens"], 0)
        print(f"| {name} | prefill {r['prompt_tokens']} tok/s | {r['prefill_tok_s']:.0f} | {num(ref)} | {ratio(r['prefill_tok_s'], ref)} |")
    if g:
        d = g[0]
        ref = llama(0, d["gen_tokens"])
        print(f"| {name} | decode {d['gen_tokens']} tok/s (after {d['prompt_tokens']}) | {d['decode_tok_s']:.0f} | {num(ref)} | {ratio(d['decode_tok_s'], ref)} |")
        print(f"| {name} | first token ms (after {d['prompt_tokens']}-token prefill) | {d['first_token_ms']:.1f} | | |")
print()
print(f"Decode floors (bandwidth {BW / 1e12:.2f} TB/s, {DISPATCH_US} µs per dependent dispatch):")
print()
print("| model | measured ms/token | weights / bandwidth ms | dispatches x cost ms | dispatches/token | MB read/token |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for f in files:
    for d in [r for r in rows if r["file"] == f and r["engine"] == "gloss"][:1]:
        ms = 1000 / d["decode_tok_s"]
        bw_ms = d["bytes_per_token"] / BW * 1000
        disp_ms = d["dispatches_per_token"] * DISPATCH_US / 1000
        print(f"| {os.path.basename(f)} | {ms:.3f} | {bw_ms:.3f} | {disp_ms:.3f} | {d['dispatches_per_token']} | {d['bytes_per_token'] / 1e6:.1f} |")
