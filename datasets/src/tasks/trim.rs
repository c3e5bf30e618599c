//! Trimming pass A's overshoot to the exact length (see [`super::compose`]).

use attnscope_core::tokenizer::Tokenizer;

use super::hay::count;
use super::layout::{Layout, Rendered};
use crate::error::{DatasetError, Result};
use crate::sample::encode_bytes;

pub(super) type Trimmed<'a> = (Layout<'a>, Rendered, Vec<u32>, Vec<(usize, usize)>);

/// Trims hay so that the text has exactly `len` tokens (pass A had more): from the last hay
/// segment when it holds the overshoot; else the last segment is dropped (its needle then ends
/// the haystack, as a depth near 1 asks) and the rest comes out of the largest segment.
pub(super) fn trim<'a>(
    tok: &Tokenizer,
    layout: Layout<'a>,
    r: Rendered,
    ids: &[u32],
    offs: &[(usize, usize)],
    len: usize,
    task: &str,
) -> Result<Trimmed<'a>> {
    let d = ids.len() - len;
    let last = r.segs.len() - 1;
    let tokens_in = |offs: &[(usize, usize)], s: (usize, usize)| {
        offs.iter().filter(|o| o.0 >= s.0 && o.0 < s.1).count()
    };
    if last == 0 || tokens_in(offs, r.segs[last]) >= d + 2 {
        return trim_segment(tok, layout, r, ids, offs, len, task, last);
    }
    let mut l2 = layout.clone();
    l2.ends[last] = l2.seg_start(last);
    let r2 = l2.render();
    let (ids2, offs2) = encode_bytes(tok, &r2.text)?;
    if ids2.len() == len {
        return Ok((l2, r2, ids2, offs2));
    }
    let largest = |r: &Rendered, offs: &[(usize, usize)]| {
        (0..last)
            .max_by_key(|&i| tokens_in(offs, r.segs[i]))
            .unwrap_or(0)
    };
    if ids2.len() > len {
        let j = largest(&r2, &offs2);
        return trim_segment(tok, l2, r2, &ids2, &offs2, len, task, j);
    }
    let j = largest(&r, offs);
    trim_segment(tok, layout, r, ids, offs, len, task, j)
}

