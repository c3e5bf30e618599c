//! The device's sparse attention kernels against the CPU's `sparse_attention` on fresh random
//! inputs (marked `gpu_`; each prints a SKIPPED notice and passes where no CUDA GPU exists):
//! `sparse_rows` (f32: <= 1e-5; bf16 storage: <= 1e-2) and the block-sparse flash kernel
//! (bf16, `P` rounded to bf16 as in the dense flash kernel: <= 1e-2), for selections shared by
//! every query of a 64-query tile (block methods) and selections that differ per query (token
//! methods, with queries that keep only their own key), at head dims 64 and 128.
#![cfg(feature = "cuda")]

mod gpu_util;

use attnscope_core::attention::{sparse_attention, LayerQkv, ScoreRule, TokenSelection};
use attnscope_core::tile_lists::TileLists;
use attnscope_kernels::cuda::{bf16, AttnShape, GpuDevice};
use gpu_util::*;
use ndarray::Array2;

/// Block-shared: per 64-query tile, the first 16-key block, the tile's own keys and key blocks of
/// 16 picked by a hash of (head, tile, block). Token-level: sink, a window of 24 and a per-query
/// hash; every 37th query keeps only itself.
fn selections(heads: usize, n: usize) -> [(&'static str, TokenSelection); 2] {
    let block = TokenSelection::from_fn(heads, n, |h, i| {
        let qt = i / 64;
        (0..=i as u32)
            .filter(|&j| {
                let kb = j as usize / 16;
                kb == 0 || j as usize / 64 == qt || (kb * 31 + h * 7 + qt * 13) % 10 < 2
            })
            .collect()
    });
    let token = TokenSelection::from_fn(heads, n, |h, i| {
        if i % 37 == 5 {
            return vec![i as u32];
        }
        (0..=i as u32)
            .filter(|&j| {
                j < 4 || j as usize + 24 > i || (j as usize * 11 + i * 3 + h).is_multiple_of(17)
            })
            .collect()
    });
    [("block-shared", block), ("per-query", token)]
}

fn case(dev: &GpuDevice, rng: &mut Rng, n: usize, heads: usize, kv: usize, d: usize) {
    let bf = |v: Vec<f32>| round_bf16(&v);
    let q = Array2::from_shape_vec((n, heads * d), bf(rng.vec(n * heads * d, 2.0))).expect("q");
    let k = Array2::from_shape_vec((n, kv * d), bf(rng.vec(n * kv * d, 2.0))).expect("device call");
    let v = Array2::from_shape_vec((n, kv * d), bf(rng.vec(n * kv * d, 1.0))).expect("device call");
    let qkv = LayerQkv {
        layer: 0,
        n_heads: heads,
        n_kv_heads: kv,
        head_dim: d,
        q: q.view(),
        k: k.view(),
        v: v.view(),
        rule: ScoreRule::plain(d),
    };
    let s = AttnShape {
        n,
        heads,
        kv_heads: kv,
        head_dim: d,
    };
    let (qh, kh, vh) = (
        head_major(&q, heads, d),
        head_major(&k, kv, d),
        head_major(&v, kv, d),
    );
    let (qf, kf, vf) = (
        up::<f32>(dev, &qh),
        up::<f32>(dev, &kh),
        up::<f32>(dev, &vh),
    );
    let (qb, kb, vb) = (
        up::<bf16>(dev, &qh),
        up::<bf16>(dev, &kh),
        up::<bf16>(dev, &vh),
    );
    for (name, sel) in selections(heads, n) {
        let want = sparse_attention(&qkv, &sel).expect("cpu sparse attention");
        let want = want.as_slice().expect("device call");
        let (offsets, keys) = sel.csr();
        let offsets: Vec<u64> = offsets.iter().map(|&o| o as u64).collect();
        let (offsets, keys) = (
            dev.upload(&offsets, "o").expect("device call"),
            dev.upload(keys, "k").expect("device call"),
        );
        let mut out = poisoned::<f32>(dev, n * heads * d);
        dev.sparse_attention(&qf, &kf, &vf, &offsets, &keys, s, &mut out)
            .expect("device call");
        check(
            &down(dev, &out),
            want,
            1e-5,
            &format!("sparse_rows f32 d{d} n{n} {name}"),
        );
        let mut out = poisoned::<bf16>(dev, n * heads * d);
        dev.sparse_attention(&qb, &kb, &vb, &offsets, &keys, s, &mut out)
            .expect("device call");
        check(
            &down(dev, &out),
            want,
            1e-2,
            &format!("sparse_rows bf16 d{d} n{n} {name}"),
        );
        let lists = TileLists::new(&sel, heads, n);
        let tiles: usize = lists.keys.len() / 64;
        println!(
            "  {name}: {} kept pairs, {tiles} listed 64-key chunks",
            sel.total_kept()
        );
        let (o, kk, m) = (
            dev.upload(&lists.offsets, "o").expect("device call"),
            dev.upload(&lists.keys, "k").expect("device call"),
            dev.upload(&lists.mask, "m").expect("device call"),
        );
        let mut out = poisoned::<bf16>(dev, n * heads * d);
        dev.flash_sparse_attention(&qb, &kb, &vb, &o, &kk, &m, s, &mut out)
            .expect("device call");
        let got = down(dev, &out);
        check(
            &got,
            want,
            1e-2,
            &format!("flash_sparse bf16 d{d} n{n} {name}"),
        );
        // A query that keeps only itself outputs its own value (rounded to bf16).
        if name == "per-query" {
            let (i, h) = (5, heads - 1);
            let g = h / (heads / kv);
            for c in 0..d {
                let (x, y) = (got[i * heads * d + h * d + c], v[[i, g * d + c]]);
                assert!(
                    (x - y).abs() <= 1e-2 * y.abs().max(1e-3),
                    "own-key query: {x} vs {y}"
                );
            }
        }
    }
}

#[test]
fn gpu_sparse_kernels_match_cpu() {
    let Some(dev) = device("gpu_sparse_kernels_match_cpu") else {
        return;
    };
    let mut rng = Rng::from_state(seed("gpu_sparse_kernels_match_cpu"));
    let (ma, mi) = dev.compute_capability();
    if ma * 10 + mi < 80 {
        println!("SKIPPED flash_sparse: needs sm_80+");
        return;
    }
    // Lengths off the 64-query tile, GQA 7:1 (Qwen2.5-0.5B) and 4:1 at head dim 128.
    case(&dev, &mut rng, 333, 7, 1, 64);
    case(&dev, &mut rng, 700, 4, 1, 128);
    case(&dev, &mut rng, 64, 2, 2, 64);
}
