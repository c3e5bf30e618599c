#!/usr/bin/env python3
"""GPU benchmark, attnscope against PyTorch on the same GPU in one run (BENCHMARKS.md, "GPU").

For the Qwen2.5-0.5B shape (24 layers, 14/2 heads, head dim 64) and the Qwen2.5-1.5B shape
(28 layers, 12/2 heads, head dim 128), random bf16 weights, at 4k..32k tokens (and with
--shapes, the Qwen2.5-7B and Llama-3.1-8B shapes):
  * attnscope forward and forward + full capture (every layer and head: LSE, P[i, b] at block 64,
    sink mass, pooled maps; results left on the device): `attnscope bench --random-config ...
    --device cuda --precision bf16 --capture --kernels --json` (CUDA-event medians);
  * PyTorch: transformers Qwen2Model (random init, bf16, sdpa attention) forward, CUDA-event
    medians; eager attention with output_attentions=True until it runs out of memory;
  * the device's ceilings measured here: a bf16 8192^3 matmul and a 4 GiB device-to-device copy;
  * the attention/capture kernels' TFLOP/s and bytes against those ceilings.
Prints a table last; writes every number to --out (JSON). Needs a CUDA GPU, torch with CUDA and
transformers; scripts/gpu_check.sh runs it with the packed release binary.

    python3 scripts/gpu_bench.py --bin target/release/attnscope --out bench.json
"""
import argparse
import gc
import json
import subprocess
import sys
import time

import torch

SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, head_dim=64),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, head_dim=128),
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, head_dim=128,
                       vocab_size=152064, tie_word_embeddings=False),
    "llama3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                        num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                        vocab_size=128256, rope_theta=500000.0, rms_norm_eps=1e-5,
                        max_position_embeddings=131072, tie_word_embeddings=False,
                        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                          high_freq_factor=4.0,
                                          original_max_position_embeddings=8192)),
}


def log(*a):
    print(*a, flush=True)


