//! Haystack text utilities: paragraph and sentence starts, the seeded window, token density.

use attnscope_core::tokenizer::Tokenizer;

use crate::error::Result;

/// Tokens in `text` (0 for empty text).
pub(super) fn count(tok: &Tokenizer, text: &str) -> Result<usize> {
    Ok(if text.is_empty() {
        0
    } else {
        tok.encode(text)?.len()
    })
}

/// Byte offsets where paragraphs start (after a blank line), the text start included.
pub(super) fn paragraph_starts(text: &str) -> Vec<usize> {
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

/// Byte offsets of sentence starts: the first non-space character after `. ! ? 。 ！ ？ ；` or a
/// line break.
pub(super) fn sentence_starts(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut after_end = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            after_end |= c == '\n';
            continue;
        }
        if after_end {
            out.push(i);
        }
        after_end = matches!(c, '.' | '!' | '?') || is_cjk_punct(c);
    }
    out
}

fn is_cjk_punct(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '；' | '…')
}

/// The sentence boundary in `w` nearest to byte `t` (searching 4 KiB each way), else the
/// nearest whitespace, else `t` rounded to a character boundary.
pub(super) fn snap_sentence(w: &str, t: usize) -> usize {
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

pub(super) fn floor_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Bytes per token of `text[from..to]`, from four 3 KiB samples spread over it.
pub(super) fn bytes_per_token(tok: &Tokenizer, text: &str, from: usize, to: usize) -> Result<f64> {
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
pub(super) fn window(text: &str, start: usize, want: usize) -> (String, bool) {
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
