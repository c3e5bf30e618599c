//! Punctuation masks: the rule of shared/METHODS.md checked against a simple independent check
//! over decoded pieces on English and Chinese text, plus the punctuation rates we report.

mod common;

use attnscope_core::tokenizer::Tokenizer;
use attnscope_datasets::punct::{is_punct_piece, punct_mask, PunctOptions};
use attnscope_datasets::sample::Tokenized;

/// Unicode P* characters written out by hand (ASCII and the CJK/typographic ones that occur in
/// our corpora), independent of any Unicode table.
const ASCII_P: &str = "!\"#%&'()*,-./:;?@[\\]_{}";
const OTHER_P: &str = "。，、；：！？「」『』（）《》〈〉【】〔〕—–…·‘’“”＠＃";

fn simple_is_punct(piece: &str) -> bool {
    let core: String = piece.chars().filter(|c| !c.is_whitespace()).collect();
    if core.is_empty() {
        return piece.contains('\n') || piece.contains('\r');
    }
    core.chars()
        .all(|c| ASCII_P.contains(c) || OTHER_P.contains(c))
}

#[test]
fn rule_examples() {
    let o = PunctOptions::default();
    for p in [
        ".", " ,", "!\n\n", ",\"", "。", "，", "」", "……", "——", "\n", "\r\n", "  \n", " (", "_",
    ] {
        assert!(is_punct_piece(p, &o), "{p:?}");
    }
    for p in [
        " the", "Alice", " ", "", "\t", "$", "+", " =", "~", "1", "a.", "�", "～", "中",
    ] {
        assert!(!is_punct_piece(p, &o), "{p:?}");
    }
    let no_nl = PunctOptions {
        newlines: false,
        ..o
    };
    assert!(!is_punct_piece("\n\n", &no_nl));
    assert!(is_punct_piece(".\n", &no_nl));
    let sym = PunctOptions { symbols: true, ..o };
    assert!(is_punct_piece(" $", &sym) && is_punct_piece("～", &sym) && !is_punct_piece("a", &sym));
}

fn check_agreement(tok: &Tokenizer, text: &str, what: &str) -> (usize, usize) {
    let t = Tokenized::from_text(tok, text, &PunctOptions::default()).expect("tokenize");
    let mut flagged = 0;
    let mut differ = Vec::new();
    for (p, &m) in t.pieces.iter().zip(&t.punct) {
        if m != simple_is_punct(p) && differ.len() < 10 {
            differ.push((p.clone(), m));
        }
        flagged += usize::from(m);
    }
    assert!(
        differ.is_empty(),
        "{what}: pieces where the mask differs: {differ:?}"
    );
    let no_nl = punct_mask(
        &t.pieces,
        &PunctOptions {
            newlines: false,
            ..Default::default()
        },
    );
    assert!(no_nl.iter().zip(&t.punct).all(|(a, b)| !a || *b));
    let sym = punct_mask(
        &t.pieces,
        &PunctOptions {
            symbols: true,
            ..Default::default()
        },
    );
    let partial = PunctOptions {
        partial_chars: true,
        ..Default::default()
    };
    let t2 = Tokenized::from_text(tok, text, &partial).expect("tokenize");
    assert!(t.punct.iter().zip(&t2.punct).all(|(a, b)| !a || *b));
    let f_part = t2.punct.iter().filter(|&&m| m).count();
    let f_sym = sym.iter().filter(|&&m| m).count();
    let f_nonl = no_nl.iter().filter(|&&m| m).count();
    let n = t.ids.len() as f64;
    println!(
        "RATE {what}: {flagged}/{} tokens = {:.2}% (without newline tokens {:.2}%, with symbols \
         {:.2}%, with partial chars {:.2}%)",
        t.ids.len(),
        100.0 * flagged as f64 / n,
        100.0 * f_nonl as f64 / n,
        100.0 * f_sym as f64 / n,
        100.0 * f_part as f64 / n
    );
    (flagged, t.ids.len())
}

#[test]
fn masks_agree_with_an_independent_check_and_rates() {
    let sanguo = common::sanguo();
    let alice = common::english("alice29");
    for (tname, tok) in common::tokenizers() {
        check_agreement(tok, &sanguo.text, &format!("sanguo {tname}"));
        if let Some(a) = &alice {
            let (f, n) = check_agreement(tok, &a.text, &format!("alice29 {tname}"));
            let rate = f as f64 / n as f64;
            assert!((0.05..0.4).contains(&rate), "{tname} alice29 rate {rate}");
        }
    }
}

#[test]
fn chinese_punctuation_is_found() {
    let tok = common::smollm2();
    let t = Tokenized::from_text(
        tok,
        "滚滚长江东逝水，浪花淘尽英雄。是非成败转头空。\n「曹操」：“好！”",
        &PunctOptions::default(),
    )
    .expect("tok");
    let flagged: Vec<&str> = t
        .pieces
        .iter()
        .zip(&t.punct)
        .filter(|(_, &m)| m)
        .map(|(p, _)| p.as_str())
        .collect();
    for p in ["，", "。", "\n"] {
        assert!(flagged.contains(&p), "{p} in {flagged:?}");
    }
    // Character offsets point at the token's text.
    let text = "滚滚长江东逝水，浪花";
    let t = Tokenized::from_text(tok, text, &PunctOptions::default()).expect("tok");
    let chars: Vec<char> = text.chars().collect();
    for (p, o) in t.pieces.iter().zip(&t.offsets) {
        if !p.contains('\u{FFFD}') {
            let s: String = chars[o.start..o.end].iter().collect();
            assert_eq!(&s, p);
        }
    }
}

#[test]
fn partial_byte_tokens_of_punctuation() {
    // SmolLM2 splits '；' into two byte tokens that decode to U+FFFD.
    let tok = common::smollm2();
    let text = "是非；成败";
    let plain = Tokenized::from_text(tok, text, &PunctOptions::default()).expect("tok");
    let partial = PunctOptions {
        partial_chars: true,
        ..Default::default()
    };
    let t = Tokenized::from_text(tok, text, &partial).expect("tok");
    let chars: Vec<char> = text.chars().collect();
    let mut seen = 0;
    for ((p, o), (&a, &b)) in t
        .pieces
        .iter()
        .zip(&t.offsets)
        .zip(plain.punct.iter().zip(&t.punct))
    {
        let covered: String = chars[o.start..o.end].iter().collect();
        if covered == "；" {
            seen += 1;
            assert!(p.contains('\u{FFFD}') || p == "；", "{p:?}");
            assert!(b, "{p:?} flagged with partial_chars");
            assert_eq!(a, p == "；");
        } else {
            assert!(!b, "{covered:?}");
        }
    }
    assert!(seen >= 1);
}
