//! Where the registry keeps its documents and blobs: a local directory, or a
//! prefix of an object store (S3, Azure Blob/ADLS, GCS).
//!
//! Both hold the same keys (`blobs/<sha256>.onnx`, `models/<name>/…`) and
//! give the registry the same guarantees, each by its own means:
//!
//! | need | local directory | object store |
//! |------|-----------------|--------------|
//! | claim a new name once ([`Objects::create`]) | temporary file hard-linked to the name | conditional put (`If-None-Match: *`) |
//! | replace a document whole ([`Objects::replace`]) | temporary file renamed over it | a put (objects are replaced atomically) |
//! | append a history entry ([`Objects::append_entry`]) | a line appended to a `.jsonl` file and synced | one object per entry, numbered, claimed by conditional put |
//! | serialize a model's changes ([`Objects::lock`]) | an OS lock on `locks/<name>.lock` | a lease object `locks/<name>.lock`, claimed by conditional put, taken over by a conditional (`If-Match`) put once expired |
//!
//! The registry's API is synchronous (its callers run it on blocking
//! threads); object-store calls run on a small runtime of their own, so they
//! work from any thread, inside a Tokio runtime or not.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use object_store::path::{Path as ObjectPath, PathPart};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use crate::error::{Error, Result};

/// How long a lease on a model's lock lasts on an object store: far longer
/// than any change the registry makes under it (a few requests), so only a
/// holder that died leaves one to expire.
const LEASE: Duration = Duration::from_secs(30);

/// How long a change waits for another holder's lock before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// The registry's storage.
#[derive(Clone)]
pub(crate) enum Objects {
    /// A directory on the local filesystem.
    Local(PathBuf),
    /// A prefix of an object store.
    Remote(Remote),
}

/// A prefix of an object store, and how to show it.
#[derive(Clone)]
pub(crate) struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// The prefix's URI without secrets, ending in `/`.
    shown: String,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Objects::Local(root) => f.debug_tuple("Local").field(root).finish(),
            Objects::Remote(remote) => f.debug_tuple("Remote").field(&remote.shown).finish(),
        }
    }
}

/// A held model lock; released when dropped.
pub(crate) enum Lock {
    /// The OS lock goes with the file handle.
    Local(#[allow(dead_code)] fs::File),
    /// The lease object, deleted on release if it is still this holder's.
    Remote {
        remote: Remote,
        key: String,
        holder: String,
    },
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Lock::Remote {
            remote,
            key,
            holder,
        } = self
        {
            // Only a lease that still names this holder is deleted: one that
            // expired and was taken over belongs to someone else now.
            if let Ok(Some((bytes, _))) = remote.get(key)
                && lease_of(&bytes).is_some_and(|lease| lease.holder == *holder)
                && let Err(e) = remote.delete(key)
            {
                tracing::warn!(lock = %remote.show(key), error = %e, "could not release a registry lock; it expires on its own");
            }
        }
    }
}

impl Objects {
    /// A prefix of an object store; `shown` is its URI without secrets.
    pub(crate) fn remote(store: Arc<dyn ObjectStore>, prefix: ObjectPath, shown: &str) -> Self {
        let mut shown = shown.to_string();
        if !shown.ends_with('/') {
            shown.push('/');
        }
        Objects::Remote(Remote {
            store,
            prefix,
            shown,
        })
    }

    /// Where `key` is, as errors show it.
    pub(crate) fn show(&self, key: &str) -> PathBuf {
        match self {
            Objects::Local(root) => root.join(key),
            Objects::Remote(remote) => PathBuf::from(remote.show(key)),
        }
    }

    /// The registry's location, as logs show it.
    pub(crate) fn location(&self) -> String {
        match self {
            Objects::Local(root) => root.display().to_string(),
            Objects::Remote(remote) => remote.shown.clone(),
        }
    }

