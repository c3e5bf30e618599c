//! A method's row in the registry: name, paper, kind, parameters and constructor.

use std::collections::BTreeMap;

use super::Selector;
use crate::error::{AnalysisError, Result};

/// Where a method comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodKind {
    /// A published method, implemented from its paper and public code.
    Published,
    /// A stand-in for a method whose trained parts do not exist here (named `*-proxy`).
    Proxy,
    /// An upper bound computed from the true attention.
    Oracle,
    /// A variant of our own (labelled as ours everywhere).
    Ours,
    /// A rule registered at run time by a user of the library (e.g. a Python function, see
    /// [`crate::registry::register`]).
    User,
}

impl MethodKind {
    /// The kind as the manifest and reports write it: `published`, `proxy`, `oracle` or `ours`.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodKind::Published => "published",
            MethodKind::Proxy => "proxy",
            MethodKind::Oracle => "oracle",
            MethodKind::Ours => "ours",
            MethodKind::User => "user",
        }
    }
}

/// One numeric method parameter (booleans are 0/1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamSpec {
    pub name: &'static str,
    pub default: f64,
    pub min: f64,
    pub max: f64,
    pub integer: bool,
    pub help: &'static str,
}

/// One row of the method table.
#[derive(Debug, Clone, Copy)]
pub struct MethodInfo {
    pub name: &'static str,
    pub kind: MethodKind,
    /// Paper reference (authors, title, venue/arXiv id).
    pub paper: &'static str,
    /// The selection rule in one line.
    pub rule: &'static str,
    pub params: &'static [ParamSpec],
    pub build: fn(&Params) -> Box<dyn Selector>,
}

/// Resolved parameter values of one method (defaults overridden by the user).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Params {
    values: BTreeMap<&'static str, f64>,
}

impl Params {
    /// The value of parameter `name` (0 for a name the method does not declare: a method bug).
    pub fn get(&self, name: &str) -> f64 {
        self.values.get(name).copied().unwrap_or(0.0)
    }

    /// The value as a count.
    pub fn count(&self, name: &str) -> usize {
        self.get(name).max(0.0).round() as usize
    }

    /// The value as a flag.
    pub fn flag(&self, name: &str) -> bool {
        self.get(name) != 0.0
    }

    /// All values, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        self.values.iter().map(|(k, v)| (*k, *v))
    }
}

impl MethodInfo {
    /// Parameters at their defaults, with `overrides` applied and checked.
    pub fn params(&self, overrides: &[(String, f64)]) -> Result<Params> {
        let mut values: BTreeMap<&'static str, f64> =
            self.params.iter().map(|p| (p.name, p.default)).collect();
        for (k, v) in overrides {
            let spec = self.params.iter().find(|p| p.name == k).ok_or_else(|| {
                let valid: Vec<&str> = self.params.iter().map(|p| p.name).collect();
                AnalysisError::Param {
                    method: self.name.into(),
                    msg: format!("unknown parameter '{k}'; valid: {}", valid.join(", ")),
                }
            })?;
            if !(spec.min..=spec.max).contains(v) || (spec.integer && v.fract() != 0.0) {
                return Err(AnalysisError::Param {
                    method: self.name.into(),
                    msg: format!(
                        "{k} = {v} is out of range [{}, {}]{}",
                        spec.min,
                        spec.max,
                        if spec.integer { " (integer)" } else { "" }
                    ),
                });
            }
            values.insert(spec.name, *v);
        }
        Ok(Params { values })
    }

    /// The method configured for a run: built with `overrides`, labelled by its name.
    pub fn configure(&'static self, overrides: &[(String, f64)]) -> Result<super::MethodRun> {
        Ok(super::MethodRun {
            label: self.name.to_string(),
            info: self,
            overrides: overrides.to_vec(),
            selector: self.build_with(overrides)?,
        })
    }

    /// Where the method runs at its defaults on a long input: `cpu`, or `cpu, cuda` when it
    /// declares a device scoring ([`super::Selector::device_scoring`]).
    pub fn devices(&self) -> &'static str {
        let on_device = self
            .build_with(&[])
            .is_ok_and(|m| m.device_scoring(1 << 20).is_some());
        if on_device {
            "cpu, cuda"
        } else {
            "cpu"
        }
    }

    /// Builds the method with `overrides` applied.
    pub fn build_with(&self, overrides: &[(String, f64)]) -> Result<Box<dyn Selector>> {
        Ok((self.build)(&self.params(overrides)?))
    }
}
