//! Calls into libraries that panic on some malformed input (the `tokenizers` deserializers, the
//! Arrow and Parquet readers), contained: [`catch_quietly`] turns such a panic into an error
//! message and prints nothing for it, so a damaged file gives one clear error, never a panic
//! message or a crash.

use std::cell::Cell;
use std::sync::Once;

thread_local! {
    /// Set while this thread runs a call inside [`catch_quietly`].
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
}

/// Installs (once per process) a panic hook that stays silent for a panic inside
/// [`catch_quietly`] on its thread and passes every other panic to the hook installed before.
fn quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINED.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `f`; a panic inside it becomes `Err(its message)` and prints nothing.
pub fn catch_quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    quiet_hook();
    let was = CONTAINED.with(|c| c.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(was));
    r.map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "no message".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_and_results_pass_through() {
        assert_eq!(catch_quietly(|| 7), Ok(7));
        let r: Result<(), String> = catch_quietly(|| panic!("bad offset {}", 3));
        assert_eq!(r, Err("bad offset 3".to_string()));
        // Nested calls restore the outer state.
        let outer = catch_quietly(|| {
            let inner: Result<(), String> = catch_quietly(|| panic!("inner"));
            assert!(inner.is_err());
            CONTAINED.with(Cell::get)
        });
        assert_eq!(outer, Ok(true));
        assert!(!CONTAINED.with(Cell::get));
    }
}
