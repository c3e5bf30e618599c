//! Builds a task's text to an exact token length.
//!
//! Layout: `prefix + hay_0 + needle_1 + hay_1 + ... + needle_k + hay_k + suffix`, where the hay
//! segments are consecutive slices of one window of the haystack text (starting at a paragraph
//! chosen from the seed) and needles sit at sentence boundaries near their requested depths.
//!
//! Tokenization is not additive at the seams, so the length is fitted on the final text:
//! 1. the window is sized from a bytes-per-token estimate plus a small overshoot, and the whole
//!    text is tokenized once (pass A);
//! 2. the overshoot is trimmed from one hay segment (the last one when it is big enough): cut
//!    points are token starts of pass A, and each candidate cut is scored by re-tokenizing only a
//!    window around it whose edges were checked to tokenize the same alone as in context;
//! 3. the final text is tokenized again in full (pass B) and must have exactly `len` tokens; if
//!    not (a seam that the window check missed), the cut is searched again with full passes.

use attnscope_core::tokenizer::Tokenizer;

use crate::error::{DatasetError, Result};
use crate::rng::Rng;
use crate::sample::encode_bytes;
use crate::text::Text;

/// A sentence to insert.
#[derive(Debug, Clone)]
pub(crate) struct NeedleSpec {
    pub text: String,
    pub key: String,
    pub value: String,
    pub target: bool,
    /// Requested position in the haystack, 0..1.
    pub depth: f64,
    /// The answer-bearing substring of `text` (empty: none).
    pub answer_part: String,
}

/// What a task asks the composer for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    pub prefix: String,
    pub suffix: String,
    /// Needles in the order the task lists them (placed by depth; equal depths keep this order).
    pub needles: Vec<NeedleSpec>,
}

/// A fitted text: exactly `len` tokens.
#[derive(Debug, Clone)]
pub(crate) struct Fitted {
    pub text: String,
    pub ids: Vec<u32>,
    pub byte_offsets: Vec<(usize, usize)>,
    /// Per needle of the plan (same order): byte range of its text in `text`.
    pub needle_bytes: Vec<(usize, usize)>,
    /// Per needle: how many hay tokens come before it, over all hay tokens.
    pub needle_depths: Vec<f64>,
    pub warnings: Vec<String>,
}

/// Hay tokens every needle task keeps at least.
pub(crate) const MIN_HAY_TOKENS: usize = 16;

#[derive(Clone)]
struct Layout<'a> {
    w: String,
    /// Insertion points in `w` (sorted), one per needle in layout order.
    cuts: Vec<usize>,
    /// End in `w` of each hay segment (`cuts.len() + 1` of them).
    ends: Vec<usize>,
    prefix: &'a str,
    suffix: &'a str,
    needles: Vec<&'a str>,
    /// Hay left out inside one segment: (segment, start, end) in `w`.
    gap: Option<(usize, usize, usize)>,
}

struct Rendered {
    text: String,
    /// Byte range of each hay segment in `text`.
    segs: Vec<(usize, usize)>,
    /// Byte range of each needle (layout order) in `text`.
    needles: Vec<(usize, usize)>,
}

impl Layout<'_> {
    fn seg_start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.cuts[i - 1]
        }
    }

    /// The hay of segment `i`, in two parts when the gap is inside it.
    fn seg(&self, i: usize) -> (&str, &str) {
        let (a, b) = (self.seg_start(i), self.ends[i]);
        match self.gap {
            Some((j, g0, g1)) if j == i && a <= g0 && g1 <= b => (&self.w[a..g0], &self.w[g1..b]),
            _ => (&self.w[a..b], ""),
        }
    }

    fn render(&self) -> Rendered {
        let mut t =
            String::with_capacity(self.w.len() + self.prefix.len() + self.suffix.len() + 256);
        let mut segs = Vec::with_capacity(self.ends.len());
        let mut needles = Vec::with_capacity(self.cuts.len());
        t.push_str(self.prefix);
        for i in 0..self.ends.len() {
            let (p1, p2) = self.seg(i);
            segs.push((t.len(), t.len() + p1.len() + p2.len()));
            t.push_str(p1);
            t.push_str(p2);
            if let Some(n) = self.needles.get(i) {
                if t.chars().next_back().is_some_and(|c| !c.is_whitespace()) {
                    t.push(' ');
                }
                needles.push((t.len(), t.len() + n.len()));
                t.push_str(n);
                let (n1, n2) = self.seg(i + 1);
                let next = n1.chars().chain(n2.chars()).next();
                if next.is_some_and(|c| !c.is_whitespace()) {
                    t.push(' ');
                }
            }
        }
        t.push_str(self.suffix);
        Rendered {
            text: t,
            segs,
            needles,
        }
    }
}

