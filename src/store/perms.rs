//! Modes and group of what voxtap creates on disk: the spool's folders and call files (and archives), the CDR and
//! link queues, the CDR log. They hold calls' contents and metadata, so by default no other user reads them: files
//! 0640, folders 0750 (`spool_file_mode`, `spool_dir_mode`), with the group `spool_group` when set (a GUI or an
//! archiving job reading the spool runs in that group).
//!
//! The setting is process-wide (set once from the configuration at start) because every writer of these files
//! (the spool writer, the DB and link queues, the CDR log) must agree, and the queue is opened from code that has
//! no configuration at hand. Modes are set explicitly on what voxtap creates, whatever the umask; folders and
//! files that exist already (the operator's) are left as they are.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

/// Modes and group for created files and folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms {
    pub file_mode: u32,
    pub dir_mode: u32,
    pub gid: Option<u32>,
}

pub const DEFAULT_FILE_MODE: u32 = 0o640;
pub const DEFAULT_DIR_MODE: u32 = 0o750;

impl Default for Perms {
    fn default() -> Self {
        Perms { file_mode: DEFAULT_FILE_MODE, dir_mode: DEFAULT_DIR_MODE, gid: None }
    }
}

static PERMS: RwLock<Perms> =
    RwLock::new(Perms { file_mode: DEFAULT_FILE_MODE, dir_mode: DEFAULT_DIR_MODE, gid: None });
static CHOWN_WARNED: AtomicBool = AtomicBool::new(false);

/// Sets the modes and group for what this process creates from now on.
pub fn set(p: Perms) {
    *PERMS.write() = p;
}

pub fn get() -> Perms {
    *PERMS.read()
}

/// The configuration's `spool_file_mode`, `spool_dir_mode` and `spool_group`, for the whole process.
pub fn configure(cfg: &crate::config::Config) {
    set(Perms { file_mode: cfg.spool_file_mode, dir_mode: cfg.spool_dir_mode, gid: cfg.spool_group });
}

/// The group id of a group name (or a number), from the system's group database.
pub fn group_id(name: &str) -> Result<u32, String> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    let cname = std::ffi::CString::new(name).map_err(|_| format!("group name {name:?} holds a NUL"))?;
    match crate::os::group_id(&cname) {
        Ok(Some(gid)) => Ok(gid),
        Ok(None) => Err(format!("no group named {name:?} on this system")),
        Err(e) => Err(format!("cannot look up group {name:?}: {e}")),
    }
}

/// Gives something just created its configured mode (whatever the umask took away) and group.
fn settle(path: &Path, file: Option<&File>, mode: u32, gid: Option<u32>) -> io::Result<()> {
    let perm = fs::Permissions::from_mode(mode);
    match file {
        Some(f) => f.set_permissions(perm)?,
        None => fs::set_permissions(path, perm)?,
    }
    if let Some(g) = gid {
        let r = match file {
            Some(f) => std::os::unix::fs::fchown(f, None, Some(g)),
            None => std::os::unix::fs::chown(path, None, Some(g)),
        };
        // Not fatal: the packets and CDRs matter more than who else may read them. Said once.
        if let Err(e) = r {
            if !CHOWN_WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(path = %path.display(), gid = g, error = %e,
                    "cannot give a spool file the group of spool_group (is voxtap a member of it?)");
            }
        }
    }
    Ok(())
}

/// `fs::create_dir_all`, with the configured mode and group on every folder it creates.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    if path.as_os_str().is_empty() || path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        create_dir_all(parent)?;
    }
    let p = get();
    match DirBuilder::new().mode(p.dir_mode).create(path) {
        Ok(()) => settle(path, None, p.dir_mode, p.gid),
        // Another thread or process made it in between.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens with `o` (which may create the file), giving a file this call created the configured mode and group.
pub fn open(o: &mut OpenOptions, path: &Path) -> io::Result<File> {
    let p = get();
    // Whether it is there before: only a file this open creates is settled (an existing one keeps what it has).
    let existed = fs::symlink_metadata(path).is_ok();
    let f = o.mode(p.file_mode).open(path)?;
    if !existed {
        settle(path, Some(&f), p.file_mode, p.gid)?;
    }
    Ok(f)
}

/// `fs::write` of a new file (a temporary one replaced by rename), with the configured mode and group.
pub fn write_new(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let _ = fs::remove_file(path);
    let mut f = open(OpenOptions::new().write(true).create_new(true), path)?;
    f.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_files_and_folders_get_the_modes_whatever_the_umask() {
        let dir = std::env::temp_dir().join(format!("voxtap-perms-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let deep = dir.join("a/b");
        create_dir_all(&deep).unwrap();
        let f = deep.join("f");
        open(OpenOptions::new().write(true).create(true).truncate(false), &f).unwrap();
        write_new(&deep.join("g"), b"x").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        for d in [dir.clone(), dir.join("a"), deep.clone()] {
            assert_eq!(mode(&d), DEFAULT_DIR_MODE, "{}", d.display());
        }
        assert_eq!(mode(&f), DEFAULT_FILE_MODE);
        assert_eq!(mode(&deep.join("g")), DEFAULT_FILE_MODE);
        // An existing file keeps its mode.
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        open(OpenOptions::new().append(true).create(true), &f).unwrap();
        assert_eq!(mode(&f), 0o600);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn groups_by_name_and_number() {
        assert_eq!(group_id("0"), Ok(0));
        assert_eq!(group_id("root"), Ok(0));
        assert!(group_id("voxtap-no-such-group").is_err());
    }
}
