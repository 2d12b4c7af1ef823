//! The manifest source: Kubernetes objects from YAML and JSON files, read at start and
//! followed live. A file that stops parsing keeps its last good objects; a deleted file takes
//! its objects with it. Editors' atomic renames and ConfigMap volume symlink swaps work,
//! because every change triggers a rescan of the whole tree rather than trusting the event.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use vestibule_translate::{Kind, Object, Snapshot};

use crate::parse::parse_manifest;
use crate::{Debounce, SourceProblem, SourceSnapshot};

/// Files larger than this are refused rather than read into memory.
const MAX_FILE_BYTES: u64 = 64 << 20;
/// Directory depth followed below a root, against symlink loops.
const MAX_DEPTH: usize = 16;
/// A full rescan runs this often even without events: a safety net for filesystems that do
/// not deliver them (some network and overlay mounts) and for roots that were replaced.
const RESCAN_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("watching files: {0}")]
    Watch(#[from] notify::Error),
}

/// What identifies a file's version without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Fingerprint {
    fn of(meta: &std::fs::Metadata) -> Fingerprint {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Fingerprint {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        }
    }
}

#[derive(Debug)]
struct FileState {
    fingerprint: Option<Fingerprint>,
    content: Option<Vec<u8>>,
    /// The objects of the last version that parsed.
    objects: Vec<Object>,
    error: Option<String>,
}

/// Objects from manifest files and directories.
#[derive(Debug)]
pub struct ManifestSource {
    roots: Vec<PathBuf>,
    files: BTreeMap<PathBuf, FileState>,
    root_problems: Vec<SourceProblem>,
}

impl ManifestSource {
    /// Reads every root once. A root that does not exist is an error here (at start); later it
    /// only removes its objects and is reported.
    pub fn open(roots: Vec<PathBuf>) -> Result<ManifestSource, ManifestError> {
        for root in &roots {
            std::fs::metadata(root).map_err(|source| ManifestError::Root {
                path: root.clone(),
                source,
            })?;
        }
        let mut source = ManifestSource {
            roots,
            files: BTreeMap::new(),
            root_problems: Vec::new(),
        };
        source.rescan();
        Ok(source)
    }

    /// Reads what changed since the last scan. Returns true when the snapshot changed.
    pub fn rescan(&mut self) -> bool {
        let mut changed = false;
        let mut present = Vec::new();
        let mut root_problems = Vec::new();
        for root in &self.roots {
            if let Err(e) = list(root, 0, &mut present) {
                root_problems.push(SourceProblem {
                    source: root.display().to_string(),
                    message: format!("cannot be read: {e}"),
                });
            }
        }
        present.sort();
        present.dedup();
        let before = self.files.len();
        self.files
            .retain(|path, _| present.binary_search(path).is_ok());
        if self.files.len() != before {
            changed = true;
        }
        for path in present {
            changed |= self.refresh(path);
        }
        if root_problems != self.root_problems {
            for p in &root_problems {
                warn!(path = %p.source, "{}", p.message);
            }
            self.root_problems = root_problems;
            changed = true;
        }
        changed
    }