fn count(tok: &Tokenizer, text: &str) -> Result<usize> {
    Ok(if text.is_empty() {
        0
    } else {
        tok.encode(text)?.len()
    })
}

/// Byte offsets where paragraphs start (after a blank line), the text start included.
pub(crate) fn paragraph_starts(text: &str) -> Vec<usize> {
    let mut out = vec![0];
    let mut prev_blank = false;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let blank = line.trim().is_empty();
        if prev_blank && !blank && pos > 0 {
            out.push(pos);
        }
        prev_blank = blank;
        pos += line.len();
    }
    out
}

fn is_cjk_punct(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '；' | '…')
}

/// The sentence boundary in `w` nearest to byte `t` (searching 4 KiB each way), else the
/// nearest whitespace, else `t` rounded to a character boundary.
pub(crate) fn snap_sentence(w: &str, t: usize) -> usize {
    let t = t.min(w.len());
    if t == 0 || t == w.len() {
        return t;
    }
    let lo = floor_char(w, t.saturating_sub(4096));
    let hi = floor_char(w, (t + 4096).min(w.len()));
    let mut best: Option<usize> = None;
    let mut best_ws: Option<usize> = None;
    let closer = |cur: Option<usize>, p: usize| match cur {
        Some(b) if b.abs_diff(t) <= p.abs_diff(t) => Some(b),
        _ => Some(p),
    };
    let mut prev_final = false; // last non-closing char before p ends a sentence
    let mut prev_cjk = false;
    let mut prev_nl = 0; // consecutive newlines just before p
    for (i, c) in w[lo..hi].char_indices() {
        let p = lo + i;
        if p > lo {
            let ws = c.is_whitespace();
            if (prev_final && (ws || prev_cjk)) || prev_nl >= 2 {
                best = closer(best, p);
            }
            if ws {
                best_ws = closer(best_ws, p);
            }
        }
        if matches!(c, '.' | '!' | '?') || is_cjk_punct(c) {
            prev_final = true;
            prev_cjk = is_cjk_punct(c);
        } else if !matches!(c, '"' | '\'' | '”' | '’' | ')' | '」' | '』') {
            prev_final = false;
            prev_cjk = false;
        }
        prev_nl = if c == '\n' {
            prev_nl + 1
        } else if c.is_whitespace() {
            prev_nl
        } else {
            0
        };
    }
    best.or(best_ws).unwrap_or_else(|| floor_char(w, t))
}

fn floor_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Bytes per token of `text[from..to]`, from four 3 KiB samples spread over it.
fn bytes_per_token(tok: &Tokenizer, text: &str, from: usize, to: usize) -> Result<f64> {
    let span = to.saturating_sub(from);
    let (mut bytes, mut toks) = (0usize, 0usize);
    for k in 0..4 {
        let a = floor_char(text, from + span * k / 4);
        let b = floor_char(text, (a + 3 * 1024).min(to));
        if b > a {
            bytes += b - a;
            toks += count(tok, &text[a..b])?;
        }
    }
    Ok(if toks == 0 {
        4.0
    } else {
        bytes as f64 / toks as f64
    })
}

/// `want` bytes of `text` from `start`, wrapping to the beginning (after a blank line) when the
/// end is reached; the flag says whether text was reused.
fn window(text: &str, start: usize, want: usize) -> (String, bool) {
    let mut w = String::with_capacity(want + 16);
    let mut pos = start;
    let mut wrapped = false;
    while w.len() < want {
        let take = floor_char(text, (pos + (want - w.len())).min(text.len()));
        w.push_str(&text[pos..take]);
        if w.len() >= want || take < text.len() {
            break;
        }
        wrapped = true;
        w.push_str("\n\n");
        pos = 0;
    }
    (w, wrapped)
}

