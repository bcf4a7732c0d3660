//! Atomic rewrite of the token file (`ACCOUNT_SECRET_FILE`): write a temporary file beside it
//! (mode 0600), fsync it, rename it over the old one, fsync the directory. A reader sees the
//! old token or the new one, never a torn file.
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tether_protocol::Token;

/// Replaces the content of `path` with the token string and a newline, atomically and durably.
pub fn write_atomic(path: &Path, token: &Token) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "token file path has no file name")
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        let text = token.expose();
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads the token in `path`, if the file exists and holds a valid token.
pub fn read(path: &Path) -> Option<Token> {
    let text = zeroize::Zeroizing::new(fs::read_to_string(path).ok()?);
    Token::parse(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use uuid::Uuid;

    use super::*;

    #[test]
    fn rewrite_replaces_the_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let old = Token::from_parts(Uuid::new_v4(), [1; 32]);
        let new = Token::from_parts(Uuid::new_v4(), [2; 32]);
        write_atomic(&path, &old).unwrap();
        assert!(read(&path).unwrap().same_as(&old));
        write_atomic(&path, &new).unwrap();
        assert!(read(&path).unwrap().same_as(&new));
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{}\n", &*new.expose()));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [std::ffi::OsString::from("token")]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let old = Token::from_parts(Uuid::new_v4(), [3; 32]);
        write_atomic(&path, &old).unwrap();
        // A directory where the file should go makes the rename fail.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), "keep").unwrap();
        assert!(write_atomic(&blocked, &old).is_err());
        assert!(read(&path).unwrap().same_as(&old));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
