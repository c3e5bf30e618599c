//! The `attnscope` command-line tool: fetch real models and corpora through the package
//! registries, inspect models, run exact forward passes, and simulate sparse-attention methods.

use attnscope_cli::Cli;
use clap::Parser;

/// mimalloc instead of the system allocator: the simulator's layer jobs allocate and free large
/// per-row buffers on many threads at once; glibc (even with its thresholds raised) spent 3x the
/// system time of mimalloc on a layer replay (BENCHMARKS.md, Simulator).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` of mimalloc.h (v3, the version the crate builds): how long freed
/// memory stays mapped before it is given back to the system (-1: never).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped for reuse instead of giving it back after a second (mimalloc's
/// default): the simulator frees and allocates the same large per-head buffers layer after layer,
/// and every purge meant page faults and zeroing for the next one (twice the system time of a
/// layer replay). The peak footprint is unchanged: freed memory is reused, never added to.
/// `MIMALLOC_PURGE_DELAY` in the environment wins (mimalloc reads it itself).
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets a plain integer option of the allocator; any value is valid.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// A closed pipe (`attnscope methods | head`) ends the program quietly, as for other command-line
/// tools, instead of a panic in `println!`.
fn quiet_broken_pipe() {
    // SAFETY: restores the default action of one signal before any thread is started.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

fn main() -> anyhow::Result<()> {
    quiet_broken_pipe();
    tune_allocator();
    // Matrix products are split over rayon's threads (`attnscope_core::ops::matmul_t`) and the
    // simulator runs many small products inside parallel loops: matrixmultiply's own pool (at
    // most 4 threads, shared by all callers) would only contend with them.
    if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
        std::env::set_var("MATMUL_NUM_THREADS", "1");
    }
    attnscope_cli::dispatch(Cli::parse(), std::env::args().collect())
}

#[cfg(test)]
mod tests {
    /// The option number names mimalloc's purge delay: its default in v3 is 1000 ms (unless the
    /// environment sets it; `main`, which sets it, does not run here).
    #[test]
    fn purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads a plain integer option.
        let v = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(v, 1000);
    }
}
