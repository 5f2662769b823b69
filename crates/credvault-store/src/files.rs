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

/// The 32-byte secret in `path` (a vault's `gateway.key`, `sessions.key`), made with fresh
/// random bytes by [`write_new_private`] when the file does not exist. Processes starting at
/// once agree: a creator that finds the file made meanwhile reads that one.
///
/// # Errors
/// The file could not be made or read, holds other than 32 bytes
/// ([`io::ErrorKind::InvalidData`]), or the system's random generator failed.
pub fn load_or_create_key(path: &Path) -> io::Result<zeroize::Zeroizing<[u8; 32]>> {
    if !path.exists() {
        let mut fresh = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut fresh[..]).map_err(|e| io::Error::other(e.to_string()))?;
        match write_new_private(path, &fresh[..]) {
            // Another process may have won the race: whatever is there now is read below.
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    let bytes = zeroize::Zeroizing::new(std::fs::read(path)?);
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "expected exactly 32 bytes",
        ));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}
