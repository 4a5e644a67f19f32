//! Where state bytes are kept: a directory on disk live, memory in the
//! simulator and in tests. A store also supplies the wall clock the saved
//! deadlines are written in, so the simulator can use simulated time.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::StateError;

/// Keeps named files in a state directory.
pub trait StateStore: Send + Sync {
    /// Now, on the clock saved deadlines are written in.
    fn wall_clock(&self) -> SystemTime;
    /// The bytes of `dir/name` (at most `limit` of them), `None` if there is no such file.
    fn load(&self, dir: &str, name: &str, limit: u64) -> Result<Option<Vec<u8>>, StateError>;
    /// Replaces `dir/name` with `bytes` as a whole: a reader sees the old
    /// file or the new one, never a part.
    fn save(&self, dir: &str, name: &str, bytes: &[u8]) -> Result<(), StateError>;
}

/// Files on disk; a relative `dir` is taken relative to `base` (the
/// configuration directory). The system clock.
#[derive(Clone, Debug)]
pub struct DirStore {
    base: PathBuf,
}

impl DirStore {
    pub fn new(base: impl Into<PathBuf>) -> Self {
        DirStore { base: base.into() }
    }

    fn dir(&self, dir: &str) -> PathBuf {
        self.base.join(dir)
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io { action, path: path.to_path_buf(), source }
}

impl StateStore for DirStore {
    fn wall_clock(&self) -> SystemTime {
        SystemTime::now()
    }

    fn load(&self, dir: &str, name: &str, limit: u64) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.dir(dir).join(name);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("open", &path)(e)),
        };
        // Read one byte past the limit to tell "at the limit" from "beyond it"
        // without trusting the file's reported length.
        let mut bytes = Vec::new();
        file.take(limit + 1).read_to_end(&mut bytes).map_err(io("read", &path))?;
        if bytes.len() as u64 > limit {
            return Err(StateError::TooLarge { bytes: bytes.len() as u64, limit });
        }
        Ok(Some(bytes))
    }

    fn save(&self, dir: &str, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        let dir = self.dir(dir);
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let path = dir.join(name);
        // Write beside the target, flush it to disk, then rename over it: the
        // rename is atomic, so a crash leaves the old file or the new one.
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        file.write_all(bytes).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("sync", &tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io("replace", &path))?;
        // Make the rename itself durable; a directory that cannot be opened
        // for sync (some filesystems) still has the new file.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Files in memory, shared by clones (the simulator keeps one per host so
/// state survives the host's restart), on a clock the owner supplies.
#[derive(Clone)]
pub struct MemoryStore {
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
}

impl MemoryStore {
    pub fn new(clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        MemoryStore { files: Arc::default(), clock: Arc::new(clock) }
    }

    fn key(dir: &str, name: &str) -> String {
        format!("{dir}/{name}")
    }

    /// Puts a file in place, as if saved (tests: a corrupt file).
    pub fn insert(&self, dir: &str, name: &str, bytes: Vec<u8>) {
        self.files.lock().unwrap_or_else(|p| p.into_inner()).insert(Self::key(dir, name), bytes);
    }

    /// A file's bytes, if any.
    pub fn get(&self, dir: &str, name: &str) -> Option<Vec<u8>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner()).get(&Self::key(dir, name)).cloned()
    }
}

impl StateStore for MemoryStore {
    fn wall_clock(&self) -> SystemTime {
        (self.clock)()
    }

    fn load(&self, dir: &str, name: &str, limit: u64) -> Result<Option<Vec<u8>>, StateError> {
        match self.get(dir, name) {
            Some(b) if b.len() as u64 > limit => Err(StateError::TooLarge { bytes: b.len() as u64, limit }),
            other => Ok(other),
        }
    }

    fn save(&self, dir: &str, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        self.insert(dir, name, bytes.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_store_replaces_whole_files_and_reads_them_back() {
        let base = std::env::temp_dir().join(format!("switch-state-test-{}", std::process::id()));
        let store = DirStore::new(&base);
        assert!(store.load("state", "f.json", 100).unwrap().is_none());
        store.save("state", "f.json", b"first").unwrap();
        store.save("state", "f.json", b"second").unwrap();
        assert_eq!(store.load("state", "f.json", 100).unwrap().as_deref(), Some(&b"second"[..]));
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(base.join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["f.json".to_string()]);
        assert!(matches!(store.load("state", "f.json", 3), Err(StateError::TooLarge { .. })));
        // A directory where the file should be is an error, not a panic.
        std::fs::create_dir_all(base.join("state/d.json")).unwrap();
        assert!(store.load("state", "d.json", 100).is_err());
        assert!(store.save("state", "d.json", b"x").is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
