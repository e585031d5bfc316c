//! Noticing changed credential files: inotify where the kernel allows it, an
//! mtime poller where it does not (inotify disabled, out of watches, a
//! configured path missing at start, a watched directory deleted later).
//!
//! Both report paths, not contents: the caller hands them to
//! [`super::scan::CredentialIndex::apply_changes`], which re-reads only what
//! really changed. So a spurious or repeated report costs one `fstat`, and
//! after a lost event (queue overflow) the watcher can simply report every
//! file it knows of.
//!
//! Create the watcher *before* the initial [`super::scan::scan`]: a change
//! made between the two is then reported (and found current, or re-read)
//! instead of missed.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::scan::{expand, is_json_name};

/// The events that mean "a file's content may now differ": a writer closed
/// it, a file was renamed in or out (atomic replace), deleted, or created
/// (hard links bring no close event).
const MASK: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_TO
    | libc::IN_MOVED_FROM
    | libc::IN_DELETE
    | libc::IN_CREATE
    | libc::IN_ONLYDIR;

/// Watches the configured credential paths (directories and single files).
#[derive(Debug)]
pub enum Watcher {
    /// Kernel notifications (Linux inotify), drained without blocking.
    Inotify(InotifyWatcher),
    /// Periodic `stat` of every known file and listing of every directory.
    Poll(PollWatcher),
}

impl Watcher {
    /// Watches `paths` with inotify, or with a poller every `poll_interval`
    /// when inotify cannot watch all of them.
    pub fn new(paths: &[PathBuf], poll_interval: Duration) -> Watcher {
        match InotifyWatcher::new(paths, poll_interval) {
            Ok(w) => Watcher::Inotify(w),
            Err(_) => Watcher::poll(paths, poll_interval),
        }
    }

    /// Watches `paths` with the poller only.
    pub fn poll(paths: &[PathBuf], poll_interval: Duration) -> Watcher {
        Watcher::Poll(PollWatcher::new(paths, poll_interval))
    }

    /// Whether kernel notifications are in use.
    pub fn is_inotify(&self) -> bool {
        matches!(self, Watcher::Inotify(_))
    }

    /// The inotify descriptor, readable when events are pending, for a
    /// caller that wants to wait on it (poll/epoll/io_uring) instead of
    /// calling [`Watcher::poll_changes`] on a timer. `None` when polling.
    pub fn as_raw_fd(&self) -> Option<RawFd> {
        match self {
            Watcher::Inotify(w) => Some(w.fd.as_raw_fd()),
            Watcher::Poll(_) => None,
        }
    }

    /// The paths that may have changed since the last call, sorted and
    /// deduplicated; never blocks. Inotify: the pending events. Poller: a
    /// new `stat` round, at most once per poll interval (else nothing).
    ///
    /// If inotify loses its watch (a watched directory was deleted or
    /// moved) the watcher turns into a poller, reporting every file it
    /// knows of once.
    pub fn poll_changes(&mut self) -> Vec<PathBuf> {
        match self {
            Watcher::Inotify(w) => match w.drain() {
                Drained::Changes(v) => v,
                Drained::Lost(v) => {
                    *self = Watcher::poll(&w.config, w.poll_interval);
                    v
                }
            },
            Watcher::Poll(p) => p.poll(),
        }
    }
}

/// One configured path, as seen from its watched directory.
#[derive(Debug)]
struct Target {
    /// The directory as configured (reported paths are built from it).
    dir: PathBuf,
    /// For a configured single file: its name in `dir`, and the path to
    /// report (exactly as configured).
    only: Option<(OsString, PathBuf)>,
}

/// The inotify side of [`Watcher`].
#[derive(Debug)]
pub struct InotifyWatcher {
    fd: OwnedFd,
    targets: HashMap<i32, Vec<Target>>,
    config: Vec<PathBuf>,
    poll_interval: Duration,
    /// Every file ever listed or reported: the answer after lost events.
    known: BTreeSet<PathBuf>,
}

enum Drained {
    Changes(Vec<PathBuf>),
    /// Events were lost or a watch went away: everything to re-check.
    Lost(Vec<PathBuf>),
}

