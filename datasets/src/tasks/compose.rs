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
//!    window around it whose edges were checked to tokenize the same alone as in context
//!    ([`super::trim`]). Counts grow monotonically with the cut but may step over the length
//!    (SmolLM2 spends two tokens on most CJK characters); then one sentence inside the window
//!    (or the first tokens of a short segment) is left out as well, which moves the cut;
//! 3. the final text is tokenized again in full (pass B) and must have exactly `len` tokens; if
//!    not (a seam that the window check missed), the cut is searched again with full passes;
//!    when nothing lands, the whole fit is retried from another paragraph (then from any
//!    sentence start), up to 8 times, deterministically from the seed.

use attnscope_core::tokenizer::Tokenizer;

use super::hay::{
    bytes_per_token, count, paragraph_starts, sentence_starts, snap_sentence, window,
};
use super::layout::{Layout, Rendered};
use super::trim::trim;
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

/// Where the haystack window of [`fit`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// A paragraph (then a sentence) chosen from the seed.
    Seeded,
    /// Byte `byte` of the haystack. `explicit` (the caller's offset): no other start is tried;
    /// otherwise (the default top of the text) a failed fit falls back to [`Start::Seeded`].
    Fixed { byte: usize, explicit: bool },
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
    /// Byte offset in the haystack text where the window started.
    pub start_byte: usize,
    /// Whether the window ran past the end of the haystack and continued from its top.
    pub repeated: bool,
}

/// Starts tried from a [`Start::Fixed`] (the given character and the next ones) before giving up
/// (explicit) or falling back to seeded paragraphs.
const FIXED_TRIES: usize = 4;

/// Hay tokens every needle task keeps at least.
pub(crate) const MIN_HAY_TOKENS: usize = 16;

/// Builds `plan` over `hay` to exactly `len` tokens of `tok`.
pub(crate) fn fit(
    tok: &Tokenizer,
    hay: &Text,
    plan: &Plan,
    len: usize,
    seed: u64,
    task: &str,
    repeat: bool,
    start_at: Start,
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
    // another paragraph, and after three tries from any sentence start.
    let mut sentence_fits = Vec::new();
    for start_try in 0..8 {
        if start_try == 3 {
            sentence_fits = sentence_starts(text)
                .into_iter()
                .filter(|&p| p + want0 <= text.len())
                .collect();
        }
        // A fixed start is tried as given, then a character later (up to FIXED_TRIES - 1
        // characters): one character moves which cuts land (SmolLM2 spends two tokens on most CJK
        // characters). The caller records the start actually used.
        let fixed_start = match start_at {
            Start::Fixed { byte, .. } if start_try < FIXED_TRIES => text
                .get(byte..)
                .and_then(|rest| rest.char_indices().nth(start_try))
                .map(|(b, _)| byte + b),
            Start::Fixed { explicit: true, .. } => break,
            _ => None,
        };
        if fixed_start.is_none() && start_try < FIXED_TRIES && start_at != Start::Seeded {
            // The text ends within the next characters: no more fixed starts.
            continue;
        }
        let start = if let Some(b) = fixed_start {
            b
        } else if start_try >= 3 && !sentence_fits.is_empty() {
            rng.choose(&sentence_fits).copied().unwrap_or(0)
        } else if !fits.is_empty() {
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
        if start + want > text.len()
            && (start + want0 <= text.len() || start == 0 || fixed_start.is_some())
        {
            // Use the text to its end before reusing it.
            want = text.len() - start;
        }
        for _attempt in 0..4 {
            let (w, wrapped) = window(&hay.text, start, want);
            if wrapped {
                let from = text[..start].chars().count();
                if !repeat {
                    if start > 0 && matches!(start_at, Start::Fixed { explicit: true, .. }) {
                        return Err(DatasetError::Param(format!(
                            "--offset {from}: the text of '{}' from character {from} to its end \
                             is shorter than the {need} tokens needed; use a smaller offset, or \
                             let it continue from the top of the text (leave out --no-repeat)",
                            hay.name
                        )));
                    }
                    return Err(DatasetError::HaystackTooShort {
                        source_name: hay.name.clone(),
                        len,
                        need: need + overshoot,
                        have,
                    });
                }
                let msg = if start > 0 && have > need + overshoot {
                    format!(
                        "the text of '{}' from character {from} to its end is shorter than the \
                         {need} tokens needed; it continues from the top of the text",
                        hay.name
                    )
                } else {
                    format!(
                        "haystack '{}' (about {have} tokens) is shorter than the {need} tokens \
                         needed; its text is reused",
                        hay.name
                    )
                };
                if !warnings.contains(&msg) {
                    warnings.push(msg);
                }
            }
            let layout = place(plan, &order, w, need as f64 * bpt);
            let r = layout.render();
            let (ids, offs) = encode_bytes(tok, &r.text)?;
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
                    let mut f = finish(plan, &order, layout, r, ids, offs, warnings);
                    f.start_byte = start;
                    f.repeated = wrapped;
                    return Ok(f);
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
        start_byte: 0,
        repeated: false,
    }
}
