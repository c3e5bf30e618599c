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

/// Runs `attnscope simulate` on the real SmolLM2 and alice29 with `len` tokens, `layers` and
/// `methods`, quietly, plus `extra` options: (success, stdout, stderr).
#[allow(dead_code)] // not every test file uses it
pub fn simulate_smollm2(
    len: &str,
    layers: &str,
    methods: &str,
    extra: &[&str],
) -> (bool, String, String) {
    let mut args = vec![
        "simulate",
        "--model",
        "smollm2-135m",
        "--text",
        "alice29",
        "--len",
        len,
        "--layers",
        layers,
        "--methods",
        methods,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    attnscope(&args)
}
