//! The `attnscope` command-line tool.

fn main() -> anyhow::Result<()> {
    Ok(())
}
