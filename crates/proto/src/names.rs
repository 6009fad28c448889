//! Validation of names that become file names on a device or a server: a
//! package name from a release record, a `.torrent`'s info dictionary or a
//! signed manifest is joined to a download folder, so it must name one plain
//! file inside that folder and nothing else.

/// Longest file name accepted, bytes (the usual `NAME_MAX` of Linux file
/// systems).
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// Why a name cannot be used as a file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("file name is empty")]
    Empty,
    /// The name is longer than [`MAX_FILE_NAME_BYTES`].
    #[error("file name is {0} bytes long (at most {MAX_FILE_NAME_BYTES})")]
    TooLong(usize),
    /// The name is `.` or `..`, or contains `/`, `\`, a NUL or another
    /// control character: it would leave (or not name a file in) its folder.
    #[error("file name {0:?} is not a plain file name (no '/', '\\', '..', NUL or control characters)")]
    NotPlain(String),
}

/// Checks that `name` is one plain file name: not empty, at most
/// [`MAX_FILE_NAME_BYTES`] bytes, not `.` or `..`, no `/` (so not absolute
/// and no path component), no `\`, no NUL or other control character.
/// `Path::new(folder).join(name)` is then always a direct child of `folder`.
///
/// Errors: [`NameError`] saying which rule it breaks.
pub fn check_file_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_FILE_NAME_BYTES {
        return Err(NameError::TooLong(name.len()));
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
        return Err(NameError::NotPlain(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_file_names_pass() {
        for ok in ["fw.bin", "a", "fw-2.0..bin", "..x", "x..", "ünïcode.img"] {
            check_file_name(ok).unwrap();
        }
        assert_eq!(check_file_name(""), Err(NameError::Empty));
        assert!(matches!(
            check_file_name(&"a".repeat(256)),
            Err(NameError::TooLong(256))
        ));
        for bad in [".", "..", "../x", "/etc/cron.d/x", "a/b", "a\\b", "x\0y", "x\ny", "/"] {
            assert!(
                matches!(check_file_name(bad), Err(NameError::NotPlain(_))),
                "{bad:?} must be refused"
            );
        }
    }
}
