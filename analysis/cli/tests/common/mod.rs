//! Running the `attnscope` binary as a user does, for the CLI-level tests.

use std::process::Command;

/// Runs `attnscope ARGS` with extra environment variables: (success, stdout, stderr).
pub fn attnscope_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_attnscope"));
    c.args(args).env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run attnscope");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `attnscope ARGS`: (success, stdout, stderr).
#[allow(dead_code)] // not every test file uses both
pub fn attnscope(args: &[&str]) -> (bool, String, String) {
    attnscope_env(args, &[])
}