impl InotifyWatcher {
    fn new(paths: &[PathBuf], poll_interval: Duration) -> io::Result<InotifyWatcher> {
        // SAFETY: plain syscall; the result is checked below.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut targets: HashMap<i32, Vec<Target>> = HashMap::new();
        for path in paths {
            // A path missing at start may become a file or a directory;
            // only the poller can tell, so it takes over.
            let target = if fs::metadata(path)?.is_dir() {
                Target {
                    dir: path.clone(),
                    only: None,
                }
            } else {
                // A single file is watched through its directory: the file
                // itself is replaced by rename, which a watch on its inode
                // would not follow.
                let name = path.file_name().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "path has no file name")
                })?;
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                Target {
                    dir,
                    only: Some((name.to_os_string(), path.clone())),
                }
            };
            let c = CString::new(target.dir.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
            // SAFETY: valid descriptor and NUL-terminated path.
            let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), MASK) };
            if wd < 0 {
                // Missing directory, out of watches...: the poller copes.
                return Err(io::Error::last_os_error());
            }
            targets.entry(wd).or_default().push(target);
        }
        Ok(InotifyWatcher {
            fd,
            targets,
            config: paths.to_vec(),
            poll_interval,
            known: expand(paths).0.into_iter().collect(),
        })
    }

    fn drain(&mut self) -> Drained {
        // inotify_event needs 4-byte alignment; 8 KiB holds ~250 events
        // with short names per read.
        #[repr(C, align(8))]
        struct Buf([u8; 8192]);
        let mut buf = Buf([0; 8192]);
        let mut out = BTreeSet::new();
        let mut lost = false;
        loop {
            // SAFETY: the buffer is valid for writes of its length.
            let n =
                unsafe { libc::read(self.fd.as_raw_fd(), buf.0.as_mut_ptr().cast(), buf.0.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => break,
                    _ => {
                        lost = true;
                        break;
                    }
                }
            }
            let n = n as usize;
            if n == 0 {
                break;
            }
            let header = std::mem::size_of::<libc::inotify_event>();
            let mut at = 0;
            while at + header <= n {
                // SAFETY: the kernel wrote a whole event header at `at`;
                // read_unaligned makes no alignment assumption.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf.0.as_ptr().add(at).cast()) };
                let name_end = (at + header + ev.len as usize).min(n);
                let raw_name = &buf.0[at + header..name_end];
                let name = &raw_name[..raw_name
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(raw_name.len())];
                at = name_end;
                if ev.mask & (libc::IN_Q_OVERFLOW | libc::IN_IGNORED) != 0 {
                    lost = true;
                    continue;
                }
                if ev.mask & libc::IN_ISDIR != 0 || name.is_empty() {
                    continue;
                }
                self.matches(ev.wd, OsStr::from_bytes(name), &mut out);
            }
        }
        self.known.extend(out.iter().cloned());
        if lost {
            self.known.extend(expand(&self.config).0);
            return Drained::Lost(self.known.iter().cloned().collect());
        }
        Drained::Changes(out.into_iter().collect())
    }

    /// The configured paths an event on `name` in watch `wd` concerns.
    fn matches(&self, wd: i32, name: &OsStr, out: &mut BTreeSet<PathBuf>) {
        for t in self.targets.get(&wd).into_iter().flatten() {
            match &t.only {
                None if is_json_name(name) => {
                    out.insert(t.dir.join(name));
                }
                None => {}
                Some((only, reported)) if only == name => {
                    out.insert(reported.clone());
                }
                Some(_) => {}
            }
        }
    }
}

