//! Tidy checks on the source tree: every Rust module opens with a `//!` line saying what it is,
//! and no product code carries `todo!`/`unimplemented!` stubs.
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn all_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for krate in ["shared", "manager", "delegate", "tests"] {
        rust_files(&root().join(krate), &mut files);
    }
    assert!(files.len() > 20, "found only {} files: wrong root?", files.len());
    files
}

#[test]
fn every_module_has_a_doc_line() {
    let missing: Vec<String> = all_files()
        .into_iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            !first.starts_with("//!")
        })
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(missing.is_empty(), "modules without a `//!` line at the top: {missing:#?}");
}

#[test]
fn no_stubs_in_product_code() {
    let stubs: Vec<String> = all_files()
        .into_iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "src"))
        .filter(|p| !p.starts_with(root().join("tests")))
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            text.contains(concat!("todo", "!(")) || text.contains(concat!("unimplemented", "!("))
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(stubs.is_empty(), "stubs left in product code: {stubs:?}");
}
