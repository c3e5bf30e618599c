#!/usr/bin/env python3
"""The Python package on a CUDA GPU (scripts/gpu_check.sh, step `python`): `capture` with
`device="cuda"` returns torch tensors on the GPU (through DLPack, no host copy) that agree with
the CPU capture of the same model and input, in f32 and in bf16 storage.

    PYTHONPATH=DIR python3 scripts/gpu_python.py MODEL TEXT

DIR holds the `attnscope` package with its extension module; MODEL and TEXT as for `capture`.
Prints one line per check and exits 1 when one fails.
"""
import sys

import numpy as np
import torch

import attnscope as ats


def main():
    model, text = sys.argv[1], sys.argv[2]
    opts = dict(model=model, text=text, length=2048, layers=[0], quiet=True)
    cpu = ats.capture(**opts)
    torch.cuda.synchronize()
    ok = True
    for precision in ("f32", "bf16"):
        gpu = ats.capture(device="cuda", precision=precision, **opts)
        for name in ("q", "k", "lse"):
            g, c = getattr(gpu[0], name), getattr(cpu[0], name)
            on_gpu = isinstance(g, torch.Tensor) and g.is_cuda and g.dtype == torch.float32
            same_shape = tuple(g.shape) == c.shape
            diff = float(np.abs(g.cpu().numpy() - c).max()) if same_shape else float("inf")
            scale = float(np.abs(c).max())
            tol = 1e-4 * max(scale, 1.0) if precision == "f32" else 2e-2 * max(scale, 1.0)
            good = on_gpu and same_shape and diff <= tol
            ok &= good
            print(f"{precision} {name}: {tuple(g.shape)} on {g.device}, largest |gpu - cpu| "
                  f"{diff:.2e} (max |x| {scale:.2e}, tol {tol:.1e}): {'ok' if good else 'FAIL'}")
        del gpu
    # The capsules' memory is freed with the tensors (by the DLPack deleter): the device's free
    # memory after more captures, for the record (the driver's pools may keep some).
    free = [torch.cuda.mem_get_info()[0]]
    for _ in range(2):
        for _ in range(5):
            g = ats.capture(device="cuda", **opts)
            del g
        free.append(torch.cuda.mem_get_info()[0])
    one = (cpu[0].q.size + cpu[0].k.size + cpu[0].lse.size) * 4 / 2**20
    d5, d10 = (free[0] - free[1]) / 2**20, (free[0] - free[2]) / 2**20
    # A leak grows with the captures (10 x {one:.1f} MiB); a pool that keeps freed memory does not.
    good = d10 < 5 * one + 8
    ok &= good
    print(f"captures dropped: device memory in use +{d5:.1f} MiB after 5, +{d10:.1f} MiB after 10 "
          f"(one capture's tensors: {one:.1f} MiB): {'ok' if good else 'FAIL (leak)'}")
    ok &= rule_on_cuda(model, text)
    print("OK" if ok else "FAIL")
    sys.exit(0 if ok else 1)


def rule_on_cuda(model, text):
    """A token rule (scores q . k) in a `simulate(device="cuda")` run gets torch tensors on the
    GPU and gives the same metrics as the same rule in a CPU run (numpy arrays)."""
    import tempfile

    seen = set()

    @ats.token_method(name="py-dot", knob="k")
    def py_dot(q, k, ctx):
        seen.add((type(q).__module__.split(".")[0], str(getattr(q, "device", "cpu")), ctx.device))
        return q @ k.T

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for device in ("cpu", "cuda"):
            run = ats.simulate(model=model, text=text, length=1024, methods=["py-dot"],
                               sparsity=[0.9], device=device, out=f"{tmp}/{device}", quiet=True)
            rows[device] = {(r["layer"], r["head"]): r["recall"] for r in run.table("metrics").to_pylist()}
    diff = max(abs(rows["cpu"][key] - rows["cuda"][key]) for key in rows["cpu"])
    on_gpu = ("torch", "cuda:0", "cuda") in seen and ("numpy", "cpu", "cpu") in seen
    good = on_gpu and set(rows["cpu"]) == set(rows["cuda"]) and diff <= 1e-4
    print(f"token rule: arguments seen {sorted(seen)}; per-head recall cpu vs cuda run within "
          f"{diff:.2e}: {'ok' if good else 'FAIL'}")
    return good


if __name__ == "__main__":
    main()