/// Builds `plan` over `hay` to exactly `len` tokens of `tok`.
pub(crate) fn fit(
    tok: &Tokenizer,
    hay: &Text,
    plan: &Plan,
    len: usize,
    seed: u64,
    task: &str,
    repeat: bool,
) -> Result<Fitted> {
    // Needles in layout order (by depth, stable).
    let mut order: Vec<usize> = (0..plan.needles.len()).collect();
    order.sort_by(|&a, &b| plan.needles[a].depth.total_cmp(&plan.needles[b].depth));
    let mut fixed = count(tok, &plan.prefix)? + count(tok, &plan.suffix)?;
    for n in &plan.needles {
        fixed += count(tok, &format!(" {}", n.text))?;
    }
    let min_hay = if plan.needles.is_empty() {
        1
    } else {
        MIN_HAY_TOKENS
    };
    if len < fixed + min_hay {
        return Err(DatasetError::TooShort {
            task: task.into(),
            len,
            min: fixed + min_hay,
        });
    }
    let need = len - fixed;
    let text = &hay.text;
    let bpt0 = bytes_per_token(tok, text, 0, text.len())?;
    let have = (text.len() as f64 / bpt0) as usize;
    let overshoot = 16 + need / 40;
    let want0 = ((need + overshoot) as f64 * bpt0 * 1.1).ceil() as usize + 16;
    let mut rng = Rng::new(seed, "haystack");
    let starts = paragraph_starts(text);
    let fits: Vec<usize> = starts
        .iter()
        .copied()
        .filter(|&p| p + want0 <= text.len())
        .collect();
    let mut warnings = Vec::new();
    let mut last_err = None;
    // A cut that cannot land on the length (e.g. every character two tokens) is retried from
    // another paragraph.
    for start_try in 0..8 {
        let start = if !fits.is_empty() {
            rng.choose(&fits).copied().unwrap_or(0)
        } else if repeat && start_try > 0 {
            rng.choose(&starts).copied().unwrap_or(0)
        } else if start_try == 0 {
            0
        } else {
            break;
        };
        // Token density where the window will be.
        let mut bpt = bytes_per_token(tok, text, start, (start + want0).min(text.len()))?;
        let mut want = ((need + overshoot) as f64 * bpt * 1.04).ceil() as usize + 16;
        if start + want > text.len() && (start + want0 <= text.len() || start == 0) {
            // Use the text to its end before reusing it.
            want = text.len() - start;
        }
        for _attempt in 0..4 {
            let (w, wrapped) = window(&hay.text, start, want);
            if wrapped {
                if !repeat {
                    return Err(DatasetError::HaystackTooShort {
                        source_name: hay.name.clone(),
                        len,
                        need: need + overshoot,
                        have,
                    });
                }
                let msg = format!(
                    "haystack '{}' (about {have} tokens) is shorter than the {need} tokens \
                     needed; its text is reused",
                    hay.name
                );
                if !warnings.contains(&msg) {
                    warnings.push(msg);
                }
            }
            let layout = place(plan, &order, w, need as f64 * bpt);
            let r = layout.render();
            let t0 = std::time::Instant::now();
            let (ids, offs) = encode_bytes(tok, &r.text)?;
            if std::env::var_os("ATTNSCOPE_DEBUG_FIT").is_some() {
                eprintln!("pass A {} tokens {:?}", ids.len(), t0.elapsed());
            }
            if ids.len() < len {
                // Too little hay: re-estimate from what pass A saw and widen the window.
                let hay_bytes: usize = r.segs.iter().map(|s| s.1 - s.0).sum();
                let hay_toks = ids.len().saturating_sub(fixed).max(1);
                bpt = bpt.max(hay_bytes as f64 / hay_toks as f64);
                want = layout.w.len()
                    + ((len - ids.len() + overshoot) as f64 * bpt * 1.5) as usize
                    + 64;
                continue;
            }
            let fitted = if ids.len() == len {
                Ok((layout, r, ids, offs))
            } else {
                trim(tok, layout, r, &ids, &offs, len, task)
            };
            match fitted {
                Ok((layout, r, ids, offs)) => {
                    return Ok(finish(plan, &order, layout, r, ids, offs, warnings))
                }
                Err(e @ DatasetError::Length { .. }) => {
                    last_err = Some(e);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Err(last_err.unwrap_or_else(|| DatasetError::Length {
        task: task.into(),
        len,
        detail: "the haystack window stayed too short".into(),
    }))
}

/// Lays the needles out over window `w` at their depths of the first `target_bytes`.
fn place<'a>(plan: &'a Plan, order: &[usize], w: String, target_bytes: f64) -> Layout<'a> {
    let target_bytes = target_bytes.min(w.len() as f64);
    let mut cuts: Vec<usize> = Vec::with_capacity(order.len());
    for &i in order {
        let at = (plan.needles[i].depth.clamp(0.0, 1.0) * target_bytes) as usize;
        let p = snap_sentence(&w, at).max(cuts.last().copied().unwrap_or(0));
        cuts.push(p);
    }
    let mut ends: Vec<usize> = cuts.clone();
    ends.push(w.len());
    Layout {
        w,
        cuts,
        ends,
        prefix: &plan.prefix,
        suffix: &plan.suffix,
        needles: order
            .iter()
            .map(|&i| plan.needles[i].text.as_str())
            .collect(),
        gap: None,
    }
}

fn finish(
    plan: &Plan,
    order: &[usize],
    _layout: Layout<'_>,
    r: Rendered,
    ids: Vec<u32>,
    offs: Vec<(usize, usize)>,
    warnings: Vec<String>,
) -> Fitted {
    let in_hay = |b: usize| r.segs.iter().any(|s| b >= s.0 && b < s.1);
    let hay_total = offs.iter().filter(|o| in_hay(o.0)).count().max(1);
    let mut needle_bytes = vec![(0, 0); plan.needles.len()];
    let mut needle_depths = vec![0.0; plan.needles.len()];
    for (li, &pi) in order.iter().enumerate() {
        let nb = r.needles[li];
        needle_bytes[pi] = nb;
        let before = offs.iter().filter(|o| o.0 < nb.0 && in_hay(o.0)).count();
        needle_depths[pi] = before as f64 / hay_total as f64;
    }
    Fitted {
        text: r.text,
        ids,
        byte_offsets: offs,
        needle_bytes,
        needle_depths,
        warnings,
    }
}

type Trimmed<'a> = (Layout<'a>, Rendered, Vec<u32>, Vec<(usize, usize)>);

/// Trims hay so that the text has exactly `len` tokens (pass A had more): from the last hay
/// segment when it holds the overshoot; else the last segment is dropped (its needle then ends
/// the haystack, as a depth near 1 asks) and the rest comes out of the largest segment.
fn trim<'a>(
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
    if std::env::var_os("ATTNSCOPE_DEBUG_FIT").is_some() {
        eprintln!(
            "trim_segment j={j} d={d} total={total} segs={:?} needles={:?} ends={:?} cuts={:?}",
            r.segs, r.needles, layout.ends, layout.cuts
        );
    }
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
    let debug = std::env::var_os("ATTNSCOPE_DEBUG_FIT").is_some();
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
        let mut drops: Vec<Option<(usize, usize)>> = vec![None];
        drops.extend(
            bounds
                .windows(2)
                .filter(|w| w[1] - w[0] + 2 <= d)
                .take(6)
                .map(|w| Some((w[0], w[1]))),
        );
        for drop in drops {
            let (g1, removed) = match drop {
                Some((k0, k1)) => {
                    layout.gap = Some((j, offs[k0].0 - sa + w0, offs[k1].0 - sa + w0));
                    (offs[k1].0, k1 - k0)
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
                if debug {
                    eprintln!("window count missed: final pass {} tokens", ids2.len());
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
    if debug {
        eprintln!("slow path (window found: {})", found.is_some());
    }
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
