//! Loading credential files: the cold scan of every configured path, and the
//! index that later re-reads only the files a watcher reported.
//!
//! A pool can hold thousands of credential files, so the scan reads them on a
//! few threads, but never with more than `max_open` files open at once: the
//! gateway's shards hold many sockets and share the process's fd limit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::file::{parse, Fingerprint, OAuthCredential, OAuthKind, MAX_FILE_SIZE};

/// What a cold [`scan`] found.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Every credential loaded, in path order, one per fingerprint.
    pub credentials: Vec<OAuthCredential>,
    /// Files (or configured paths) that could not be used, with the reason.
    /// Reasons never contain a token.
    pub errors: Vec<(PathBuf, String)>,
    /// Files skipped because an earlier path (in sorted order) holds the same
    /// refresh token: (skipped, kept).
    pub duplicates: Vec<(PathBuf, PathBuf)>,
    /// Fingerprint and stamp of every file that parsed (duplicates included),
    /// so a [`CredentialIndex`] can be built without reading them again.
    seen: Vec<(PathBuf, Fingerprint, FileStamp)>,
}

/// What identifies one version of a file without reading it. `mtime` and
/// `len` are the documented test; the inode and ctime make it robust to a
/// same-length atomic replace within one mtime tick on coarse-clock
/// filesystems (a rename-into-place always brings a new inode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(m: &fs::Metadata) -> FileStamp {
        FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Expands configured paths into the files to read: a directory stands for
/// every `*.json` directly in it (regular files, symlinks followed, no
/// recursion); any other path stands for itself, whatever its name. Returns
/// the files sorted and deduplicated, and the paths that could not be listed.
pub fn expand(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match fs::metadata(path) {
            Ok(m) if m.is_dir() => list_dir(path, &mut files, &mut errors),
            Ok(_) => files.push(path.clone()),
            Err(e) => errors.push((path.clone(), format!("cannot read: {e}"))),
        }
    }
    // Sorted so that the scan, its duplicate choice and its report are the
    // same on every run, whatever order the directory returns.
    files.sort();
    files.dedup();
    (files, errors)
}

/// Whether a directory entry's name makes it a credential file. Temp files
/// of [`super::write`] (`.<name>.tmp-<pid>-<n>`) never end in `.json`.
pub(super) fn is_json_name(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().ends_with(b".json")
}

fn list_dir(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<(PathBuf, String)>) {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push((dir.to_path_buf(), format!("cannot list directory: {e}")));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                errors.push((dir.to_path_buf(), format!("cannot list directory: {e}")));
                continue;
            }
        };
        if !is_json_name(&entry.file_name()) {
            continue;
        }
        let path = dir.join(entry.file_name());
        let is_file = match entry.file_type() {
            Ok(t) if t.is_symlink() => fs::metadata(&path).map(|m| m.is_file()).unwrap_or(true),
            Ok(t) => t.is_file(),
            Err(_) => true, // let the read report what is wrong
        };
        if is_file {
            files.push(path);
        }
    }
}

/// The outcome of loading one file.
enum Load {
    /// The file no longer exists (or is no longer a regular file).
    Gone,
    /// Its stamp equals the one the caller already holds: not read.
    Unchanged,
    /// Read and parsed.
    /// (Boxed: the other outcomes are small and far more common.)
    Parsed(Box<OAuthCredential>, FileStamp),
    /// Could not be opened, read or parsed.
    Bad(String),
}

