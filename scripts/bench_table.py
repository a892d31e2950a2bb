#!/usr/bin/env python3
"""Turns scripts/bench's rows into Markdown tables: Gloss and llama.cpp side by side;
Gloss's decode time against its physical floors (weights read / bandwidth, dispatches x
per-dispatch cost); GPU memory held against weights + KV cache; and where one decode step's
GPU time goes (timestamp queries, one pass per op)."""
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
    for i, d in enumerate(g):
        # llama-bench's tg row starts from an empty context: compare it with the first row.
        ref = llama(0, d["gen_tokens"]) if i == 0 else None
        print(f"| {name} | decode {d['gen_tokens']} tok/s (after {d['prompt_tokens']}) | {d['decode_tok_s']:.0f} | {num(ref) if i == 0 else ''} | {ratio(d['decode_tok_s'], ref) if i == 0 else ''} |")
    for d in g:
        # The chat's sampling (temperature 0.7, top-k 40, top-p 0.95, min-p 0.05); llama-bench
        # does not sample.
        if "sampled_decode_tok_s" in d:
            print(f"| {name} | decode {d['gen_tokens']} tok/s sampled (after {d['prompt_tokens']}) | {d['sampled_decode_tok_s']:.0f} | | |")
    for d in g[:1]:
        print(f"| {name} | first token ms (after {d['prompt_tokens']}-token prefill) | {d['first_token_ms']:.1f} | | |")
        if "load_ms" in d:
            print(f"| {name} | load ms (file to GPU, pipelines compiled) | {d['load_ms']:.0f} | | |")
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

if any("gpu_bytes" in r for r in rows):
    print()
    print("GPU memory the loaded model holds (all buffers: weights, KV cache, activations, scratch):")
    print()
    print("| model | GPU MB | weights MB | KV cache MB | GPU / (weights + KV) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for f in files:
        for d in [r for r in rows if r["file"] == f and r["engine"] == "gloss" and "gpu_bytes" in r][:1]:
            base = d["weight_bytes"] + d["kv_bytes"]
            print(f"| {os.path.basename(f)} | {d['gpu_bytes'] / 1e6:.1f} | {d['weight_bytes'] / 1e6:.1f} | {d['kv_bytes'] / 1e6:.1f} | {d['gpu_bytes'] / base:.2f} |")
for f in files:
    for d in [r for r in rows if r["file"] == f and r["engine"] == "gloss" and "kernels" in r][-1:]:
        chunk = f"the last {min(d['prompt_tokens'], d.get('batch', 256))}-token prefill chunk of {d['prompt_tokens']}"
        for key, what in [("kernels", f"one decode step at position {d['prompt_tokens'] + d['gen_tokens']} (after the decode run)"), ("prefill_kernels", chunk)]:
            if key not in d:
                continue
            print()
            print(f"{os.path.basename(f)}: GPU time of {what}, by op (µs; natively each op from the end of the one before, launch and barrier included; the timestamps add a few µs each, so the sum exceeds the step):")
            print()
            print("| op | dispatches | µs | µs each |")
            print("| --- | ---: | ---: | ---: |")
            for label, n, ms in d[key]:
                print(f"| {label} | {n} | {ms * 1000:.0f} | {ms * 1000 / n:.1f} |")
