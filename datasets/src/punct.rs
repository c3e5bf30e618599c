//! Punctuation masks over decoded token pieces (the rule of `shared/METHODS.md`).
//!
//! A token is punctuation when its decoded text, stripped of whitespace, is non-empty and made
//! only of Unicode punctuation (general categories `Pc Pd Ps Pe Pi Pf Po`: ASCII `. , ; : ! ? " '
//! ( ) - ...` and CJK `。，；：！？、「」…`). Two switches:
//! - `newlines` (default on): a token made only of whitespace that holds at least one line break
//!   (`\n`, `\r\n`, `"  \n"`, `"\n\n"`) also counts as punctuation;
//! - `symbols` (default off): Unicode symbols (`S*`: `$ + < = > ^ ` | ~ © °`) count as
//!   punctuation too. ASCII `$+<=>^`|~` are symbols in Unicode, so they are *not* punctuation
//!   by default.
//!
//! A byte-level token that holds only part of a UTF-8 sequence decodes to U+FFFD, so by the rule
//! it is not punctuation, even when the character it is part of is (SmolLM2 splits `；？！` into
//! two byte tokens each). `partial_chars` (default off) flags such a token when every character
//! it overlaps is punctuation; it needs the text and offsets, so it applies where samples are
//! built ([`punct_mask_in_text`], used by [`crate::sample::Tokenized`]), not in
//! [`is_punct_piece`].
//!
//! ```
//! use attnscope_datasets::punct::{is_punct_piece, PunctOptions};
//! let o = PunctOptions::default();
//! assert!(is_punct_piece(" ,", &o));
//! assert!(is_punct_piece("。", &o));
//! assert!(is_punct_piece("\n\n", &o));
//! assert!(!is_punct_piece(" the", &o));
//! assert!(!is_punct_piece(" ", &o));
//! assert!(!is_punct_piece("\n", &PunctOptions { newlines: false, ..o }));
//! ```

use serde::{Deserialize, Serialize};
use unicode_categories::UnicodeCategories;

/// Which tokens count as punctuation beyond Unicode `P*` characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PunctOptions {
    /// Whitespace-only tokens holding a line break count as punctuation (default on).
    pub newlines: bool,
    /// Unicode symbols (`S*`) count as punctuation (default off).
    pub symbols: bool,
    /// A token that decodes to U+FFFD (part of a multi-byte character) counts when the
    /// characters it overlaps are all punctuation (default off).
    #[serde(default)]
    pub partial_chars: bool,
}

impl Default for PunctOptions {
    fn default() -> Self {
        Self {
            newlines: true,
            symbols: false,
            partial_chars: false,
        }
    }
}

/// True when `c` is Unicode punctuation (or a symbol, when `symbols` is on; U+FFFD, the
/// stand-in for a partial UTF-8 sequence, never counts).
pub fn is_punct_char(c: char, opts: &PunctOptions) -> bool {
    c.is_punctuation() || (opts.symbols && c.is_symbol() && c != '\u{FFFD}')
}

/// True when the decoded token text `piece` is punctuation under `opts`.
pub fn is_punct_piece(piece: &str, opts: &PunctOptions) -> bool {
    let core = piece.trim();
    if core.is_empty() {
        return opts.newlines && piece.contains(['\n', '\r', '\u{2028}', '\u{2029}', '\u{85}']);
    }
    all_punct(core, opts)
}

/// True when every character of `s` is whitespace or punctuation under `opts`.
fn all_punct(s: &str, opts: &PunctOptions) -> bool {
    s.chars()
        .all(|c| c.is_whitespace() || is_punct_char(c, opts))
}

/// The punctuation flag of every piece.
pub fn punct_mask<S: AsRef<str>>(pieces: &[S], opts: &PunctOptions) -> Vec<bool> {
    pieces
        .iter()
        .map(|p| is_punct_piece(p.as_ref(), opts))
        .collect()
}

/// The punctuation flag of every token of `text`, from its decoded `pieces` and their byte
/// ranges `byte_offsets` in `text`: [`punct_mask`], plus the `partial_chars` rule (a piece that
/// decodes to U+FFFD counts when the characters its bytes overlap are all punctuation), which
/// needs the text. Without `partial_chars` this is exactly [`punct_mask`].
pub fn punct_mask_in_text<S: AsRef<str>>(
    pieces: &[S],
    text: &str,
    byte_offsets: &[(usize, usize)],
    opts: &PunctOptions,
) -> Vec<bool> {
    let mut mask = punct_mask(pieces, opts);
    if !opts.partial_chars {
        return mask;
    }
    for (i, p) in pieces.iter().enumerate() {
        if mask[i] || !p.as_ref().contains('\u{FFFD}') {
            continue;
        }
        let Some(&(s, e)) = byte_offsets.get(i) else {
            continue;
        };
        // Widen the byte range to whole characters.
        let mut s = s.min(text.len());
        while !text.is_char_boundary(s) {
            s -= 1;
        }
        let mut e = e.clamp(s, text.len());
        while !text.is_char_boundary(e) {
            e += 1;
        }
        let covered = &text[s..e];
        mask[i] = !covered.is_empty() && all_punct(covered, opts);
    }
    mask
}

/// Fraction of flagged tokens (0 for an empty mask).
pub fn punct_rate(mask: &[bool]) -> f64 {
    if mask.is_empty() {
        return 0.0;
    }
    mask.iter().filter(|&&m| m).count() as f64 / mask.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_chars_flags_byte_pieces_of_punctuation() {
        // `；` is three bytes, split into two byte-level pieces that decode to U+FFFD.
        let text = "a；b";
        let pieces = ["a", "\u{FFFD}", "\u{FFFD}", "b"];
        let offsets = [(0, 1), (1, 3), (3, 4), (4, 5)];
        let o = PunctOptions::default();
        assert_eq!(
            punct_mask_in_text(&pieces, text, &offsets, &o),
            punct_mask(&pieces, &o)
        );
        let partial = PunctOptions {
            partial_chars: true,
            ..o
        };
        assert_eq!(
            punct_mask_in_text(&pieces, text, &offsets, &partial),
            [false, true, true, false]
        );
    }
}