/// Opens, stats and reads one file. The stamp comes from the open descriptor,
/// so it describes the very inode whose bytes are parsed.
fn load(path: &Path, kind: OAuthKind, known: Option<FileStamp>) -> Load {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Load::Gone,
        Err(e) => return Load::Bad(format!("cannot open: {e}")),
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return Load::Bad(format!("cannot stat: {e}")),
    };
    if !meta.is_file() {
        return Load::Gone;
    }
    let stamp = FileStamp::of(&meta);
    if known == Some(stamp) {
        return Load::Unchanged;
    }
    if meta.len() > MAX_FILE_SIZE as u64 {
        return Load::Bad(format!(
            "file too large ({} bytes, limit {MAX_FILE_SIZE})",
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
    // One byte over the limit is enough to tell a file that grew since the
    // stat; the parser rejects it.
    if let Err(e) = (&mut file)
        .take(MAX_FILE_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
    {
        return Load::Bad(format!("cannot read: {e}"));
    }
    drop(file);
    match parse(path, &bytes, kind) {
        Ok(c) => Load::Parsed(Box::new(c), stamp),
        Err(e) => Load::Bad(e.to_string()),
    }
}

/// Runs `f` over `items` on up to `max_open` scoped threads (also capped at
/// twice the cores and at the item count), and returns the results in item
/// order. Each worker handles one item at a time, so when `f` opens one file
/// and closes it before returning, at most `max_open` files are open at once.
pub(super) fn load_parallel<T: Sync, R: Send>(
    items: &[T],
    max_open: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = max_open.max(1).min(cores * 2).min(items.len());
    if workers <= 1 {
        return items.iter().map(f).collect();
    }
    // Workers pull the next index from a shared counter: files differ in
    // size and in cache state, so a static split would leave threads idle.
    let next = AtomicUsize::new(0);
    let mut slots: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    let parts: Vec<Vec<(usize, R)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        out.push((i, f(item)));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    for (i, r) in parts.into_iter().flatten() {
        slots[i] = Some(r);
    }
    slots
        .into_iter()
        .map(|r| r.expect("every index is taken by exactly one worker"))
        .collect()
}

/// Reads every credential file the configured `paths` name (see [`expand`]),
/// with at most `max_open` files open at once. Bad files are reported and
/// skipped; files holding a refresh token already loaded from an earlier
/// path are reported as duplicates and skipped.
pub fn scan(paths: &[PathBuf], kind: OAuthKind, max_open: usize) -> ScanReport {
    let (files, errors) = expand(paths);
    let loads = load_parallel(&files, max_open, |p| load(p, kind, None));
    let mut report = ScanReport {
        errors,
        ..ScanReport::default()
    };
    let mut kept: HashMap<Fingerprint, usize> = HashMap::new();
    for (path, l) in files.into_iter().zip(loads) {
        match l {
            // Listed a moment ago, deleted since: nothing to load.
            Load::Gone | Load::Unchanged => {}
            Load::Bad(reason) => report.errors.push((path, reason)),
            Load::Parsed(cred, stamp) => {
                let fp = cred.fingerprint();
                report.seen.push((path.clone(), fp, stamp));
                if let Some(&i) = kept.get(&fp) {
                    let first = report.credentials[i].path.clone();
                    report.duplicates.push((path, first));
                } else {
                    kept.insert(fp, report.credentials.len());
                    report.credentials.push(*cred);
                }
            }
        }
    }
    report
}

/// One file the index knows.
#[derive(Clone, Debug)]
struct Entry {
    fp: Fingerprint,
    stamp: FileStamp,
    /// False for a duplicate: a file whose refresh token is served from
    /// another path. It is remembered so that it can take over when that
    /// path goes away.
    live: bool,
}

/// What changed after [`CredentialIndex::apply_changes`].
#[derive(Debug, Default)]
pub struct Changes {
    /// Credentials new to the index.
    pub added: Vec<OAuthCredential>,
    /// Credentials re-read from a path the index already served (new access
    /// token, new expiry, maybe a rotated refresh token: see `rekeyed`).
    pub updated: Vec<OAuthCredential>,
    /// Fingerprints no longer served by any file.
    pub removed: Vec<Fingerprint>,
    /// (old, new) fingerprints of updated credentials whose refresh token
    /// changed in place (a provider that rotates refresh tokens, or a file
    /// overwritten with another account). The new one is in `updated`.
    pub rekeyed: Vec<(Fingerprint, Fingerprint)>,
    /// Files that could not be read or parsed. A credential the file served
    /// before stays in service (it may be a writer caught mid-way).
    pub errors: Vec<(PathBuf, String)>,
    /// Files skipped because another path already serves the same refresh
    /// token: (skipped, kept). The already-indexed path wins.
    pub duplicates: Vec<(PathBuf, PathBuf)>,
}

impl Changes {
    /// Whether nothing changed and nothing went wrong.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.updated.is_empty()
            && self.removed.is_empty()
            && self.errors.is_empty()
            && self.duplicates.is_empty()
    }
}

/// Which file serves which credential, and the stamp of every file read, so
/// that a change notification costs one `open`+`fstat` per reported path and
/// a read only when the file really changed.
#[derive(Debug, Default)]
pub struct CredentialIndex {
    by_fp: HashMap<Fingerprint, PathBuf>,
    by_path: BTreeMap<PathBuf, Entry>,
}

impl CredentialIndex {
    /// The index of what `report` loaded (its duplicates included, as
    /// stand-ins).
    pub fn from_report(report: &ScanReport) -> CredentialIndex {
        let live: BTreeSet<&Path> = report
            .credentials
            .iter()
            .map(|c| c.path.as_path())
            .collect();
        let mut index = CredentialIndex::default();
        for (path, fp, stamp) in &report.seen {
            let is_live = live.contains(path.as_path());
            if is_live {
                index.by_fp.insert(*fp, path.clone());
            }
            index.by_path.insert(
                path.clone(),
                Entry {
                    fp: *fp,
                    stamp: *stamp,
                    live: is_live,
                },
            );
        }
        index
    }

    /// How many credentials (distinct fingerprints) are served.
    pub fn len(&self) -> usize {
        self.by_fp.len()
    }

    /// Whether no credential is served.
    pub fn is_empty(&self) -> bool {
        self.by_fp.is_empty()
    }

    /// The file serving a fingerprint.
    pub fn path_of(&self, fp: Fingerprint) -> Option<&Path> {
        self.by_fp.get(&fp).map(PathBuf::as_path)
    }

    /// The fingerprint a file serves (`None` for unknown files and
    /// duplicates).
    pub fn fingerprint_of(&self, path: &Path) -> Option<Fingerprint> {
        self.by_path.get(path).filter(|e| e.live).map(|e| e.fp)
    }

    /// Records a file the gateway itself just wrote (after
    /// [`super::write::write_back`]), so that the watcher's echo of that
    /// write is skipped as unchanged, and a rotated refresh token re-keys
    /// the entry.
    pub fn record_write(&mut self, cred: &OAuthCredential) -> io::Result<()> {
        let stamp = FileStamp::of(&fs::metadata(&cred.path)?);
        let fp = cred.fingerprint();
        if let Some(old) = self.by_path.get(&cred.path) {
            if old.live && old.fp != fp && self.by_fp.get(&old.fp) == Some(&cred.path) {
                self.by_fp.remove(&old.fp);
            }
        }
        self.by_fp.insert(fp, cred.path.clone());
        self.by_path.insert(
            cred.path.clone(),
            Entry {
                fp,
                stamp,
                live: true,
            },
        );
        Ok(())
    }

    /// Re-reads the `changed` paths (from a [`super::watch::Watcher`]), at
    /// most `max_open` at once, and updates the index. A path whose stamp
    /// (mtime, length, inode) is unchanged is not read; a path that no
    /// longer exists removes its credential (a duplicate of it, if any,
    /// takes over); a new file whose refresh token is already served
    /// elsewhere is a duplicate, found through the index.
    pub fn apply_changes(
        &mut self,
        changed: &[PathBuf],
        kind: OAuthKind,
        max_open: usize,
    ) -> Changes {
        let mut paths = changed.to_vec();
        paths.sort();
        paths.dedup();
        let loads = load_parallel(&paths, max_open, |p| {
            load(p, kind, self.by_path.get(p).map(|e| e.stamp))
        });
        let mut changes = Changes::default();
        for (path, l) in paths.into_iter().zip(loads) {
            match l {
                Load::Unchanged => {}
                Load::Bad(reason) => changes.errors.push((path, reason)),
                Load::Gone => {
                    if let Some(old) = self.by_path.remove(&path) {
                        if old.live {
                            self.by_fp.remove(&old.fp);
                            changes.removed.push(old.fp);
                            self.promote(old.fp, kind, &mut changes);
                        }
                    }
                }
                Load::Parsed(cred, stamp) => {
                    self.apply_parsed(path, *cred, stamp, kind, &mut changes)
                }
            }
        }
        changes
    }

    fn apply_parsed(
        &mut self,
        path: PathBuf,
        cred: OAuthCredential,
        stamp: FileStamp,
        kind: OAuthKind,
        changes: &mut Changes,
    ) {
        let fp = cred.fingerprint();
        let old = self.by_path.get(&path).cloned();
        // Already brought up to date in this batch (a promotion read it).
        if old.as_ref().is_some_and(|o| o.stamp == stamp && o.fp == fp) {
            return;
        }
        let was_live = old.as_ref().filter(|o| o.live).map(|o| o.fp);
        match self.by_fp.get(&fp) {
            Some(holder) if *holder != path => {
                // Another file serves this token: this one stands by.
                changes.duplicates.push((path.clone(), holder.clone()));
                self.by_path.insert(
                    path,
                    Entry {
                        fp,
                        stamp,
                        live: false,
                    },
                );
                if let Some(old_fp) = was_live {
                    // It no longer serves what it used to.
                    self.by_fp.remove(&old_fp);
                    changes.removed.push(old_fp);
                    self.promote(old_fp, kind, changes);
                }
            }
            _ => {
                self.by_fp.insert(fp, path.clone());
                self.by_path.insert(
                    path,
                    Entry {
                        fp,
                        stamp,
                        live: true,
                    },
                );
                match was_live {
                    Some(old_fp) => {
                        if old_fp != fp {
                            self.by_fp.remove(&old_fp);
                            changes.rekeyed.push((old_fp, fp));
                            self.promote(old_fp, kind, changes);
                        }
                        changes.updated.push(cred);
                    }
                    None => changes.added.push(cred),
                }
            }
        }
    }

    /// After `fp` lost its file, lets the first (in path order) stand-in
    /// that still holds the same token serve it. The stand-in is read again
    /// (one file) because the index keeps no tokens.
    fn promote(&mut self, fp: Fingerprint, kind: OAuthKind, changes: &mut Changes) {
        let candidates: Vec<PathBuf> = self
            .by_path
            .iter()
            .filter(|(_, e)| !e.live && e.fp == fp)
            .map(|(p, _)| p.clone())
            .collect();
        for path in candidates {
            match load(&path, kind, None) {
                Load::Parsed(cred, stamp) if cred.fingerprint() == fp => {
                    self.by_fp.insert(fp, path.clone());
                    self.by_path.insert(
                        path,
                        Entry {
                            fp,
                            stamp,
                            live: true,
                        },
                    );
                    changes.added.push(*cred);
                    return;
                }
                Load::Gone => {
                    self.by_path.remove(&path);
                }
                // Changed since: its own change event will bring it in.
                _ => {}
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A Gemini-style credential file body.
    pub(crate) fn cred_json(refresh: &str, access: &str) -> String {
        format!(
            r#"{{"access_token":"{access}","refresh_token":"{refresh}","scope":"s","token_type":"Bearer","expiry_date":1754000000000}}"#
        )
    }

    /// Writes a file by rename-into-place, as the CLI tools and write-back do.
    pub(crate) fn put(path: &Path, body: &str) {
        let tmp = path.with_extension("tmp-test");
        fs::write(&tmp, body).unwrap();
        fs::rename(&tmp, path).unwrap();
    }

    fn paths(report: &ScanReport) -> Vec<String> {
        report
            .credentials
            .iter()
            .map(|c| c.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    /// A directory with good, bad, duplicate and non-JSON files.
    fn mixed_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("a.json"), cred_json("r-a", "x")).unwrap();
        fs::write(d.join("b.json"), cred_json("r-b", "x")).unwrap();
        fs::write(d.join("c.json"), cred_json("r-a", "y")).unwrap(); // dup of a
        fs::write(d.join("bad.json"), "{not json").unwrap();
        fs::write(d.join("norefresh.json"), r#"{"access_token":"secret"}"#).unwrap();
        fs::write(d.join("notes.txt"), cred_json("r-txt", "x")).unwrap();
        fs::write(d.join(".a.json.tmp-1-2"), cred_json("r-tmp", "x")).unwrap();
        fs::create_dir(d.join("sub.json")).unwrap();
        fs::create_dir(d.join("sub")).unwrap();
        fs::write(d.join("sub/deep.json"), cred_json("r-deep", "x")).unwrap();
        dir
    }

    #[test]
    fn scan_mixed_directory() {
        let dir = mixed_dir();
        let d = dir.path();
        let r = scan(&[d.to_path_buf()], OAuthKind::GeminiCli, 8);
        assert_eq!(paths(&r), ["a.json", "b.json"]);
        assert_eq!(r.duplicates, [(d.join("c.json"), d.join("a.json"))]);
        let errs: Vec<_> = r
            .errors
            .iter()
            .map(|(p, e)| (p.file_name().unwrap(), e.as_str()))
            .collect();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].0, "bad.json");
        assert!(errs[0].1.starts_with("not JSON"), "{}", errs[0].1);
        assert_eq!(
            errs[1],
            ("norefresh.json".as_ref(), "missing refresh_token")
        );
    }

    #[test]
    fn scan_single_files_and_missing_paths() {
        let dir = mixed_dir();
        let d = dir.path();
        // A file named explicitly counts whatever its extension; the same
        // file named twice (directly and through its directory) loads once.
        let r = scan(
            &[
                d.join("notes.txt"),
                d.join("b.json"),
                d.to_path_buf(),
                d.join("missing.json"),
            ],
            OAuthKind::GeminiCli,
            4,
        );
        assert_eq!(paths(&r), ["a.json", "b.json", "notes.txt"]);
        assert_eq!(r.duplicates.len(), 1);
        assert!(r
            .errors
            .iter()
            .any(|(p, e)| p.ends_with("missing.json") && e.starts_with("cannot read")));
        assert_eq!(r.errors.len(), 3);
    }

    #[test]
    fn max_open_one_gives_identical_results() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..200 {
            // Every 7th file duplicates an earlier one, every 11th is broken.
            let body = if i % 11 == 0 {
                "[]".to_string()
            } else {
                cred_json(&format!("r-{}", if i % 7 == 0 { i - 1 } else { i }), "x")
            };
            fs::write(dir.path().join(format!("{i:04}.json")), body).unwrap();
        }
        let one = scan(&[dir.path().to_path_buf()], OAuthKind::GeminiCli, 1);
        let many = scan(&[dir.path().to_path_buf()], OAuthKind::GeminiCli, 64);
        assert_eq!(one.credentials, many.credentials);
        assert_eq!(one.errors, many.errors);
        assert_eq!(one.duplicates, many.duplicates);
        assert_eq!(one.errors.len(), 19);
        assert!(!one.duplicates.is_empty());
        assert_eq!(
            one.credentials.len() + one.errors.len() + one.duplicates.len(),
            200
        );
    }

    #[test]
    fn load_parallel_respects_max_open() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for max_open in [1, 2, 3, 64] {
            let open = AtomicUsize::new(0);
            let peak = AtomicUsize::new(0);
            let items: Vec<usize> = (0..40).collect();
            let out = load_parallel(&items, max_open, |&i| {
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                // Long enough that workers overlap even on a loaded machine.
                std::thread::sleep(Duration::from_millis(8));
                open.fetch_sub(1, Ordering::SeqCst);
                i * 2
            });
            assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
            let peak = peak.load(Ordering::SeqCst);
            assert!(
                peak <= max_open.min(cores * 2),
                "max_open {max_open}: peak {peak}"
            );
            if max_open > 1 && cores > 1 {
                assert!(peak > 1, "max_open {max_open}: no parallelism");
            }
        }
        assert!(load_parallel(&[] as &[u8], 4, |_| 0).is_empty());
    }

    fn setup() -> (tempfile::TempDir, CredentialIndex) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("a.json"), cred_json("r-a", "a1")).unwrap();
        fs::write(d.join("b.json"), cred_json("r-b", "b1")).unwrap();
        let r = scan(&[d.to_path_buf()], OAuthKind::GeminiCli, 4);
        let index = CredentialIndex::from_report(&r);
        assert_eq!(index.len(), 2);
        (dir, index)
    }

    #[test]
    fn index_unchanged_paths_are_skipped() {
        let (dir, mut index) = setup();
        let d = dir.path();
        let c = index.apply_changes(
            &[d.join("a.json"), d.join("b.json"), d.join("a.json")],
            OAuthKind::GeminiCli,
            4,
        );
        assert!(c.is_empty(), "{c:?}");
        // Unknown paths that do not exist are no change either.
        let c = index.apply_changes(&[d.join("zzz.json")], OAuthKind::GeminiCli, 4);
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn index_modified_added_deleted() {
        let (dir, mut index) = setup();
        let d = dir.path();
        let fa = Fingerprint::of("r-a");
        let fb = Fingerprint::of("r-b");
        put(&d.join("a.json"), &cred_json("r-a", "a2"));
        fs::write(d.join("n.json"), cred_json("r-n", "n1")).unwrap();
        fs::remove_file(d.join("b.json")).unwrap();
        let c = index.apply_changes(
            &[d.join("n.json"), d.join("a.json"), d.join("b.json")],
            OAuthKind::GeminiCli,
            4,
        );
        assert_eq!(c.updated.len(), 1);
        assert_eq!(c.updated[0].access_token, "a2");
        assert_eq!(c.added.len(), 1);
        assert_eq!(c.added[0].refresh_token, "r-n");
        assert_eq!(c.removed, [fb]);
        assert!(c.errors.is_empty() && c.duplicates.is_empty() && c.rekeyed.is_empty());
        assert_eq!(index.len(), 2);
        assert_eq!(index.path_of(fa), Some(d.join("a.json").as_path()));
        assert_eq!(index.path_of(fb), None);
        assert_eq!(
            index.fingerprint_of(&d.join("n.json")),
            Some(Fingerprint::of("r-n"))
        );
        // Again: nothing changed since.
        let c = index.apply_changes(
            &[d.join("n.json"), d.join("a.json")],
            OAuthKind::GeminiCli,
            4,
        );
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn index_rotation_rekeys() {
        let (dir, mut index) = setup();
        let d = dir.path();
        put(&d.join("a.json"), &cred_json("r-a2", "a2"));
        let c = index.apply_changes(&[d.join("a.json")], OAuthKind::GeminiCli, 4);
        assert_eq!(c.updated.len(), 1);
        assert_eq!(
            c.rekeyed,
            [(Fingerprint::of("r-a"), Fingerprint::of("r-a2"))]
        );
        assert!(c.added.is_empty() && c.removed.is_empty());
        assert_eq!(index.path_of(Fingerprint::of("r-a")), None);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn index_duplicates_and_takeover() {
        let (dir, mut index) = setup();
        let d = dir.path();
        let fa = Fingerprint::of("r-a");
        // A new file with a's token: a duplicate, and a keeps serving it.
        fs::write(d.join("0-copy.json"), cred_json("r-a", "other")).unwrap();
        let c = index.apply_changes(&[d.join("0-copy.json")], OAuthKind::GeminiCli, 4);
        assert_eq!(c.duplicates, [(d.join("0-copy.json"), d.join("a.json"))]);
        assert!(c.added.is_empty() && c.updated.is_empty());
        assert_eq!(index.path_of(fa), Some(d.join("a.json").as_path()));
        // Unchanged duplicates are not reported again.
        let c = index.apply_changes(&[d.join("0-copy.json")], OAuthKind::GeminiCli, 4);
        assert!(c.is_empty(), "{c:?}");
        // b overwritten with a's token: b's credential is gone, b is a
        // duplicate of a.
        put(&d.join("b.json"), &cred_json("r-a", "b2"));
        let c = index.apply_changes(&[d.join("b.json")], OAuthKind::GeminiCli, 4);
        assert_eq!(c.removed, [Fingerprint::of("r-b")]);
        assert_eq!(c.duplicates, [(d.join("b.json"), d.join("a.json"))]);
        assert_eq!(index.len(), 1);
        // a deleted: the first stand-in in path order takes over.
        fs::remove_file(d.join("a.json")).unwrap();
        let c = index.apply_changes(&[d.join("a.json")], OAuthKind::GeminiCli, 4);
        assert_eq!(c.removed, [fa]);
        assert_eq!(c.added.len(), 1);
        assert_eq!(c.added[0].path, d.join("0-copy.json"));
        assert_eq!(c.added[0].access_token, "other");
        assert_eq!(index.path_of(fa), Some(d.join("0-copy.json").as_path()));
    }

    #[test]
    fn index_scan_duplicates_stand_by() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("a.json"), cred_json("r", "a")).unwrap();
        fs::write(d.join("b.json"), cred_json("r", "b")).unwrap();
        let r = scan(&[d.to_path_buf()], OAuthKind::GeminiCli, 2);
        assert_eq!(r.duplicates, [(d.join("b.json"), d.join("a.json"))]);
        let mut index = CredentialIndex::from_report(&r);
        assert_eq!(index.fingerprint_of(&d.join("b.json")), None);
        fs::remove_file(d.join("a.json")).unwrap();
        let c = index.apply_changes(&[d.join("a.json")], OAuthKind::GeminiCli, 2);
        assert_eq!(c.added.len(), 1);
        assert_eq!(c.added[0].access_token, "b");
    }

    #[test]
    fn index_keeps_credential_when_file_turns_bad() {
        let (dir, mut index) = setup();
        let d = dir.path();
        put(&d.join("a.json"), "{trunc");
        let c = index.apply_changes(&[d.join("a.json")], OAuthKind::GeminiCli, 4);
        assert_eq!(c.errors.len(), 1);
        assert!(c.removed.is_empty());
        assert_eq!(index.len(), 2);
        // Fixed later: an update.
        put(&d.join("a.json"), &cred_json("r-a", "a3"));
        let c = index.apply_changes(&[d.join("a.json")], OAuthKind::GeminiCli, 4);
        assert_eq!(c.updated.len(), 1);
        assert_eq!(c.updated[0].access_token, "a3");
    }

    #[test]
    fn record_write_makes_the_echo_a_no_op() {
        let (dir, mut index) = setup();
        let d = dir.path();
        put(&d.join("a.json"), &cred_json("r-a9", "a9"));
        let cred = parse(
            &d.join("a.json"),
            cred_json("r-a9", "a9").as_bytes(),
            OAuthKind::GeminiCli,
        )
        .unwrap();
        index.record_write(&cred).unwrap();
        assert_eq!(
            index.path_of(Fingerprint::of("r-a9")),
            Some(d.join("a.json").as_path())
        );
        assert_eq!(index.path_of(Fingerprint::of("r-a")), None);
        let c = index.apply_changes(&[d.join("a.json")], OAuthKind::GeminiCli, 4);
        assert!(c.is_empty(), "{c:?}");
    }
}
