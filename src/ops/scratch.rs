//! Scratch files: the database a restore builds aside, the export being written, the database
//! verify and drill load. Each is named `.{base}.d1r2-{kind}-{nonce}` in the folder it is made
//! in and locked (an advisory `flock`) for as long as its run uses it, so a later run can tell a
//! live one from one a killed run left behind, whatever its age: [`sweep`] removes those whose
//! lock it can take, with the `-journal`, `-wal` and `-shm` files SQLite may have made beside them.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// What a scratch file is for; part of its name, so a look at the folder tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    Restore,
    Export,
    Verify,
    Drill,
    Import,
    Find,
}

impl Purpose {
    const ALL: [Purpose; 6] = [
        Purpose::Restore,
        Purpose::Export,
        Purpose::Verify,
        Purpose::Drill,
        Purpose::Import,
        Purpose::Find,
    ];

    /// The mode a new scratch file is made with (the umask applies): a restore or an export
    /// becomes the user's file, made as any new file is; the others sit in the shared temporary
    /// folder holding a backup's rows, so only their owner reads them.
    fn mode(self) -> u32 {
        match self {
            Purpose::Restore | Purpose::Export => 0o666,
            Purpose::Verify | Purpose::Drill | Purpose::Import | Purpose::Find => 0o600,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Purpose::Restore => "restore",
            Purpose::Export => "export",
            Purpose::Verify => "verify",
            Purpose::Drill => "drill",
            Purpose::Import => "import",
            Purpose::Find => "find",
        }
    }
}

/// The files SQLite may keep beside a database; a scratch file's are removed with it.
const SIDECARS: [&str; 3] = ["-journal", "-wal", "-shm"];

/// The name of a scratch file for `base` (the file it stands in for). A dot first keeps it out of
/// a plain `ls`; the nonce keeps runs apart.
pub(crate) fn scratch_name(base: &str, purpose: Purpose, nonce: u32) -> String {
    format!(".{base}.d1r2-{}-{nonce:08x}", purpose.word())
}

/// What a file name found in a folder is to [`sweep`]: a scratch file, or a file SQLite made
/// beside one (with the scratch file's name), or nothing of d1r2's.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found<'n> {
    Scratch,
    Sidecar { of: &'n str },
    Other,
}

/// Reads a file name as [`scratch_name`] writes it (any purpose, any base), or as one of its
/// [`SIDECARS`]. Only exact names count: eight lowercase hex digits end the scratch name.
pub(crate) fn classify(name: &str) -> Found<'_> {
    for sidecar in SIDECARS {
        if let Some(of) = name.strip_suffix(sidecar)
            && is_scratch(of)
        {
            return Found::Sidecar { of };
        }
    }
    if is_scratch(name) {
        Found::Scratch
    } else {
        Found::Other
    }
}