    /// Re-reads one file if its fingerprint changed. Returns true when its objects or its
    /// error changed.
    fn refresh(&mut self, path: PathBuf) -> bool {
        let state = self.files.entry(path.clone()).or_insert(FileState {
            fingerprint: None,
            content: None,
            objects: Vec::new(),
            error: None,
        });
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            // Gone between listing and reading: the next scan drops it.
            Err(_) => return false,
        };
        let fingerprint = Fingerprint::of(&meta);
        if state.fingerprint.as_ref() == Some(&fingerprint) {
            return false;
        }
        state.fingerprint = Some(fingerprint);
        let result = if meta.len() > MAX_FILE_BYTES {
            Err(format!(
                "file is {} bytes; the limit is {MAX_FILE_BYTES}",
                meta.len()
            ))
        } else {
            std::fs::read(&path).map_err(|e| format!("cannot be read: {e}"))
        };
        let content = match result {
            Ok(content) => content,
            Err(message) => return set_error(state, &path, message),
        };
        if state.content.as_ref() == Some(&content) {
            return false;
        }
        let parsed = std::str::from_utf8(&content)
            .map_err(|e| format!("not UTF-8: {e}"))
            .and_then(|text| parse_manifest(&path, text).map_err(|e| e.to_string()));
        state.content = Some(content);
        match parsed {
            Ok(parsed) => {
                if !parsed.skipped.is_empty() {
                    debug!(path = %path.display(), skipped = ?parsed.skipped, "kinds Vestibule does not read");
                }
                if state.error.is_some() {
                    info!(path = %path.display(), "file parses again");
                }
                state.objects = parsed.objects;
                state.error = None;
                true
            }
            Err(message) => set_error(state, &path, message),
        }
    }

    /// The objects of every file, and the problems that kept some out. Where the same object
    /// is defined in two files, the file that sorts first wins.
    pub fn current(&self) -> SourceSnapshot {
        let mut snapshot = Snapshot::default();
        let mut problems = self.root_problems.clone();
        let mut defined_in: HashMap<(Kind, String, String), &Path> = HashMap::new();
        for (path, state) in &self.files {
            if let Some(error) = &state.error {
                let kept = if state.objects.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (its {} objects from the last version that parsed stay in use)",
                        state.objects.len()
                    )
                };
                problems.push(SourceProblem {
                    source: path.display().to_string(),
                    message: format!("{error}{kept}"),
                });
            }
            for object in &state.objects {
                let r = object.object_ref();
                let key = (r.kind, r.namespace.clone(), r.name.clone());
                match defined_in.get(&key) {
                    Some(first) => problems.push(SourceProblem {
                        source: path.display().to_string(),
                        message: format!(
                            "{} {r} is also defined in {}; this definition is ignored",
                            r.kind,
                            first.display()
                        ),
                    }),
                    None => {
                        defined_in.insert(key, path);
                        snapshot.push(object.clone());
                    }
                }
            }
        }
        problems.sort();
        SourceSnapshot { snapshot, problems }
    }

    /// Follows changes until `tx` has no receivers, sending a new snapshot after each settled
    /// burst of changes.
    pub async fn watch(
        mut self,
        tx: watch::Sender<Arc<SourceSnapshot>>,
        debounce: Debounce,
    ) -> Result<(), ManifestError> {
        let (events_tx, mut events) = mpsc::unbounded_channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if !event.as_ref().is_ok_and(is_read_only) {
                    let _ = events_tx.send(());
                }
            })?;
        let mut watched: HashMap<PathBuf, u64> = HashMap::new();
        self.ensure_watches(&mut watcher, &mut watched);
        // Whatever changed between the first scan and the watches being in place.
        if self.rescan() {
            tx.send_replace(Arc::new(self.current()));
        }
        let mut tick = tokio::time::interval(RESCAN_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                settled = debounce.settle(&mut events) => {
                    if !settled {
                        return Ok(());
                    }
                }
                _ = tick.tick() => self.ensure_watches(&mut watcher, &mut watched),
                _ = tx.closed() => return Ok(()),
            }
            let span = tracing::info_span!("rescan", source = "manifests");
            let _entered = span.enter();
            if self.rescan() {
                tx.send_replace(Arc::new(self.current()));
            }
        }
    }

    /// Watches each root's directory (a file root's parent, so renames over it are seen),
    /// again whenever that directory was replaced.
    fn ensure_watches(
        &self,
        watcher: &mut notify::RecommendedWatcher,
        watched: &mut HashMap<PathBuf, u64>,
    ) {
        for root in &self.roots {
            let (dir, mode) = match std::fs::metadata(root) {
                Ok(meta) if meta.is_dir() => (root.clone(), RecursiveMode::Recursive),
                _ => match root.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => {
                        (parent.to_path_buf(), RecursiveMode::NonRecursive)
                    }
                    _ => (PathBuf::from("."), RecursiveMode::NonRecursive),
                },
            };
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let inode = Fingerprint::of(&meta).inode;
            if watched.get(&dir) == Some(&inode) {
                continue;
            }
            let _ = watcher.unwatch(&dir);
            match watcher.watch(&dir, mode) {
                Ok(()) => {
                    debug!(path = %dir.display(), "watching");
                    watched.insert(dir, inode);
                }
                Err(e) => warn!(
                    path = %dir.display(),
                    error = %e,
                    "cannot watch; changes are picked up by the periodic rescan"
                ),
            }
        }
    }
}

/// Opening and reading files (our own rescans among them) changes nothing; a close after
/// writing does, as the last event of a write.
fn is_read_only(event: &notify::Event) -> bool {
    use notify::event::{AccessKind, AccessMode};
    matches!(
        event.kind,
        EventKind::Access(
            AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read)
        )
    )
}

fn set_error(state: &mut FileState, path: &Path, message: String) -> bool {
    if state.error.as_ref() == Some(&message) {
        return false;
    }
    warn!(
        path = %path.display(),
        kept_objects = state.objects.len(),
        "{message}"
    );
    state.error = Some(message);
    true
}

fn is_manifest(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "yaml" | "yml" | "json"))
}

/// Manifest files under `path`: the path itself if it is a file (whatever its extension),
/// else `.yaml`, `.yml` and `.json` files below it, skipping hidden entries (editor swap
/// files, and ConfigMap volumes' `..data` directories, whose files also appear as symlinks at
/// the top).
fn list(path: &Path, depth: usize, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        if depth == 0 || is_manifest(path) {
            out.push(path.to_path_buf());
        }
        return Ok(());
    }
    if depth > MAX_DEPTH {
        return Ok(());
    }
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        // A broken symlink or a file removed meanwhile is simply not listed.
        let _ = list(&entry.path(), depth + 1, out);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