/// Trims hay segment `j` so that the text has exactly `len` tokens.
fn trim_segment<'a>(
    tok: &Tokenizer,
    mut layout: Layout<'a>,
    r: Rendered,
    ids: &[u32],
    offs: &[(usize, usize)],
    len: usize,
    task: &str,
    j: usize,
) -> Result<Trimmed<'a>> {
    let total = ids.len();
    let d = total - len;
    let (sa, sb) = r.segs[j];
    let w0 = layout.seg_start(j);
    // Candidate cuts: unique token starts inside segment j, plus its end (no trim).
    let unique = |i: usize| i == 0 || offs[i].0 > offs[i - 1].0;
    let i_end = offs.partition_point(|o| o.0 < sb);
    let mut cand_idx: Vec<usize> = (0..i_end)
        .filter(|&i| offs[i].0 >= sa && unique(i) && r.text.is_char_boundary(offs[i].0))
        .collect();
    let mut cands: Vec<usize> = cand_idx.iter().map(|&i| offs[i].0 - sa + w0).collect();
    cands.push(sb - sa + w0);
    cand_idx.push(i_end);

    // Window [k_s, k_e) around the cut that tokenizes alone as in context.
    let mut found = None;
    for widen in 0..3usize {
        let mut ks = i_end.saturating_sub(d + 64 + 256 * widen);
        while ks > 0 && !(unique(ks) && r.text.is_char_boundary(offs[ks].0)) {
            ks -= 1;
        }
        // Prefer a token that starts a line.
        let mut k = ks;
        while k > ks.saturating_sub(64) && k > 0 {
            let b = offs[k].0;
            if unique(k) && b > 0 && r.text.as_bytes()[b - 1] == b'\n' {
                ks = k;
                break;
            }
            k -= 1;
        }
        let mut ke = (i_end + 16 + 32 * widen).min(total);
        while ke < total && !(unique(ke) && r.text.is_char_boundary(offs[ke].0)) {
            ke += 1;
        }
        let s = if ks == 0 { 0 } else { offs[ks].0 };
        let e = if ke == total {
            r.text.len()
        } else {
            offs[ke].0
        };
        if s >= e || s > sb {
            continue;
        }
        if tok.encode(&r.text[s..e]).ok().as_deref() == Some(&ids[ks..ke]) {
            found = Some((ks, ke, s, r.text.len() - e));
            break;
        }
    }
    // Whether the window counts can be trusted (then full passes would find nothing new).
    let mut window_ok = found.is_some();
    if let Some((ks, ke, s, tail)) = found {
        // Ways to land on the length: cut the end only; else also leave out one sentence
        // inside the window (this shifts the cut to a place where the token count steps by
        // one; e.g. SmolLM2 spends two tokens on most CJK characters).
        let bytes = r.text.as_bytes();
        let sentence_end = |b: usize| {
            b > 0
                && (matches!(bytes[b - 1], b'.' | b'!' | b'?' | b'\n')
                    || ["。", "！", "？", "；"]
                        .iter()
                        .any(|p| r.text[..b].ends_with(p)))
        };
        let bounds: Vec<usize> = (ks + 1..i_end)
            .filter(|&i| offs[i].0 >= sa && unique(i) && r.text.is_char_boundary(offs[i].0))
            .filter(|&i| sentence_end(offs[i].0))
            .collect();
        // (gap start in `w`, gap end in `w`, gap end in the text, tokens left out)
        let gap_of = |k0: Option<usize>, k1: usize| {
            let g0 = k0.map_or(w0, |k| offs[k].0 - sa + w0);
            let removed = k1 - k0.unwrap_or_else(|| offs.partition_point(|o| o.0 < sa));
            (g0, offs[k1].0 - sa + w0, offs[k1].0, removed)
        };
        let mut drops: Vec<Option<(usize, usize, usize, usize)>> = vec![None];
        drops.extend(
            bounds
                .windows(2)
                .filter(|w| w[1] - w[0] + 2 <= d)
                .take(6)
                .map(|w| Some(gap_of(Some(w[0]), w[1]))),
        );
        if s <= sa {
            // Short segments: also leave out its first one to four tokens.
            let firsts = (ks..i_end)
                .filter(|&i| offs[i].0 > sa && unique(i) && r.text.is_char_boundary(offs[i].0))
                .take(4);
            drops.extend(firsts.map(|k1| Some(gap_of(None, k1))));
        }
        for drop in drops {
            let (g1, removed) = match drop {
                Some((g0, g1w, g1, removed)) => {
                    layout.gap = Some((j, g0, g1w));
                    (g1, removed)
                }
                None => {
                    layout.gap = None;
                    (s, 0)
                }
            };
            let lo = cands.partition_point(|&c| c - w0 + sa <= g1);
            let sub = &cands[lo..];
            if sub.is_empty() {
                continue;
            }
            let goal = i_end.saturating_sub(d) + removed;
            let first = cand_idx[lo..]
                .partition_point(|&i| i < goal)
                .min(sub.len() - 1);
            let mut eval = |wc: usize| -> Result<usize> {
                layout.ends[j] = wc;
                let t = layout.render().text;
                Ok(ks + count(tok, &t[s..t.len() - tail])? + (total - ke))
            };
            if let Some(i) = search(sub, first, len, &mut eval)? {
                layout.ends[j] = sub[i];
                let r2 = layout.render();
                let (ids2, offs2) = encode_bytes(tok, &r2.text)?;
                if ids2.len() == len {
                    return Ok((layout, r2, ids2, offs2));
                }
                window_ok = false;
                break;
            }
        }
        layout.gap = None;
    }
    if window_ok {
        return Err(DatasetError::Length {
            task: task.into(),
            len,
            detail: "the token count steps over the length at every cut tried".into(),
        });
    }
    // Slow path (no window tokenizes alone as in context): full passes, end cut only.
    let mut eval = |wc: usize| -> Result<usize> {
        layout.ends[j] = wc;
        count(tok, &layout.render().text)
    };
    let first = cand_idx
        .partition_point(|&i| i < i_end.saturating_sub(d))
        .min(cands.len() - 1);
    if let Some(i) = search(&cands, first, len, &mut eval)? {
        layout.ends[j] = cands[i];
        let r2 = layout.render();
        let (ids2, offs2) = encode_bytes(tok, &r2.text)?;
        if ids2.len() == len {
            return Ok((layout, r2, ids2, offs2));
        }
    }
    Err(DatasetError::Length {
        task: task.into(),
        len,
        detail: format!("no cut of a {d}-token overshoot lands on the length"),
    })
}

/// Finds an index of `cands` (ascending cut positions: more hay, never fewer tokens) whose text
/// has `len` tokens: Newton-like steps kept inside the bracket seen so far. `None` when the
/// count steps over `len`.
fn search(
    cands: &[usize],
    start: usize,
    len: usize,
    eval: &mut dyn FnMut(usize) -> Result<usize>,
) -> Result<Option<usize>> {
    if cands.is_empty() {
        return Ok(None);
    }
    // Invariant: the answer, if any, is in lo..=hi.
    let (mut lo, mut hi) = (0usize, cands.len() - 1);
    let mut idx = start.min(hi);
    for _ in 0..48 {
        let n = eval(cands[idx])?;
        if n == len {
            return Ok(Some(idx));
        }
        if n > len {
            if idx == 0 {
                return Ok(None);
            }
            hi = idx - 1;
        } else {
            lo = idx + 1;
        }
        if lo > hi {
            return Ok(None);
        }
        let guess = idx as i64 - (n as i64 - len as i64);
        idx = guess.clamp(lo as i64, hi as i64) as usize;
    }
    Ok(None)
}
