//! attnscope-viewer: the desktop viewer for run bundles (not built yet: see the viewer issue).

fn main() -> anyhow::Result<()> {
    anyhow::bail!("attnscope-viewer is not implemented yet; see the project's viewer issue")
}
