//! Error text for people: an OS error said once, in plain words.

/// An OS error's text without Rust's `(os error N)` suffix, for messages that name the error once.
pub fn plain(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// What to check when the OS refused a privileged operation; empty for other errors.
pub fn privilege_hint(e: &std::io::Error, what: &str) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => format!(" ({what} needs root or CAP_NET_RAW)"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_error_suffix_is_dropped() {
        let e = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(plain(&e), "Permission denied");
        assert!(privilege_hint(&e, "capturing").contains("CAP_NET_RAW"));
        assert_eq!(privilege_hint(&std::io::Error::from_raw_os_error(libc::ENODEV), "capturing"), "");
    }
}