/// What the poller compares: a change in any of these is a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = fs::metadata(path).ok()?;
    Some(Stamp {
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// The polling side of [`Watcher`].
#[derive(Debug)]
pub struct PollWatcher {
    paths: Vec<PathBuf>,
    interval: Duration,
    last: Instant,
    files: HashMap<PathBuf, Stamp>,
}

impl PollWatcher {
    fn new(paths: &[PathBuf], interval: Duration) -> PollWatcher {
        PollWatcher {
            paths: paths.to_vec(),
            interval,
            last: Instant::now(),
            files: PollWatcher::snapshot(paths),
        }
    }

    fn snapshot(paths: &[PathBuf]) -> HashMap<PathBuf, Stamp> {
        expand(paths)
            .0
            .into_iter()
            .filter_map(|p| stamp(&p).map(|s| (p, s)))
            .collect()
    }

    fn poll(&mut self) -> Vec<PathBuf> {
        if self.last.elapsed() < self.interval {
            return Vec::new();
        }
        self.last = Instant::now();
        let now = PollWatcher::snapshot(&self.paths);
        let mut out: BTreeSet<PathBuf> = now
            .iter()
            .filter(|(p, s)| self.files.get(*p) != Some(s))
            .map(|(p, _)| p.clone())
            .collect();
        out.extend(self.files.keys().filter(|p| !now.contains_key(*p)).cloned());
        self.files = now;
        out.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::scan::tests::{cred_json, put};

    /// Polls until `want` has been reported (or 5 s pass); returns all seen.
    fn wait_for(w: &mut Watcher, want: &Path) -> BTreeSet<PathBuf> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = BTreeSet::new();
        while !seen.contains(want) {
            assert!(
                Instant::now() < deadline,
                "{want:?} not reported; saw {seen:?}"
            );
            let changes = w.poll_changes();
            let mut sorted = changes.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(changes, sorted, "sorted and deduplicated");
            seen.extend(changes);
            std::thread::sleep(Duration::from_millis(5));
        }
        seen
    }

    /// Drains whatever is still pending (including the poller's next round).
    fn settle(w: &mut Watcher) -> BTreeSet<PathBuf> {
        let mut seen = BTreeSet::new();
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(10));
            seen.extend(w.poll_changes());
        }
        seen
    }

    fn directory_events(mut w: Watcher, d: &Path) {
        assert!(settle(&mut w).is_empty());
        // A new file (create + close_write), and a non-JSON one ignored.
        fs::write(d.join("notes.txt"), "x").unwrap();
        fs::write(d.join(".b.json.tmp-1-1"), "x").unwrap();
        fs::write(d.join("b.json"), cred_json("r-b", "b")).unwrap();
        let seen = wait_for(&mut w, &d.join("b.json"));
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [d.join("b.json")]);
        settle(&mut w);
        // Rename into place.
        put(&d.join("a.json"), &cred_json("r-a", "a2"));
        let seen = wait_for(&mut w, &d.join("a.json"));
        assert!(!seen.contains(&d.join("b.json")), "{seen:?}");
        settle(&mut w);
        // Delete.
        fs::remove_file(d.join("b.json")).unwrap();
        wait_for(&mut w, &d.join("b.json"));
    }

    fn single_file_events(mut w: Watcher, d: &Path) {
        fs::write(d.join("other.json"), "{}").unwrap();
        put(&d.join("a.json"), &cred_json("r-a", "a2"));
        let seen = wait_for(&mut w, &d.join("a.json"));
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [d.join("a.json")]);
        settle(&mut w);
        fs::remove_file(d.join("a.json")).unwrap();
        wait_for(&mut w, &d.join("a.json"));
    }

    fn dir_with_a() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.json"), cred_json("r-a", "a")).unwrap();
        dir
    }

    #[test]
    fn inotify_sees_write_rename_and_delete() {
        let dir = dir_with_a();
        let w = Watcher::new(&[dir.path().to_path_buf()], Duration::from_millis(20));
        assert!(w.is_inotify(), "inotify unavailable here");
        assert!(w.as_raw_fd().is_some());
        directory_events(w, dir.path());
    }

    #[test]
    fn inotify_single_file() {
        let dir = dir_with_a();
        let w = Watcher::new(&[dir.path().join("a.json")], Duration::from_millis(20));
        assert!(w.is_inotify());
        single_file_events(w, dir.path());
    }

    #[test]
    fn poller_sees_write_rename_and_delete() {
        let dir = dir_with_a();
        let w = Watcher::poll(&[dir.path().to_path_buf()], Duration::from_millis(20));
        assert!(!w.is_inotify() && w.as_raw_fd().is_none());
        directory_events(w, dir.path());
    }

    #[test]
    fn poller_single_file() {
        let dir = dir_with_a();
        let w = Watcher::poll(&[dir.path().join("a.json")], Duration::from_millis(20));
        single_file_events(w, dir.path());
    }

    #[test]
    fn missing_directory_falls_back_to_polling() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("later");
        let mut w = Watcher::new(std::slice::from_ref(&sub), Duration::from_millis(20));
        assert!(!w.is_inotify());
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("c.json"), "{}").unwrap();
        wait_for(&mut w, &sub.join("c.json"));
    }

    #[test]
    fn deleted_directory_turns_inotify_into_poller() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("creds");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("a.json"), "{}").unwrap();
        let mut w = Watcher::new(std::slice::from_ref(&sub), Duration::from_millis(20));
        assert!(w.is_inotify());
        fs::remove_dir_all(&sub).unwrap();
        // The deletion is reported, and the watcher keeps working.
        wait_for(&mut w, &sub.join("a.json"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.is_inotify() {
            assert!(Instant::now() < deadline, "watch loss not noticed");
            w.poll_changes();
            std::thread::sleep(Duration::from_millis(5));
        }
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("b.json"), "{}").unwrap();
        wait_for(&mut w, &sub.join("b.json"));
    }
}
