//! The exception classes of the package and the mapping of library errors onto them: bad
//! input, model, bundle, device and rule errors, all under `AttnscopeError`.

use attnscope_analysis::AnalysisError;
use attnscope_core::CoreError;
use attnscope_datasets::{DatasetError, FetchError};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    attnscope,
    AttnscopeError,
    PyException,
    "Every error attnscope raises."
);
create_exception!(
    attnscope,
    BadInput,
    AttnscopeError,
    "An option, a text or a method's parameter was refused (the message names it)."
);
create_exception!(
    attnscope,
    ModelError,
    AttnscopeError,
    "A model could not be fetched, read or run."
);
create_exception!(
    attnscope,
    BundleError,
    AttnscopeError,
    "A run bundle could not be written, or read and verified."
);
create_exception!(
    attnscope,
    DeviceError,
    AttnscopeError,
    "The device asked for is missing or failed."
);
create_exception!(
    attnscope,
    RuleError,
    AttnscopeError,
    "A selection rule written in Python failed (the message names method, layer and head)."
);

/// The class of one library error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Bad,
    Model,
    Bundle,
    Device,
    Rule,
}

fn core_class(e: &CoreError) -> Class {
    match e {
        CoreError::Device(_) | CoreError::Gpu(_) => Class::Device,
        CoreError::Input(_) => Class::Bad,
        _ => Class::Model,
    }
}

/// The class of an error chain: its first typed error decides; plain messages (the command
/// line's option checks) are bad input.
pub fn classify(e: &anyhow::Error) -> Class {
    for cause in e.chain() {
        if let Some(a) = cause.downcast_ref::<AnalysisError>() {
            return match a {
                AnalysisError::Core(c) => core_class(c),
                AnalysisError::File { .. } => Class::Bundle,
                AnalysisError::Method { .. } => Class::Rule,
                _ => Class::Bad,
            };
        }
        if let Some(c) = cause.downcast_ref::<CoreError>() {
            return core_class(c);
        }
        if cause.downcast_ref::<FetchError>().is_some() {
            return Class::Model;
        }
        if let Some(d) = cause.downcast_ref::<DatasetError>() {
            return match d {
                DatasetError::Core(c) => core_class(c),
                _ => Class::Bad,
            };
        }
    }
    Class::Bad
}

/// A Python exception of class `c` with message `msg`.
pub fn raise(c: Class, msg: String) -> PyErr {
    match c {
        Class::Bad => BadInput::new_err(msg),
        Class::Model => ModelError::new_err(msg),
        Class::Bundle => BundleError::new_err(msg),
        Class::Device => DeviceError::new_err(msg),
        Class::Rule => RuleError::new_err(msg),
    }
}

/// The Python exception of an error chain, with the whole chain as its message.
pub fn to_py(e: &anyhow::Error) -> PyErr {
    raise(classify(e), format!("{e:#}"))
}

/// The Python exception of a library error.
pub fn analysis(e: AnalysisError) -> PyErr {
    to_py(&anyhow::Error::new(e))
}

/// Adds the exception classes to the module.
pub fn add(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("AttnscopeError", py.get_type::<AttnscopeError>())?;
    m.add("BadInput", py.get_type::<BadInput>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("BundleError", py.get_type::<BundleError>())?;
    m.add("DeviceError", py.get_type::<DeviceError>())?;
    m.add("RuleError", py.get_type::<RuleError>())?;
    Ok(())
}
