"""Rules of the test suite, written in numpy."""

import numpy as np

import attnscope as ats

STRIDE, WINDOW = 16, 32


def window_means(k, window, stride):
    """``K1_j = mean K[16j, 16j + 32)``, summed row after row in float32 (as the library)."""
    n = k.shape[0]
    m = (n - window) // stride + 1 if n >= window else 0
    idx = np.arange(m) * stride
    acc = np.zeros((m, k.shape[1]), dtype=np.float32)
    for o in range(window):
        acc += k[idx + o]
    return acc / np.float32(window)


@ats.block_method(name="np-infllm-v2", knob="top_k", block=64, init_blocks=1, local_blocks=2)
def np_infllm_v2(q, k, ctx):
    """InfLLM v2's block score in numpy: group-summed softmax over mean-pooled 32-token chunks
    (stride 16), max-pooled to blocks."""
    n = k.shape[0]
    k1 = window_means(k, WINDOW, STRIDE)
    m = k1.shape[0]
    # Chunks visible to query i: 16 j + 31 <= i.
    i = np.arange(n)
    vis = np.where(i + 1 >= WINDOW, np.minimum((i + 1 - WINDOW) // STRIDE + 1, m), 0)
    visible = np.arange(m)[None, :] < vis[:, None]  # [n, m]
    s = np.zeros((n, m), dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):  # queries that see no chunk yet
        for qh in q:
            logits = (qh @ k1.T) * np.float32(ctx.scale)
            masked = np.where(visible, logits, -np.inf)
            top = masked.max(axis=1, initial=-np.inf)
            safe = np.where(np.isfinite(top), top, 0).astype(np.float32)
            z = safe + np.log(np.exp(masked - safe[:, None]).sum(axis=1, dtype=np.float32))
            z = np.where(np.isfinite(top), z, np.inf).astype(np.float32)
            s += np.where(visible, np.exp(logits - z[:, None]), 0)
    return block_max(np.where(visible, s, -np.inf), ctx.block_size // STRIDE, ctx.n_blocks)[None]


def block_max(s, per_block, nb):
    """Block b's score: the largest of chunks [per_block b - 1, per_block (b + 1) - 1]."""
    n, m = s.shape
    padded = np.full((n, nb * per_block + 1), -np.inf, dtype=np.float32)
    width = min(m, nb * per_block)
    padded[:, 1 : width + 1] = s[:, :width]
    windows = np.lib.stride_tricks.sliding_window_view(padded, per_block + 1, axis=1)
    return windows[:, ::per_block][:, :nb].max(axis=2)