fn is_scratch(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let Some((base, tail)) = rest.rsplit_once(".d1r2-") else {
        return false;
    };
    let Some((word, nonce)) = tail.split_once('-') else {
        return false;
    };
    !base.is_empty()
        && Purpose::ALL.iter().any(|p| p.word() == word)
        && nonce.len() == 8
        && nonce
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A scratch file in use: created new, locked for as long as this value lives, removed (with its
/// sidecars) on drop unless it was moved into place.
#[derive(Debug)]
pub(crate) struct Scratch {
    path: PathBuf,
    /// Holds the lock; the file's other users (SQLite, a writer) open it by path.
    _lock: File,
    placed: bool,
}

impl Scratch {
    /// Creates and locks a new scratch file in `dir` for `base`. The lock is taken on the file
    /// just made, then checked to be on the file still under that name: a [`sweep`] of another
    /// run may have taken the unlocked file in between, and then a fresh name is tried.
    pub(crate) fn create(dir: &Path, base: &str, purpose: Purpose) -> io::Result<Scratch> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let mut last = None;
        for _ in 0..8 {
            let path = dir.join(scratch_name(base, purpose, rand::random()));
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(purpose.mode())
                .open(&path)
            {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            file.lock()?;
            let held = file.metadata()?;
            match std::fs::metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(Scratch {
                        path,
                        _lock: file,
                        placed: false,
                    });
                }
                Ok(_) => last = Some(io::Error::other("a scratch file was replaced")),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free scratch file name")))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the finished file to `to`, replacing whatever is there.
    pub(crate) fn rename_to(&mut self, to: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, to)?;
        self.placed = true;
        Ok(())
    }

    /// Moves the finished file to `to` only if nothing is there (a hard link, then the scratch
    /// name removed): a file that appeared at `to` meanwhile is someone's, and is kept.
    pub(crate) fn link_to(&mut self, to: &Path) -> io::Result<()> {
        std::fs::hard_link(&self.path, to)?;
        let _ = std::fs::remove_file(&self.path);
        self.placed = true;
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = remove_sidecars(&self.path);
    }
}

/// Removes the files SQLite may have left beside `path`; returns how many there were.
fn remove_sidecars(path: &Path) -> usize {
    let mut removed = 0;
    for sidecar in SIDECARS {
        let mut side = path.as_os_str().to_owned();
        side.push(sidecar);
        removed += usize::from(std::fs::remove_file(PathBuf::from(side)).is_ok());
    }
    removed
}

/// Removes the scratch files in `dir` that no run holds: those whose lock can be taken (their
/// run ended without removing them, killed or crashed), and sidecars left without their scratch
/// file. A live run's file stays, however old. Returns how many files were removed (sidecars
/// included); a file that cannot be opened or removed (another user's) is left, quietly.
pub(crate) fn sweep(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let path = entry.path();
        match classify(name) {
            Found::Other => {}
            Found::Scratch => {
                let Ok(file) = File::open(&path) else {
                    continue;
                };
                if file.try_lock().is_ok() && std::fs::remove_file(&path).is_ok() {
                    tracing::debug!("removed {}, left by a run that ended", path.display());
                    removed += 1 + remove_sidecars(&path);
                }
            }
            Found::Sidecar { of } => {
                if !dir.join(of).exists() && std::fs::remove_file(&path).is_ok() {
                    tracing::debug!("removed {}, left by a run that ended", path.display());
                    removed += 1;
                }
            }
        }
    }
    removed
}

/// Why a file the user named cannot be written, found before anything is downloaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OutputPathError {
    #[error("cannot write {path}: the folder {folder} does not exist")]
    Missing { path: String, folder: String },
    #[error("cannot write {path}: {folder} is not a folder")]
    InAFile { path: String, folder: String },
    #[error("cannot write {path}: it is a folder, name a file")]
    IsFolder { path: String },
}

/// The user named the path: each is theirs to fix.
impl crate::error::Classify for OutputPathError {
    fn kind(&self) -> crate::error::Kind {
        match self {
            OutputPathError::Missing { .. }
            | OutputPathError::InAFile { .. }
            | OutputPathError::IsFolder { .. } => crate::error::Kind::BadInput,
        }
    }
}

/// Refuses an output path whose folder is missing or which is itself a folder, naming the path
/// as given: otherwise the first error would come from a scratch file the user never named.
pub(crate) fn check_folder(path: &Path) -> Result<(), OutputPathError> {
    let folder = folder_of(path);
    let shown = || (path.display().to_string(), folder.display().to_string());
    match std::fs::metadata(folder) {
        Err(_) => {
            let (path, folder) = shown();
            return Err(OutputPathError::Missing { path, folder });
        }
        Ok(meta) if !meta.is_dir() => {
            let (path, folder) = shown();
            return Err(OutputPathError::InAFile { path, folder });
        }
        Ok(_) => {}
    }
    if path.is_dir() || path.file_name().is_none() {
        return Err(OutputPathError::IsFolder {
            path: path.display().to_string(),
        });
    }
    Ok(())
}

