//! Tidy check on the manager's sources: a token's full value (`Token::expose()`,
//! `SecretString::expose()`) is taken only where it is handed out once (create, rotate, init)
//! or sent (the CLI's bearer). (The workspace-wide `//!` check is
//! `tests/tests/tidy.rs`.)

fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn token_values_are_exposed_only_where_they_are_handed_out_once() {
    let mut files = Vec::new();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    rust_files(&src, &mut files);
    let mut users: Vec<String> = files
        .iter()
        .filter(|f| std::fs::read_to_string(f).unwrap().contains(".expose()"))
        .map(|f| f.strip_prefix(&src).unwrap().to_string_lossy().into_owned())
        .collect();
    users.sort();
    // accounts/tokens (create), rotation (successor), init (first values); the CLI's commands
    // and client (the admin token as the bearer) and render (printing a created value, once);
    // the console's pages that create accounts, tokens (and rotate) and admin tokens, which keep
    // the value for its one showing.
    assert_eq!(
        users,
        [
            "api/accounts.rs",
            "api/tokens.rs",
            "cli/client.rs",
            "cli/commands.rs",
            "cli/render.rs",
            "console/pages/accounts.rs",
            "console/pages/admin_tokens.rs",
            "console/pages/tokens.rs",
            "init.rs",
            "rotation/mod.rs",
        ]
    );
}
