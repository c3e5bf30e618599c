//! The one table of methods: name, paper, kind, parameters and constructor. The CLI, the viewer,
//! the export columns and the invariant test matrix all read [`METHODS`]; rules registered at run
//! time ([`register`], e.g. Python functions) are listed after them by [`all`] and found by
//! [`find`] and [`parse_list`].

use std::sync::RwLock;

use crate::error::{AnalysisError, Result};
pub use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use crate::methods;

/// Every registered method, in report order.
pub static METHODS: &[MethodInfo] = methods::ALL;

/// Rules registered at run time, in registration order.
static USER: RwLock<Vec<&'static MethodInfo>> = RwLock::new(Vec::new());

fn user_rows() -> Vec<&'static MethodInfo> {
    USER.read()
        .map(|r| r.clone())
        .unwrap_or_else(|e| e.into_inner().clone())
}

/// Adds a rule defined outside the library (kind [`MethodKind::User`]) to the table, or
/// replaces the rule registered earlier under the same name. A built-in method's name is
/// refused, and so is a name that could not be given on a command line.
pub fn register(info: MethodInfo) -> Result<&'static MethodInfo> {
    let bad = |msg: String| {
        Err(AnalysisError::Param {
            method: info.name.to_string(),
            msg,
        })
    };
    if METHODS.iter().any(|m| m.name == info.name) {
        return bad("a built-in method has this name; choose another".into());
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if info.name.is_empty() || info.name == "all" || !info.name.chars().all(valid) {
        return bad("a method name is letters, digits, '-', '_' or '.' (and not 'all')".into());
    }
    let row: &'static MethodInfo = Box::leak(Box::new(info));
    let mut user = USER.write().unwrap_or_else(|e| e.into_inner());
    match user.iter_mut().find(|m| m.name == row.name) {
        Some(slot) => *slot = row,
        None => user.push(row),
    }
    Ok(row)
}

/// The built-in methods, then the rules registered at run time.
pub fn all() -> Vec<&'static MethodInfo> {
    METHODS.iter().chain(user_rows()).collect()
}

/// The method whose reached sparsity defines a top-p budget (`--top-p P`: every method is
/// matched to the sparsity exact top-p over the true attention reaches at `P`).
pub fn top_p_reference() -> Result<Box<dyn crate::method::Selector>> {
    find("oracle-topp")?.build_with(&[])
}

/// Looks a method up by name (built-in or registered at run time).
pub fn find(name: &str) -> Result<&'static MethodInfo> {
    if let Some(m) = METHODS.iter().find(|m| m.name == name) {
        return Ok(m);
    }
    user_rows()
        .into_iter()
        .find(|m| m.name == name)
        .ok_or_else(|| AnalysisError::UnknownMethod {
            name: name.to_string(),
            valid: names().join(", "),
        })
}

/// All method names.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|m| m.name).collect()
}

/// Parses `"all"` or a comma-separated list of method names.
pub fn parse_list(spec: &str) -> Result<Vec<&'static MethodInfo>> {
    if spec == "all" {
        return Ok(all());
    }
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(find)
        .collect()
}
