//! Splitting a sweep into disjoint parts. A sweep is the ordered list of a run's inputs (texts x
//! seeds, tasks x lengths x depths, ...), each with its input index; [`Shard`] `K/N` names the
//! K-th of N parts (K from 1). Part K holds the inputs at positions `K-1`, `K-1+N`, `K-1+2N`, ...
//! (round robin, so that every text and seed spreads over the parts), and keeps their indices:
//! the rows of part K hold the same `input` values as in the whole run, so the parts' tables
//! concatenated and sorted by input are the whole run's tables ([`crate::bundle::merge`]).
//!
//! `simulate --shard K/N` runs one part per process; the same split serves any runner that
//! spreads one sweep over several workers (one part per GPU, say).
//!
//! ```
//! use attnscope_analysis::shard::Shard;
//! let s: Shard = "2/3".parse()?;
//! let sweep: Vec<usize> = (0..8).collect();
//! assert_eq!(s.part(&sweep), [&1, &4, &7]);
//! assert!("0/3".parse::<Shard>().is_err() && "4/3".parse::<Shard>().is_err());
//! # Ok::<(), attnscope_analysis::AnalysisError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{AnalysisError, Result};

/// Part `index` (from 1) of `count` disjoint parts of a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    index: usize,
    count: usize,
}

impl Shard {
    /// Part `index` of `count`; refused unless `1 <= index <= count`.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 {
            return Err(AnalysisError::Input(format!(
                "part {index} of {count}: a sweep is split into at least 1 part (K/N with N >= 1)"
            )));
        }
        if index == 0 || index > count {
            return Err(AnalysisError::Input(format!(
                "part {index} of {count} does not exist: K runs from 1 to N (K/N, e.g. 2/4 for \
                 the second of four parts)"
            )));
        }
        Ok(Self { index, count })
    }

    /// K, from 1.
    pub fn index(&self) -> usize {
        self.index
    }

    /// N.
    pub fn count(&self) -> usize {
        self.count
    }

    /// True when the input at `position` of the sweep belongs to this part.
    pub fn holds(&self, position: usize) -> bool {
        position % self.count == self.index - 1
    }

    /// The items of this part of `sweep`, in sweep order: positions `K-1`, `K-1+N`, ... The parts
    /// `1/N` .. `N/N` are disjoint and together hold every item once.
    pub fn part<'a, T>(&self, sweep: &'a [T]) -> Vec<&'a T> {
        sweep
            .iter()
            .enumerate()
            .filter(|(i, _)| self.holds(*i))
            .map(|(_, x)| x)
            .collect()
    }

    /// The positions of this part in a sweep of `n` inputs.
    pub fn positions(&self, n: usize) -> Vec<usize> {
        (self.index - 1..n).step_by(self.count).collect()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = AnalysisError;

    /// `K/N`, e.g. `2/4`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            AnalysisError::Input(format!(
                "'{s}' is not a part K/N of a sweep (two whole numbers, e.g. 2/4 for the second \
                 of four parts; K from 1)"
            ))
        };
        let (k, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let k: usize = k.trim().parse().map_err(|_| bad())?;
        let n: usize = n.trim().parse().map_err(|_| bad())?;
        Self::new(k, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_disjoint_and_cover_the_sweep() {
        for n_inputs in 0..12 {
            let sweep: Vec<usize> = (0..n_inputs).collect();
            for count in 1..6 {
                let mut all: Vec<usize> = Vec::new();
                for k in 1..=count {
                    let s = Shard::new(k, count).expect("shard");
                    let part: Vec<usize> = s.part(&sweep).into_iter().copied().collect();
                    assert_eq!(part, s.positions(n_inputs));
                    all.extend(part);
                }
                all.sort_unstable();
                assert_eq!(all, sweep, "{count} parts of {n_inputs}");
            }
        }
    }

    #[test]
    fn bad_parts_are_named() {
        for (s, want) in [
            ("0/4", "does not exist"),
            ("5/4", "does not exist"),
            ("1/0", "at least 1 part"),
            ("2", "not a part K/N"),
            ("a/4", "not a part K/N"),
            ("-1/4", "not a part K/N"),
            ("1/4/2", "not a part K/N"),
            ("", "not a part K/N"),
        ] {
            let e = s.parse::<Shard>().expect_err(s).to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
        assert_eq!(" 3 / 4 ".parse::<Shard>().expect("ok").to_string(), "3/4");
    }
}
