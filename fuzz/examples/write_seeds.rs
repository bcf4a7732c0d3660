//! Writes the seed corpus of every fuzz target: `write-seeds [DIR]` (default `corpus`) creates
//! `DIR/<target>/seed-<n>` from frames built by `tether-protocol` itself.
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    for (target, seeds) in tether_fuzz::targets::all_seeds() {
        let target_dir = dir.join(target);
        std::fs::create_dir_all(&target_dir)?;
        for (n, seed) in seeds.iter().enumerate() {
            std::fs::write(target_dir.join(format!("seed-{n}")), seed)?;
        }
        println!("{target}: {} seeds in {}", seeds.len(), target_dir.display());
    }
    Ok(())
}