    /// The bytes at `key` (`None`: nothing there).
    pub(crate) fn read(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Objects::Local(root) => {
                let path = root.join(key);
                match fs::read(&path) {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::io(path, e)),
                }
            }
            Objects::Remote(remote) => Ok(remote.get(key)?.map(|(bytes, _)| bytes)),
        }
    }

    /// The bytes at `key` in order, in chunks of at most `chunk` bytes,
    /// each handed to `sink` (which answers `false` to stop reading). `false`
    /// when nothing is there. At most one chunk is held at a time.
    pub(crate) fn read_chunks(
        &self,
        key: &str,
        chunk: usize,
        sink: &mut dyn FnMut(Vec<u8>) -> bool,
    ) -> Result<bool> {
        let chunk = chunk.max(1);
        match self {
            Objects::Local(root) => {
                use std::io::Read;
                let path = root.join(key);
                let mut file = match fs::File::open(&path) {
                    Ok(file) => file,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                    Err(e) => return Err(Error::io(path, e)),
                };
                loop {
                    let mut buffer = Vec::with_capacity(chunk);
                    let read = (&mut file)
                        .take(chunk as u64)
                        .read_to_end(&mut buffer)
                        .map_err(|e| Error::io(path.clone(), e))?;
                    if read == 0 || !sink(buffer) {
                        return Ok(true);
                    }
                }
            }
            Objects::Remote(remote) => {
                let Some(size) = self.size(key)? else {
                    return Ok(false);
                };
                let mut start = 0u64;
                while start < size {
                    let end = (start + chunk as u64).min(size);
                    let path = remote.path(key);
                    let store = remote.store.clone();
                    let bytes = run(async move { store.get_range(&path, start..end).await })
                        .map_err(|e| remote.error(key, e))?;
                    if !sink(bytes.to_vec()) {
                        break;
                    }
                    start = end;
                }
                Ok(true)
            }
        }
    }

    /// The size of the object at `key` (`None`: nothing there).
    pub(crate) fn size(&self, key: &str) -> Result<Option<u64>> {
        match self {
            Objects::Local(root) => {
                let path = root.join(key);
                match fs::metadata(&path) {
                    Ok(meta) => Ok(Some(meta.len())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::io(path, e)),
                }
            }
            Objects::Remote(remote) => {
                let path = remote.path(key);
                let store = remote.store.clone();
                match run(async move { store.head(&path).await }) {
                    Ok(meta) => Ok(Some(meta.size)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(remote.error(key, e)),
                }
            }
        }
    }

    /// Whether something is at `key`.
    pub(crate) fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.size(key)?.is_some())
    }

    /// Writes `bytes` at `key` unless something is there already: `true`
    /// when this call wrote it. Of two concurrent creators, exactly one wins.
    pub(crate) fn create(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        match self {
            Objects::Local(root) => {
                let path = root.join(key);
                let dir = parent_of(&path)?;
                let tmp = write_temp(dir, bytes)?;
                // A hard link fails if the name is taken.
                let linked = fs::hard_link(&tmp, &path);
                let _ = fs::remove_file(&tmp);
                match linked {
                    Ok(()) => {
                        sync_dir(dir)?;
                        Ok(true)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(Error::io(path, e)),
                }
            }
            Objects::Remote(remote) => match remote.put(key, bytes, PutMode::Create) {
                Ok(()) => Ok(true),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                Err(e) => Err(remote.error(key, e)),
            },
        }
    }

    /// Replaces whatever is at `key` with `bytes`, atomically: readers see
    /// the old or the new bytes, never part of either.
    pub(crate) fn replace(&self, key: &str, bytes: &[u8]) -> Result<()> {
        match self {
            Objects::Local(root) => {
                let path = root.join(key);
                let dir = parent_of(&path)?;
                let tmp = write_temp(dir, bytes)?;
                if let Err(e) = fs::rename(&tmp, &path) {
                    let _ = fs::remove_file(&tmp);
                    return Err(Error::io(path, e));
                }
                sync_dir(dir)
            }
            Objects::Remote(remote) => remote
                .put(key, bytes, PutMode::Overwrite)
                .map_err(|e| remote.error(key, e)),
        }
    }

    /// Deletes `key` (no error if nothing is there).
    pub(crate) fn delete(&self, key: &str) -> Result<()> {
        match self {
            Objects::Local(root) => {
                let path = root.join(key);
                match fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(Error::io(path, e)),
                }
            }
            Objects::Remote(remote) => remote.delete(key).map_err(|e| remote.error(key, e)),
        }
    }

    /// The names directly under `dir` (files and sub-directories alike).
    pub(crate) fn list(&self, dir: &str) -> Result<Vec<String>> {
        match self {
            Objects::Local(root) => {
                let path = root.join(dir);
                let entries = match fs::read_dir(&path) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(Error::io(path, e)),
                };
                let mut names = Vec::new();
                for entry in entries {
                    let entry = entry.map_err(|e| Error::io(&path, e))?;
                    if let Some(name) = entry.file_name().to_str() {
                        names.push(name.to_string());
                    }
                }
                Ok(names)
            }
            Objects::Remote(remote) => {
                let path = remote.path(dir);
                let store = remote.store.clone();
                let listed = run(async move { store.list_with_delimiter(Some(&path)).await })
                    .map_err(|e| remote.error(dir, e))?;
                let names = listed
                    .common_prefixes
                    .iter()
                    .filter_map(|p| p.filename())
                    .chain(listed.objects.iter().filter_map(|o| o.location.filename()))
                    .map(str::to_string)
                    .collect();
                Ok(names)
            }
        }
    }

    /// Moves everything under `from` to `to` (which must not exist). Local
    /// directories move at once; on an object store each object is copied
    /// and then the originals deleted, so a failure part-way leaves both
    /// (the caller holds both models' locks).
    pub(crate) fn move_tree(&self, from: &str, to: &str) -> Result<()> {
        match self {
            Objects::Local(root) => {
                let (source, target) = (root.join(from), root.join(to));
                fs::rename(&source, &target).map_err(|e| Error::io(&source, e))?;
                sync_dir(parent_of(&target)?)
            }
            Objects::Remote(remote) => {
                let keys = remote.keys_under(from)?;
                for key in &keys {
                    let moved = format!("{to}{}", &key[from.len()..]);
                    let (source, target) = (remote.path(key), remote.path(&moved));
                    let store = remote.store.clone();
                    run(async move { store.copy(&source, &target).await })
                        .map_err(|e| remote.error(key, e))?;
                }
                for key in &keys {
                    remote.delete(key).map_err(|e| remote.error(key, e))?;
                }
                Ok(())
            }
        }
    }

    /// Deletes everything under `dir`. A local directory is renamed out of
    /// the way first, so it vanishes at once.
    pub(crate) fn delete_tree(&self, dir: &str) -> Result<()> {
        match self {
            Objects::Local(root) => {
                let path = root.join(dir);
                if !path.exists() {
                    return Ok(());
                }
                let doomed = parent_of(&path)?.join(format!(
                    ".deleted-{}-{}",
                    path.file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default(),
                    std::process::id()
                ));
                fs::rename(&path, &doomed).map_err(|e| Error::io(&path, e))?;
                fs::remove_dir_all(&doomed).map_err(|e| Error::io(&doomed, e))
            }
            Objects::Remote(remote) => {
                for key in remote.keys_under(dir)? {
                    remote.delete(&key).map_err(|e| remote.error(&key, e))?;
                }
                Ok(())
            }
        }
    }

    /// Appends one entry to the log at `key`, durably. Locally the log is a
    /// JSON-lines file; on an object store each entry is its own object,
    /// `key/<number>.json`, since objects cannot be appended to.
    pub(crate) fn append_entry(&self, key: &str, entry: &[u8]) -> Result<()> {
        match self {
            Objects::Local(root) => {
                let path = root.join(format!("{key}.jsonl"));
                parent_of(&path)?;
                let mut line = entry.to_vec();
                line.push(b'\n');
                let mut file = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| Error::io(&path, e))?;
                file.write_all(&line).map_err(|e| Error::io(&path, e))?;
                file.sync_all().map_err(|e| Error::io(&path, e))
            }
            Objects::Remote(_) => {
                let mut next = self.entry_numbers(key)?.last().map_or(1, |n| n + 1);
                // Claimed by conditional put: a number is never written twice.
                while !self.create(&format!("{key}/{next:020}.json"), entry)? {
                    next += 1;
                }
                Ok(())
            }
        }
    }

    /// The entries of the log at `key`, oldest first.
    pub(crate) fn entries(&self, key: &str) -> Result<Vec<(PathBuf, Vec<u8>)>> {
        match self {
            Objects::Local(root) => {
                let path = root.join(format!("{key}.jsonl"));
                let text = match fs::read(&path) {
                    Ok(text) => text,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(Error::io(path, e)),
                };
                Ok(text
                    .split(|&b| b == b'\n')
                    .filter(|line| !line.trim_ascii().is_empty())
                    .map(|line| (path.clone(), line.to_vec()))
                    .collect())
            }
            Objects::Remote(_) => {
                let mut entries = Vec::new();
                for number in self.entry_numbers(key)? {
                    let entry_key = format!("{key}/{number:020}.json");
                    // Entries are never deleted: a missing one is a race with
                    // a model deletion, and the model is gone anyway.
                    if let Some(bytes) = self.read(&entry_key)? {
                        entries.push((self.show(&entry_key), bytes));
                    }
                }
                Ok(entries)
            }
        }
    }

    fn entry_numbers(&self, key: &str) -> Result<Vec<u64>> {
        let mut numbers: Vec<u64> = self
            .list(key)?
            .iter()
            .filter_map(|name| name.strip_suffix(".json")?.parse().ok())
            .collect();
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// Takes the lock `key`, waiting for another holder up to a minute.
    pub(crate) fn lock(&self, key: &str) -> Result<Lock> {
        match self {
            Objects::Local(root) => {
                let path = root.join(key);
                parent_of(&path)?;
                let file = fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::io(&path, e))?;
                file.lock().map_err(|e| Error::io(&path, e))?;
                Ok(Lock::Local(file))
            }
            Objects::Remote(remote) => remote.lock(key),
        }
    }
}

