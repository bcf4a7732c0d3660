//! Atomic rewrite of the token file (`ACCOUNT_SECRET_FILE`) and of the small state files:
//! write a temporary file beside the target, fsync it, rename it over the target, fsync the
//! directory. A reader sees the old content or the new one, never a torn file.
//!
//! The temporary file gets an unpredictable name (`.NAME.tmp.` and 16 random characters) and
//! is created exclusively (`O_CREAT | O_EXCL`, which never follows a symlink and never opens
//! a file that is already there), then set to its mode explicitly with `fchmod` (0600 for the
//! token, whatever the umask or a planted file says). The rename replaces the directory entry
//! of the target: a symlink at the token file's path is replaced by the new regular file, and
//! whatever it pointed at is left untouched.
use std::fs::{File, Permissions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tether_protocol::Token;

/// Mode of the token file.
pub const TOKEN_FILE_MODE: u32 = 0o600;

/// Random characters in a temporary file's name.
const TMP_RANDOM_CHARS: usize = 16;

/// Replaces the content of `path` with the token string and a newline, atomically and durably,
/// leaving a regular file of mode 0600.
pub fn write_atomic(path: &Path, token: &Token) -> std::io::Result<()> {
    let text = token.expose();
    let mut contents = zeroize::Zeroizing::new(Vec::with_capacity(text.len() + 1));
    contents.extend_from_slice(text.as_bytes());
    contents.push(b'\n');
    replace(path, &contents, TOKEN_FILE_MODE, Durability::Fsync)
}

/// Whether [`replace`] waits for the new content to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file before the rename and the directory after it.
    Fsync,
    /// No fsync (records rewritten every few seconds, such as the health record).
    NoFsync,
}

/// Replaces the content of `path` with `contents` through a fresh temporary file of mode
/// `mode` beside it (see the module documentation).
pub fn replace(path: &Path, contents: &[u8], mode: u32, durability: Durability) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the file path has no file name")
    })?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".tmp.");
    // Exclusive create with a random name; the file is removed on drop unless persisted.
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .rand_bytes(TMP_RANDOM_CHARS)
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    // The umask may have narrowed the mode at create: set it exactly, on the descriptor.
    tmp.as_file().set_permissions(Permissions::from_mode(mode))?;
    tmp.write_all(contents)?;
    if durability == Durability::Fsync {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|err| err.error)?;
    match durability {
        Durability::Fsync => File::open(dir)?.sync_all(),
        Durability::NoFsync => Ok(()),
    }
}

/// Most bytes read from a token file: a token is 74 characters, so anything longer is not one
/// (a file planted in a shared directory, or a symlink to `/dev/zero`, must not make the
/// delegate read without end).
pub const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// The text of the token file at `path`, read to at most [`MAX_TOKEN_FILE_BYTES`]: an error of
/// kind `FileTooLarge` when it holds more, `InvalidData` when it is not UTF-8 (the error never
/// carries the content).
pub fn read_text(path: &Path) -> std::io::Result<zeroize::Zeroizing<String>> {
    use std::io::{Error, ErrorKind, Read};
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(128));
    File::open(path)?.take(MAX_TOKEN_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(Error::from(ErrorKind::FileTooLarge));
    }
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(zeroize::Zeroizing::new(text.to_owned())),
        Err(_) => Err(Error::from(ErrorKind::InvalidData)),
    }
}

/// Reads the token in `path`, if the file exists and holds a valid token.
pub fn read(path: &Path) -> Option<Token> {
    let text = read_text(path).ok()?;
    Token::parse(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    use uuid::Uuid;

    use super::*;

    #[test]
    fn a_token_file_is_read_to_a_bound_whatever_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let token = Token::from_parts(Uuid::from_u128(9), [3; 32]);
        let good = dir.path().join("token");
        write_atomic(&good, &token).unwrap();
        assert!(read(&good).is_some_and(|t| t.same_as(&token)));
        // A symlink to an endless device: before the fix `read_to_string` never returned (or
        // ran out of memory).
        let endless = dir.path().join("endless");
        symlink("/dev/zero", &endless).unwrap();
        assert_eq!(read_text(&endless).unwrap_err().kind(), std::io::ErrorKind::FileTooLarge);
        assert!(read(&endless).is_none());
        let big = dir.path().join("big");
        fs::write(&big, format!("{}\n{}", &*token.expose(), " ".repeat(8192))).unwrap();
        assert_eq!(read_text(&big).unwrap_err().kind(), std::io::ErrorKind::FileTooLarge);
        let binary = dir.path().join("binary");
        fs::write(&binary, b"\xff\xfe").unwrap();
        assert_eq!(read_text(&binary).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn names(dir: &Path) -> Vec<std::ffi::OsString> {
        let mut names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        names
    }

    /// The temporary name the previous implementation used: `.NAME.tmp.<pid>`.
    fn old_tmp_name(dir: &Path) -> std::path::PathBuf {
        dir.join(format!(".token.tmp.{}", std::process::id()))
    }

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
        assert_eq!(mode(&path), 0o600);
        assert_eq!(names(dir.path()), [std::ffi::OsString::from("token")]);
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

    #[test]
    fn an_existing_token_file_with_a_wide_mode_ends_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        fs::write(&path, "old\n").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o666)).unwrap();
        let new = Token::from_parts(Uuid::new_v4(), [4; 32]);
        write_atomic(&path, &new).unwrap();
        assert!(read(&path).unwrap().same_as(&new));
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_planted_0666_file_at_the_old_temporary_name_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let planted = old_tmp_name(dir.path());
        fs::write(&planted, "planted").unwrap();
        fs::set_permissions(&planted, Permissions::from_mode(0o666)).unwrap();
        let new = Token::from_parts(Uuid::new_v4(), [5; 32]);
        write_atomic(&path, &new).unwrap();
        assert!(read(&path).unwrap().same_as(&new));
        assert_eq!(mode(&path), 0o600, "the token file took the planted file's mode");
        assert_eq!(fs::read_to_string(&planted).unwrap(), "planted", "the planted file was written");
        assert_eq!(mode(&planted), 0o666);
    }

    #[test]
    fn a_planted_symlink_at_the_old_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let victim = elsewhere.path().join("victim");
        fs::write(&victim, "victim content").unwrap();
        fs::set_permissions(&victim, Permissions::from_mode(0o644)).unwrap();
        let path = dir.path().join("token");
        symlink(&victim, old_tmp_name(dir.path())).unwrap();
        let new = Token::from_parts(Uuid::new_v4(), [6; 32]);
        write_atomic(&path, &new).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "victim content", "wrote through the symlink");
        assert_eq!(mode(&victim), 0o644);
        assert!(read(&path).unwrap().same_as(&new));
        assert_eq!(mode(&path), 0o600);
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_file());
    }

    #[test]
    fn a_token_file_that_is_a_symlink_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let victim = elsewhere.path().join("victim");
        fs::write(&victim, "victim content").unwrap();
        let path = dir.path().join("token");
        symlink(&victim, &path).unwrap();
        let new = Token::from_parts(Uuid::new_v4(), [7; 32]);
        write_atomic(&path, &new).unwrap();
        // The rename replaced the link itself with a regular 0600 file holding the token.
        assert_eq!(fs::read_to_string(&victim).unwrap(), "victim content");
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file(), "the token file is still a symlink");
        assert_eq!(mode(&path), 0o600);
        assert!(read(&path).unwrap().same_as(&new));
        assert_eq!(names(dir.path()), [std::ffi::OsString::from("token")]);
    }
}