def cuda_ms(fn, warmup=1, repeat=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(repeat):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    ts.sort()
    return ts[len(ts) // 2], ts


def ceilings():
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms, _ = cuda_ms(lambda: a @ b, warmup=3, repeat=10)
    mm = 2 * 8192 ** 3 / (ms * 1e9)
    del a, b
    x = torch.empty(4 << 30, dtype=torch.uint8, device="cuda")
    x.random_(0, 255)
    y = torch.empty_like(x)
    ms2, _ = cuda_ms(lambda: y.copy_(x), warmup=2, repeat=10)
    bw = 2 * x.numel() / (ms2 * 1e6)  # GB/s, read + write
    del x, y
    torch.cuda.empty_cache()
    return {"matmul_bf16_tflops": mm, "copy_gb_per_s": bw}


def attnscope_rows(binary, shape, lens, repeat):
    cmd = [binary, "bench", "--random-config", shape, "--device", "cuda", "--precision", "bf16",
           "--lens", ",".join(map(str, lens)), "--capture", "--kernels", "--json",
           "--repeat", str(repeat)]
    log("$", " ".join(cmd))
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        log(p.stdout[-3000:], p.stderr[-3000:])
        raise SystemExit(f"attnscope bench failed ({p.returncode})")
    rows = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    log(f"  attnscope: {len(rows)} rows in {time.time() - t:.1f} s")
    return rows


def torch_model(shape, impl):
    from transformers import LlamaConfig, LlamaModel, Qwen2Config, Qwen2Model
    opts = dict(vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6,
                rms_norm_eps=1e-6, tie_word_embeddings=True, use_cache=False)
    opts.update(SHAPES[shape])
    llama = shape.startswith("llama")
    cfg = (LlamaConfig if llama else Qwen2Config)(**opts)
    cfg._attn_implementation = impl
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        m = (LlamaModel if llama else Qwen2Model)(cfg)
    torch.set_default_dtype(prev)
    return m.eval()


def torch_rows(shape, lens, impl, output_attentions, repeat):
    rows = []
    m = torch_model(shape, impl)
    for n in lens:
        ids = torch.randint(0, 128000, (1, n), device="cuda")
        torch.cuda.reset_peak_memory_stats()
        try:
            with torch.inference_mode():
                def f():
                    out = m(input_ids=ids, use_cache=False, output_attentions=output_attentions)
                    return out.last_hidden_state
                ms, all_ms = cuda_ms(f, warmup=1, repeat=repeat)
            rows.append({"tokens": n, "ms": ms, "ms_all": all_ms,
                         "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30})
            log(f"  torch {impl}{' +attn' if output_attentions else ''} {shape} {n}: {ms:.1f} ms")
        except torch.OutOfMemoryError:
            rows.append({"tokens": n, "oom": True})
            log(f"  torch {impl}{' +attn' if output_attentions else ''} {shape} {n}: OOM")
            gc.collect()
            torch.cuda.empty_cache()
            break
        finally:
            gc.collect()
            torch.cuda.empty_cache()
    del m
    gc.collect()
    torch.cuda.empty_cache()
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/attnscope")
    ap.add_argument("--lens", default="4096,8192,16384,32768")
    ap.add_argument("--eager-lens", default="4096,8192,16384,32768")
    ap.add_argument("--shapes", default="qwen2.5-0.5b,qwen2.5-1.5b")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="gpu_bench.json")
    a = ap.parse_args()
    lens = [int(x) for x in a.lens.split(",")]
    eager_lens = [int(x) for x in a.eager_lens.split(",")]
    import transformers
    res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d"),
           "ceilings": ceilings(), "shapes": {}}
    log("ceilings:", res["ceilings"])
    for shape in a.shapes.split(","):
        r = {"attnscope": attnscope_rows(a.bin, shape, lens, a.repeat)}
        r["sdpa"] = torch_rows(shape, lens, "sdpa", False, a.repeat)
        r["eager_attn"] = torch_rows(shape, eager_lens, "eager", True, 1)
        res["shapes"][shape] = r
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)

    c = res["ceilings"]
    log(f"\n# {res['device']} | torch {res['torch']} | transformers {res['transformers']} | "
        f"bf16 matmul {c['matmul_bf16_tflops']:.0f} TFLOP/s | copy {c['copy_gb_per_s']:.0f} GB/s")
    log(f"{'shape':<13} {'tokens':>6} {'ours fwd':>9} {'sdpa fwd':>9} {'ratio':>6} "
        f"{'capture':>9} {'cap/sdpa':>8} {'eager+attn':>11} | {'attn TF/s':>9} {'cap TF/s':>8} "
        f"{'cap %mm':>7} {'cap GB/s':>8}")
    for shape, r in res["shapes"].items():
        by = {}
        for row in r["attnscope"]:
            if row.get("mode") == "peaks":
                log(f"{shape}: attnscope peak device memory {row['device_peak_gib']:.2f} GiB, "
                    f"peak host memory {row['host_peak_gib']:.2f} GiB; torch sdpa peak "
                    + ", ".join(f"{x['tokens']}: {x['peak_gib']:.2f} GiB"
                                for x in r["sdpa"] if "peak_gib" in x))
                continue
            by.setdefault(row["tokens"], {})[row["mode"]] = row
        sd = {x["tokens"]: x for x in r["sdpa"]}
        ea = {x["tokens"]: x for x in r["eager_attn"]}
        for n in lens:
            o = by.get(n, {})
            f = o.get("forward", {}).get("ms", float("nan"))
            cap = o.get("capture", {}).get("ms", float("nan"))
            k = o.get("kernels", {})
            s = sd.get(n, {}).get("ms", float("nan"))
            e = ea.get(n)
            es = "OOM" if e and e.get("oom") else (f"{e['ms']:.0f} ms" if e else "-")
            ct = k.get("capture_tflops", float("nan"))
            log(f"{shape:<13} {n:>6} {f:>7.1f}ms {s:>7.1f}ms {f / s:>6.2f} {cap:>7.1f}ms "
                f"{cap / s:>8.2f} {es:>11} | {k.get('attention_tflops', float('nan')):>9.0f} "
                f"{ct:>8.0f} {100 * ct / c['matmul_bf16_tflops']:>6.0f}% "
                f"{k.get('capture_gb_per_s', float('nan')):>8.0f}")
        fits = [x["tokens"] for x in r["eager_attn"] if not x.get("oom")]
        log(f"{shape:<13} eager + output_attentions: longest that fits {max(fits) if fits else 'none'}")


if __name__ == "__main__":
    sys.exit(main())