/// A lease on a lock object.
#[derive(serde::Serialize, serde::Deserialize)]
struct Lease {
    /// Who holds it: host, process and a per-lock nonce.
    holder: String,
    /// Until when, in milliseconds since the epoch.
    expires_ms: i64,
}

fn lease_of(bytes: &[u8]) -> Option<Lease> {
    serde_json::from_slice(bytes).ok()
}

impl Remote {
    fn show(&self, key: &str) -> String {
        format!("{}{key}", self.shown)
    }

    fn path(&self, key: &str) -> ObjectPath {
        ObjectPath::from_iter(
            self.prefix
                .parts()
                .chain(key.split('/').filter(|p| !p.is_empty()).map(PathPart::from)),
        )
    }

    /// An object-store error as the registry reports it: the object's URI
    /// (without secrets) and what the store said.
    fn error(&self, key: &str, e: object_store::Error) -> Error {
        Error::Storage {
            location: self.show(key),
            message: e.to_string(),
        }
    }

    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, UpdateVersion)>> {
        let path = self.path(key);
        let store = self.store.clone();
        let got = run(async move {
            let got = store.get(&path).await?;
            let version = UpdateVersion {
                e_tag: got.meta.e_tag.clone(),
                version: got.meta.version.clone(),
            };
            Ok::<_, object_store::Error>((got.bytes().await?.to_vec(), version))
        });
        match got {
            Ok(got) => Ok(Some(got)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(key, e)),
        }
    }

    fn put(&self, key: &str, bytes: &[u8], mode: PutMode) -> Result<(), object_store::Error> {
        let path = self.path(key);
        let store = self.store.clone();
        let payload = PutPayload::from(bytes.to_vec());
        run(async move {
            store
                .put_opts(&path, payload, PutOptions::from(mode))
                .await
                .map(|_| ())
        })
    }

    fn delete(&self, key: &str) -> Result<(), object_store::Error> {
        let path = self.path(key);
        let store = self.store.clone();
        match run(async move { store.delete(&path).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every key under `dir`, relative to the registry's prefix.
    fn keys_under(&self, dir: &str) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        let path = self.path(dir);
        let store = self.store.clone();
        let listed = run(async move { store.list(Some(&path)).try_collect::<Vec<_>>().await })
            .map_err(|e| self.error(dir, e))?;
        let skip = self.prefix.parts().count();
        Ok(listed
            .into_iter()
            .map(|meta| {
                meta.location
                    .parts()
                    .skip(skip)
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect())
    }

    fn lock(&self, key: &str) -> Result<Lock> {
        let holder = holder_id();
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let lease = Lease {
                holder: holder.clone(),
                expires_ms: chrono::Utc::now().timestamp_millis() + LEASE.as_millis() as i64,
            };
            let body = serde_json::to_vec(&lease).map_err(|source| Error::Metadata {
                path: PathBuf::from(self.show(key)),
                source,
            })?;
            let held = || Lock::Remote {
                remote: self.clone(),
                key: key.to_string(),
                holder: holder.clone(),
            };
            match self.put(key, &body, PutMode::Create) {
                Ok(()) => return Ok(held()),
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(self.error(key, e)),
            }
            // Someone holds it: take it over if their lease ran out (only if
            // it is still the lease read, so two takers cannot both win).
            if let Some((bytes, version)) = self.get(key)? {
                let current = lease_of(&bytes);
                let expired = current
                    .as_ref()
                    .is_none_or(|l| l.expires_ms < chrono::Utc::now().timestamp_millis());
                if expired {
                    match self.put(key, &body, PutMode::Update(version)) {
                        Ok(()) => {
                            tracing::warn!(
                                lock = %self.show(key),
                                previous = current.map(|l| l.holder).unwrap_or_default(),
                                "took over an expired registry lock"
                            );
                            return Ok(held());
                        }
                        Err(
                            object_store::Error::Precondition { .. }
                            | object_store::Error::NotFound { .. },
                        ) => {}
                        Err(e) => return Err(self.error(key, e)),
                    }
                } else if started.elapsed() > LOCK_WAIT {
                    return Err(Error::Storage {
                        location: self.show(key),
                        message: format!(
                            "the lock is held by {} and was not released within {} s",
                            current.map(|l| l.holder).unwrap_or_default(),
                            LOCK_WAIT.as_secs()
                        ),
                    });
                }
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

/// Who takes a lock: host, process and a nonce per call.
fn holder_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".to_string());
    format!(
        "{host}:{}:{}:{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Runs an object-store call on the registry's own runtime and waits for it.
fn run<T: Send + 'static>(
    future: impl Future<Output = Result<T, object_store::Error>> + Send + 'static,
) -> Result<T, object_store::Error> {
    static RUNTIME: OnceLock<std::io::Result<tokio::runtime::Runtime>> = OnceLock::new();
    let unavailable = |message: String| object_store::Error::Generic {
        store: "registry",
        source: message.into(),
    };
    let runtime = RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("aurum-registry-io")
                .enable_all()
                .build()
        })
        .as_ref()
        .map_err(|e| unavailable(format!("cannot start the registry's I/O runtime: {e}")))?;
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = sender.send(future.await);
    });
    receiver
        .recv()
        .map_err(|_| unavailable("the registry's I/O task ended without an answer".into()))?
}

/// The directory holding `path`, created if needed.
fn parent_of(path: &Path) -> Result<&Path> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    Ok(dir)
}

/// Writes `bytes` to a new, uniquely named temporary file in `dir`, synced.
fn write_temp(dir: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(".tmp-{}-{nonce}-{count}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    file.write_all(bytes).map_err(|e| Error::io(&path, e))?;
    file.sync_all().map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same checks on both kinds of storage: a temporary directory and an
    /// in-memory object store (which honours conditional puts as S3 and
    /// Azure do).
    fn each_storage(check: impl Fn(&Objects)) {
        let dir = tempfile::tempdir().unwrap();
        check(&Objects::Local(dir.path().to_path_buf()));
        let memory = Arc::new(object_store::memory::InMemory::new());
        check(&Objects::remote(
            memory,
            ObjectPath::from("lake/registry"),
            "memory://lake/registry",
        ));
    }

    #[test]
    fn a_name_is_created_once() {
        each_storage(|objects| {
            assert!(
                objects
                    .create("models/m/versions/1.json", b"first")
                    .unwrap()
            );
            assert!(
                !objects
                    .create("models/m/versions/1.json", b"second")
                    .unwrap()
            );
            assert_eq!(
                objects.read("models/m/versions/1.json").unwrap().unwrap(),
                b"first"
            );
            assert_eq!(objects.size("models/m/versions/1.json").unwrap(), Some(5));
            assert_eq!(objects.read("models/m/versions/2.json").unwrap(), None);
        });
    }

    #[test]
    fn listing_shows_files_and_directories_directly_under() {
        each_storage(|objects| {
            objects.replace("models/a/model.json", b"{}").unwrap();
            objects.replace("models/b/versions/1.json", b"{}").unwrap();
            objects.replace("models/top.txt", b"").unwrap();
            let mut names = objects.list("models").unwrap();
            names.sort();
            assert_eq!(names, ["a", "b", "top.txt"]);
            assert!(objects.list("nothing/here").unwrap().is_empty());
        });
    }

    #[test]
    fn log_entries_come_back_in_order() {
        each_storage(|objects| {
            for entry in ["one", "two", "three"] {
                objects
                    .append_entry("models/m/history", entry.as_bytes())
                    .unwrap();
            }
            let entries: Vec<Vec<u8>> = objects
                .entries("models/m/history")
                .unwrap()
                .into_iter()
                .map(|(_, bytes)| bytes)
                .collect();
            assert_eq!(
                entries,
                [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
            );
        });
    }

    #[test]
    fn trees_move_and_vanish_whole() {
        each_storage(|objects| {
            objects.replace("models/old/model.json", b"m").unwrap();
            objects.replace("models/old/versions/1.json", b"v").unwrap();
            objects.move_tree("models/old", "models/new").unwrap();
            assert!(objects.list("models/old").unwrap().is_empty());
            assert_eq!(
                objects.read("models/new/versions/1.json").unwrap().unwrap(),
                b"v"
            );
            objects.delete_tree("models/new").unwrap();
            assert!(objects.list("models/new").unwrap().is_empty());
            let listed: Vec<String> = objects.list("models").unwrap();
            assert!(listed.iter().all(|n| n.starts_with('.')), "{listed:?}");
        });
    }

    #[test]
    fn a_lock_excludes_until_released() {
        each_storage(|objects| {
            let held = objects.lock("locks/m.lock").unwrap();
            let (sender, receiver) = std::sync::mpsc::channel();
            let other = objects.clone();
            let waiter = std::thread::spawn(move || {
                let _second = other.lock("locks/m.lock").unwrap();
                sender.send(()).unwrap();
            });
            assert!(
                receiver.recv_timeout(Duration::from_millis(300)).is_err(),
                "a second holder got the lock while the first held it"
            );
            drop(held);
            receiver
                .recv_timeout(Duration::from_secs(10))
                .expect("the lock was not released");
            waiter.join().unwrap();
        });
    }

    #[test]
    fn an_expired_lease_is_taken_over() {
        let memory = Arc::new(object_store::memory::InMemory::new());
        let objects = Objects::remote(memory, ObjectPath::from("r"), "memory://r");
        let dead = Lease {
            holder: "a process that died".into(),
            expires_ms: chrono::Utc::now().timestamp_millis() - 1,
        };
        assert!(
            objects
                .create("locks/m.lock", &serde_json::to_vec(&dead).unwrap())
                .unwrap()
        );
        let lock = objects.lock("locks/m.lock").unwrap();
        let Lock::Remote { holder, .. } = &lock else {
            panic!("a remote lock was expected")
        };
        let current = lease_of(&objects.read("locks/m.lock").unwrap().unwrap()).unwrap();
        assert_eq!(&current.holder, holder);
        drop(lock);
        assert_eq!(objects.read("locks/m.lock").unwrap(), None);
    }
}
