//! Files only their owner can read, as the vault writes its keys and databases.
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("server.key");
//! credvault_store::files::write_new_private(&path, b"0123")?;
//! // Never overwrites: a second writer gets `AlreadyExists` and the first bytes stay.
//! let again = credvault_store::files::write_new_private(&path, b"4567");
//! assert_eq!(again.map_err(|e| e.kind()), Err(std::io::ErrorKind::AlreadyExists));
//! assert_eq!(std::fs::read(&path)?, b"0123");
//! # Ok(())
//! # }
//! ```

use std::io::{self, Write};
use std::path::Path;

/// Creates `path` holding `bytes`: owner-only (0600 on Unix) from creation whatever the umask,
/// `O_EXCL` (an existing file, or a planted symlink, is an [`io::ErrorKind::AlreadyExists`]
/// error and is never written through), the data synced and then the directory entry (best effort).
///
/// # Errors
/// Whatever creating, writing or syncing the file fails with.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all(); // not every platform can fsync a directory
        }
    }
    Ok(())
}
