//! The `voicewatch` binary: a thin CLI that composes the crates.

fn main() -> anyhow::Result<()> {
    Ok(())
}
