//! Tenants files named by rules (`tenants_file`): read only from regular files under the
//! config's directory, at most [`MAX_TENANTS_FILE`] bytes; [`CachedFiles`] reads one again
//! only when it changed on disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Reads tenant files relative to the config file's folder.
pub fn file_loader(base: Option<&Path>) -> impl Fn(&str) -> Result<String, String> + '_ {
    move |p: &str| read_regular(&under(base, p)?, MAX_TENANTS_FILE)
}

/// `p` under `base`: only relative paths without `..` (a release manager's rule must not
/// read `/etc/shadow` or probe for it).
fn under(base: Option<&Path>, p: &str) -> Result<PathBuf, String> {
    let path = Path::new(p);
    if path.is_absolute()
        || path
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(format!(
            "`{p}` must be a relative path under the config's directory, without `..`"
        ));
    }
    Ok(base.map_or_else(|| path.to_path_buf(), |b| b.join(path)))
}

/// A tenants-file loader (same paths and limits as [`file_loader`]) that reads a file again
/// only when it changed on disk, and otherwise hands out the text it read before: a flip's
/// compile then neither reads nor compares a 100k-line file (a fifth of a flip's CPU).
/// Changed means another device, inode, size, mtime or ctime; the stamp is taken before
/// the read, so a write racing the read is read again next time.
pub struct CachedFiles {
    base: Option<PathBuf>,
    seen: std::sync::Mutex<HashMap<PathBuf, (Stamp, Arc<str>)>>,
}

type Stamp = [i64; 7];

fn stamp(m: &std::fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    [
        m.dev() as i64,
        m.ino() as i64,
        m.len() as i64,
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ]
}

/// Whether the file changed too recently for its stamp to tell a later change (git's
/// "racily clean"): the kernel stamps writes with a clock that may tick every few ms, so
/// a same-size rewrite within that tick of our read would keep the stamp we cached.
fn racy(s: &Stamp) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    // mtime and ctime seconds; 2 s covers any timestamp granularity Linux file systems use.
    now - s[3].max(s[5]) < 2
}

impl CachedFiles {
    pub fn new(base: Option<&Path>) -> CachedFiles {
        CachedFiles {
            base: base.map(Path::to_path_buf),
            seen: Default::default(),
        }
    }
}

impl apus_rules::TenantLoader for CachedFiles {
    fn load(&self, path: &str) -> Result<String, String> {
        self.load_shared(path).map(|t| t.to_string())
    }

    fn load_shared(&self, path: &str) -> Result<Arc<str>, String> {
        let full = under(self.base.as_deref(), path)?;
        let now = std::fs::metadata(&full)
            .map(|m| stamp(&m))
            .map_err(|e| format!("{}: {e}", full.display()))?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, text)) = seen.get(&full) {
            if *s == now && !racy(&now) {
                return Ok(text.clone());
            }
        }
        let text: Arc<str> = read_regular(&full, MAX_TENANTS_FILE)?.into();
        seen.insert(full, (now, text.clone()));
        Ok(text)
    }
}

/// The largest `tenants_file` read.
pub const MAX_TENANTS_FILE: u64 = 16 << 20;

/// Read a regular file of at most `cap` bytes: never a FIFO (which would hang the reader),
/// a device (`/dev/zero` never ends) or a directory.
fn read_regular(full: &Path, cap: u64) -> Result<String, String> {
    use std::io::Read as _;
    let shown = full.display();
    let meta = std::fs::metadata(full).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown}: not a regular file"));
    }
    if meta.len() > cap {
        return Err(format!("{shown}: larger than {cap} bytes"));
    }
    let mut text = String::new();
    std::fs::File::open(full)
        .and_then(|f| f.take(cap + 1).read_to_string(&mut text))
        .map_err(|e| format!("{shown}: {e}"))?;
    if text.len() as u64 > cap {
        return Err(format!("{shown}: larger than {cap} bytes"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_files_are_regular_files_under_the_config_dir() {
        let dir = std::env::temp_dir().join(format!("apus-loader-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("t.txt"), "acme\n").unwrap();
        let load = file_loader(Some(&dir));
        assert_eq!(load("t.txt").unwrap(), "acme\n");
        for bad in [
            "/etc/passwd",
            "/dev/zero",
            "../t.txt",
            "sub/../t.txt",
            "sub",
        ] {
            assert!(load(bad).is_err(), "{bad}");
        }
        // A FIFO would block the reader forever.
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            assert!(load("fifo").unwrap_err().contains("not a regular file"));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cached_tenants_files_are_read_again_only_when_they_change() {
        use apus_rules::TenantLoader as _;
        let dir = std::env::temp_dir().join(format!("apus-cached-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("t.txt"), "acme\n").unwrap();
        let files = CachedFiles::new(Some(&dir));
        // Changed within the last 2 s (the timestamp's tick could hide a rewrite): read
        // every time. Older and unchanged: served from the cache.
        let a = files.load_shared("t.txt").unwrap();
        assert!(!Arc::ptr_eq(&a, &files.load_shared("t.txt").unwrap()));
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let a = files.load_shared("t.txt").unwrap();
        assert!(
            Arc::ptr_eq(&a, &files.load_shared("t.txt").unwrap()),
            "unchanged: shared"
        );
        // Same size, new content: the stamp (mtime/ctime) tells.
        std::fs::write(dir.join("t.txt"), "init\n").unwrap();
        assert_eq!(&*files.load_shared("t.txt").unwrap(), "init\n");
        // Replaced by rename (a new inode), as editors and config tools do.
        std::fs::write(dir.join("new"), "acme\nglobex\n").unwrap();
        std::fs::rename(dir.join("new"), dir.join("t.txt")).unwrap();
        assert_eq!(&*files.load_shared("t.txt").unwrap(), "acme\nglobex\n");
        // The same limits as the plain loader, cached or not.
        for bad in ["/etc/passwd", "../t.txt", "sub"] {
            assert!(files.load_shared(bad).is_err(), "{bad}");
        }
        std::fs::remove_file(dir.join("t.txt")).unwrap();
        assert!(
            files.load_shared("t.txt").is_err(),
            "a deleted file is not served from the cache"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