/// The folder a file at `path` is in: its parent, or the working directory for a bare name.
pub(crate) fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The file name a scratch file for `path` is named after.
pub(crate) fn base_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_back_exactly() {
        let made = scratch_name("app.db", Purpose::Restore, 0x0a1b_2c3d);
        assert_eq!(made, ".app.db.d1r2-restore-0a1b2c3d");
        let journal = format!("{made}-journal");
        let cases: Vec<(&str, Found<'_>)> = vec![
            (&made, Found::Scratch),
            (".x.d1r2-export-00000000", Found::Scratch),
            (".a.d1r2-b.d1r2-verify-ffffffff", Found::Scratch),
            (".scratch.d1r2-drill-12345678", Found::Scratch),
            (".q.sql.d1r2-import-9abcdef0", Found::Scratch),
            (&journal, Found::Sidecar { of: &made }),
            (
                ".app.db.d1r2-restore-0a1b2c3d-wal",
                Found::Sidecar {
                    of: ".app.db.d1r2-restore-0a1b2c3d",
                },
            ),
            (
                ".app.db.d1r2-restore-0a1b2c3d-shm",
                Found::Sidecar {
                    of: ".app.db.d1r2-restore-0a1b2c3d",
                },
            ),
            ("app.db", Found::Other),
            ("app.db-journal", Found::Other),
            ("app.db.d1r2-restore-0a1b2c3d", Found::Other),
            ("..d1r2-restore-0a1b2c3d", Found::Other),
            (".app.db.d1r2-restore-0A1B2C3D", Found::Other),
            (".app.db.d1r2-restore-0a1b2c3", Found::Other),
            (".app.db.d1r2-restore-0a1b2c3d0", Found::Other),
            (".app.db.d1r2-restore-0a1b2c3g", Found::Other),
            (".app.db.d1r2-backup-0a1b2c3d", Found::Other),
            (".app.db.d1r2-restore-0a1b2c3d-other", Found::Other),
            (".app.db.d1r2-restore-0a1b2c3d.bak", Found::Other),
            (".tmpAbC123", Found::Other),
        ];
        for (name, expected) in cases {
            assert_eq!(classify(name), expected, "{name}");
        }
    }

    #[test]
    fn sweep_takes_what_no_run_holds() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let held = Scratch::create(d, "t.db", Purpose::Restore).unwrap();
        std::fs::write(d.join(".t.db.d1r2-export-00000001"), b"dead").unwrap();
        std::fs::write(d.join(".t.db.d1r2-export-00000001-journal"), b"j").unwrap();
        std::fs::write(d.join(".t.db.d1r2-verify-00000002-wal"), b"w").unwrap();
        std::fs::write(d.join("t.db"), b"user's").unwrap();
        std::fs::write(d.join("t.db-journal"), b"user's").unwrap();
        let mut held_wal = held.path().as_os_str().to_owned();
        held_wal.push("-wal");
        std::fs::write(&held_wal, b"live").unwrap();
        assert_eq!(sweep(d), 3);
        let mut left: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let held_name = base_of(held.path());
        let mut expected = vec![
            held_name.clone(),
            format!("{held_name}-wal"),
            "t.db".into(),
            "t.db-journal".into(),
        ];
        expected.sort();
        assert_eq!(left, expected);
        drop(held);
        assert_eq!(
            std::fs::read_dir(d).unwrap().count(),
            2,
            "a scratch file goes with its run"
        );
    }

    #[test]
    fn an_output_path_needs_its_folder() {
        use crate::error::Classify;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("file"), b"x").unwrap();
        let cases: Vec<(PathBuf, Option<&str>)> = vec![
            (d.join("new.db"), None),
            (d.join("file"), None),
            (d.join("gone").join("new.db"), Some("does not exist")),
            (d.join("file").join("new.db"), Some("is not a folder")),
            (d.to_path_buf(), Some("it is a folder")),
        ];
        for (path, refused) in cases {
            match (check_folder(&path), refused) {
                (Ok(()), None) => {}
                (Err(e), Some(words)) => {
                    let text = e.to_string();
                    assert!(text.contains(words), "{text}");
                    assert!(text.starts_with(&format!("cannot write {}", path.display())));
                    assert_eq!(e.kind(), crate::error::Kind::BadInput);
                }
                (got, want) => panic!("{}: {got:?}, expected {want:?}", path.display()),
            }
        }
    }
}
