//! The `attnscope` command-line tool (being wired up).

fn main() -> anyhow::Result<()> {
    Ok(())
}
