//! The writer thread: drains every shard's ring, encodes JSON lines and
//! writes them with io_uring; rotates, compresses and prunes files.
//!
//! One dedicated std thread ("shardgate-log") owns a small io_uring instance
//! and the log file. It is double-buffered: while one buffer is being written
//! (a single `IORING_OP_WRITE` in flight, resubmitted on short writes),
//! records keep being drained and encoded into the other. One write at a
//! time keeps the file in order without linked SQEs; an `IORING_OP_FSYNC`
//! may run beside it, so a slow fsync does not hold up writing. When the disk is slower than the records come,
//! the active buffer grows to a hard cap (4 x `batch_bytes`), then the writer
//! stops draining and the rings absorb the burst; when they are full the
//! shards' pushes fail and are counted. Producers never wait.
//!
//! Records pushed with bodies ([`LogProducer::push_with_body`](super::LogProducer::push_with_body))
//! are paired with their body entry by the ring and encoded with
//! [`encode_json_line_with_bodies`]; draining stops as soon as the active
//! buffer reaches its hard cap, so one drain pass overshoots the cap by at
//! most one line, however large the bodies.
//!
//! Write errors drop the batch (counted in `write_errors` / `records_lost`,
//! reported on stderr at most once per 10 s) and draining goes on.
//! Compression and pruning of rotated files run on a second thread
//! ("shardgate-logz"), woken after each rotation through a one-slot channel
//! (never blocks the writer); each wake-up handles every rotated file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use io_uring::{opcode, types, IoUring};

use super::body::DEFAULT_BODY_RING_BYTES;
use super::json::{compact_utc, encode_json_line, encode_json_line_with_bodies};
use super::record::Names;
use super::ring::{
    log_ring, log_ring_with_bodies, LogConsumer, LogProducer, Shared, DEFAULT_RING_CAPACITY,
};

/// Every knob of the access log. `Default` gives the documented defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct LogSettings {
    /// The live log file (default `access.log`). Rotated files are written
    /// beside it as `<name>.YYYYMMDD-HHMMSS[.N][.gz]`.
    pub path: PathBuf,
    /// Slots per shard ring, rounded up to a power of two (default 16384).
    /// The writer does not use it: pass it to [`log_ring`](super::log_ring).
    pub ring_capacity: usize,
    /// How often the writer drains the rings when idle (default 5 ms).
    pub poll_interval: Duration,
    /// Write when this many encoded bytes are buffered (default 256 KiB).
    pub batch_bytes: usize,
    /// Write at the latest this long after the oldest unwritten record was
    /// drained (default 100 ms).
    pub flush_interval: Duration,
    /// fsync this often when something was written (default 1 s; `None` =
    /// only at shutdown).
    pub fsync_interval: Option<Duration>,
    /// Rotate before a write would make the file larger (default 100 MiB).
    pub max_file_bytes: u64,
    /// Also rotate when the UTC day changes (default true).
    pub rotate_daily: bool,
    /// gzip rotated files on the background thread (default true).
    pub compress: bool,
    /// Rotated files to keep; older ones are deleted (default 7).
    pub keep: usize,
    /// io_uring submission queue depth (default 8).
    pub queue_depth: u32,
    /// How long shutdown may wait for a stuck disk before giving up on the
    /// last writes (default 10 s).
    pub shutdown_timeout: Duration,
    /// Log request/response bodies (default false). The writer does not use
    /// it: it decides how [`LogSettings::ring`] makes rings, and whether the
    /// shards call [`LogProducer::push_with_body`].
    pub log_bodies: bool,
    /// Bytes of each shard's body ring when `log_bodies` is on (default 4
    /// MiB; rounded up to a power of two, 4 KiB to 1 GiB).
    pub body_ring_bytes: usize,
    /// Most bytes of each body that are logged (default 16 KiB): the `cap`
    /// to pass to [`redact_and_cap_with`](super::redact_and_cap_with).
    pub body_cap_bytes: usize,
}

impl LogSettings {
    /// One shard's ring per these settings: [`log_ring`]`(ring_capacity)`,
    /// or [`log_ring_with_bodies`]`(ring_capacity, body_ring_bytes)` when
    /// `log_bodies` is on.
    pub fn ring(&self) -> (LogProducer, LogConsumer) {
        if self.log_bodies {
            log_ring_with_bodies(self.ring_capacity, self.body_ring_bytes)
        } else {
            log_ring(self.ring_capacity)
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            path: PathBuf::from("access.log"),
            ring_capacity: DEFAULT_RING_CAPACITY,
            poll_interval: Duration::from_millis(5),
            batch_bytes: 256 * 1024,
            flush_interval: Duration::from_millis(100),
            fsync_interval: Some(Duration::from_secs(1)),
            max_file_bytes: 100 * 1024 * 1024,
            rotate_daily: true,
            compress: true,
            keep: 7,
            queue_depth: 8,
            shutdown_timeout: Duration::from_secs(10),
            log_bodies: false,
            body_ring_bytes: DEFAULT_BODY_RING_BYTES,
            body_cap_bytes: 16 * 1024,
        }
    }
}

/// Counters of the access log, readable from any thread (for metrics).
#[derive(Default)]
pub struct LogStats {
    /// Records written to the file in full.
    pub records_written: AtomicU64,
    /// Failed writes and fsyncs.
    pub write_errors: AtomicU64,
    /// Records encoded but not written because a write failed.
    pub records_lost: AtomicU64,
    /// Bytes written to log files.
    pub bytes_written: AtomicU64,
    /// Files rotated.
    pub rotations: AtomicU64,
    /// Successful fsyncs.
    pub fsyncs: AtomicU64,
    rings: Vec<Arc<Shared>>,
}

impl LogStats {
    /// Records dropped at the rings, summed over all rings: pushes that
    /// found the ring full or closed, plus records still in a ring when the
    /// writer went away.
    pub fn records_dropped(&self) -> u64 {
        self.rings.iter().map(|r| r.dropped()).sum()
    }

    /// Bodies not logged although their record was (body ring full, body
    /// larger than the body ring, or pushed to a ring without one), summed
    /// over all rings (see
    /// [`LogProducer::push_with_body`](super::LogProducer::push_with_body)).
    /// Records dropped with their bodies count in
    /// [`records_dropped`](Self::records_dropped) only.
    pub fn bodies_dropped(&self) -> u64 {
        self.rings.iter().map(|r| r.bodies_dropped()).sum()
    }

    /// Bytes in use in the body ring of ring `i` (0 for an unknown ring or
    /// one without a body ring).
    pub fn body_ring_usage(&self, i: usize) -> usize {
        self.rings.get(i).map_or(0, |r| r.body_usage())
    }

    /// Body ring capacity in bytes of ring `i` (0 for an unknown ring or one
    /// without a body ring).
    pub fn body_ring_capacity(&self, i: usize) -> usize {
        self.rings.get(i).map_or(0, |r| r.body_capacity())
    }

    /// Records the shards' samplers left out, summed over all rings (see
    /// [`LogProducer::count_sampled_out`](super::LogProducer::count_sampled_out)).
    pub fn records_sampled_out(&self) -> u64 {
        self.rings.iter().map(|r| r.sampled_out()).sum()
    }

    /// Number of rings (shards).
    pub fn ring_count(&self) -> usize {
        self.rings.len()
    }

    /// Occupied slots of ring `i` (0 for an unknown ring).
    pub fn ring_usage(&self, i: usize) -> usize {
        self.rings.get(i).map_or(0, |r| r.usage())
    }

    /// Occupied slots of every ring, in ring order.
    pub fn usage(&self) -> Vec<usize> {
        self.rings.iter().map(|r| r.usage()).collect()
    }
}

/// Starts the writer thread; see [`LogWriter::spawn`].
pub struct LogWriter;

/// Gives the calling thread the lowest scheduling priority (nice 19).
/// Compressing rotated files can wait; on a busy machine it must not take
/// CPU from the shards, and it catches up when they idle. Best effort.
fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread; failure only leaves the
    // priority as it was.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

impl LogWriter {
    /// Opens (appending to) `settings.path`, sets up io_uring and starts the
    /// writer thread "shardgate-log" draining `consumers`, plus the
    /// background thread "shardgate-logz" that compresses and prunes rotated
    /// files. Errors (bad settings, the file, io_uring setup) are returned
    /// here; after this the writer never fails, it counts.
    pub fn spawn(
        settings: LogSettings,
        names: Names,
        consumers: Vec<LogConsumer>,
    ) -> io::Result<LogWriterHandle> {
        validate(&settings)?;
        let (file, is_regular, file_bytes, file_day) = open_log(&settings.path)?;
        let uring = IoUring::new(settings.queue_depth.max(2)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "access log: io_uring setup failed: {e} (is io_uring disabled, or \
                     RLIMIT_MEMLOCK too low on an old kernel? try `ulimit -l 8192`)"
                ),
            )
        })?;
        let ext_arg = uring.params().is_feature_ext_arg();
        let stats = Arc::new(LogStats {
            rings: consumers.iter().map(|c| c.shared()).collect(),
            ..LogStats::default()
        });
        // Wake-ups only: one pending wake-up covers every rotation before it.
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        let hk_settings = settings.clone();
        let housekeeper =
            thread::Builder::new()
                .name("shardgate-logz".into())
                .spawn(move || {
                    lower_priority();
                    housekeeper(hk_settings, rx)
                })?;
        let stop = Arc::new(AtomicBool::new(false));
        let hard_cap = settings.batch_bytes.saturating_mul(4).max(64 * 1024);
        let mut writer = Writer {
            names,
            consumers,
            stats: stats.clone(),
            uring,
            ext_arg,
            file,
            is_regular,
            file_bytes,
            file_day,
            active: Vec::with_capacity(hard_cap + 4096),
            active_records: 0,
            active_since: None,
            spare: Vec::with_capacity(hard_cap + 4096),
            hard_cap,
            write: None,
            fsync_pending: false,
            need_newline: false,
            dirty: false,
            last_fsync: Instant::now(),
            rotate_retry_at: None,
            housekeeper: Some((tx, housekeeper)),
            errors: ErrorReporter::default(),
            stop: stop.clone(),
            settings,
        };
        let thread = thread::Builder::new()
            .name("shardgate-log".into())
            .spawn(move || writer.run())?;
        Ok(LogWriterHandle {
            stop,
            thread: Some(thread),
            stats,
        })
    }
}

/// Owns the writer thread. [`shutdown`](LogWriterHandle::shutdown) (or
/// dropping the handle) drains every ring, writes, fsyncs and joins.
pub struct LogWriterHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<LogStats>,
}

impl LogWriterHandle {
    /// The writer's counters.
    pub fn stats(&self) -> Arc<LogStats> {
        self.stats.clone()
    }

    /// Stops the writer: the rings are closed (later pushes return false and
    /// are counted as dropped), drained completely, written and fsynced;
    /// waits for the compression thread too. Returns when the thread is gone.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::Release);
            t.thread().unpark();
            if t.join().is_err() {
                eprintln!("shardgate: access log writer thread panicked");
            }
        }
    }
}

impl Drop for LogWriterHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("access log: {msg}"))
}

fn validate(s: &LogSettings) -> io::Result<()> {
    if s.batch_bytes == 0 {
        return Err(invalid("batch_bytes must be > 0"));
    }
    if s.batch_bytes > 256 * 1024 * 1024 {
        return Err(invalid("batch_bytes must be <= 256 MiB"));
    }
    if s.poll_interval.is_zero() {
        return Err(invalid("poll_interval must be > 0"));
    }
    if s.max_file_bytes == 0 {
        return Err(invalid("max_file_bytes must be > 0"));
    }
    if s.path.file_name().is_none() {
        return Err(invalid("path must name a file"));
    }
    if s.log_bodies {
        if s.body_cap_bytes == 0 {
            return Err(invalid("body_cap_bytes must be > 0 when log_bodies is on"));
        }
        // An entry holds two capped bodies and a 16-byte header; keep at
        // least four of them in the ring so one slow drain does not drop
        // every body.
        let ring = s.body_ring_bytes.clamp(4096, 1 << 30).next_power_of_two();
        if s.body_cap_bytes.saturating_mul(2).saturating_add(32) > ring / 4 {
            return Err(invalid(
                "body_ring_bytes must hold at least 4 x (2 x body_cap_bytes)",
            ));
        }
    }
    Ok(())
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Opens the log for appending: (file, is a regular file, size, UTC day of
/// its last modification or today when empty).
fn open_log(path: &Path) -> io::Result<(File, bool, u64, u64)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("access log: cannot open {}: {e}", path.display()),
            )
        })?;
    let meta = file.metadata()?;
    let is_regular = meta.is_file();
    let len = if is_regular { meta.len() } else { 0 };
    let day = if len > 0 {
        meta.modified()
            .ok()
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_else(unix_now)
            .as_secs()
            / 86_400
    } else {
        unix_now().as_secs() / 86_400
    };
    Ok((file, is_regular, len, day))
}

/// The write in flight.
struct WriteOp {
    /// The batch; its heap memory is read by the kernel until the CQE.
    buf: Vec<u8>,
    /// Bytes already written.
    done: usize,
    /// Records (lines) in the batch.
    records: u64,
    /// 1 when `buf` starts with a '\n' that ends a line cut by an earlier
    /// failed write (not a record).
    prefix: usize,
}

const UD_WRITE: u64 = 1;
const UD_FSYNC: u64 = 2;

/// Records per ring per pass, so one busy ring cannot starve the others.
const DRAIN_BUDGET: usize = 4096;

/// Prints write failures at most once per 10 s.
#[derive(Default)]
struct ErrorReporter {
    last: Option<Instant>,
    lost_since: u64,
    suppressed: u64,
}

impl ErrorReporter {
    fn report(&mut self, what: &str, err: &io::Error, lost: u64) {
        self.lost_since += lost;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10))
        {
            self.suppressed += 1;
            return;
        }
        let more = if self.suppressed > 0 {
            format!(" ({} more failures not shown)", self.suppressed)
        } else {
            String::new()
        };
        eprintln!(
            "shardgate: access log {what} failed: {err}, {} records lost{more}",
            self.lost_since
        );
        self.last = Some(now);
        self.lost_since = 0;
        self.suppressed = 0;
    }
}

struct Writer {
    settings: LogSettings,
    names: Names,
    consumers: Vec<LogConsumer>,
    stats: Arc<LogStats>,
    uring: IoUring,
    /// The kernel supports waiting with a timeout (IORING_FEAT_EXT_ARG).
    ext_arg: bool,
    file: File,
    /// Only regular files are rotated and fsynced (not /dev/stdout, a pipe
    /// or /dev/full).
    is_regular: bool,
    file_bytes: u64,
    file_day: u64,
    /// The buffer being filled.
    active: Vec<u8>,
    active_records: u64,
    active_since: Option<Instant>,
    /// The other buffer, empty, when no write is in flight.
    spare: Vec<u8>,
    hard_cap: usize,
    /// At most one write in flight (keeps writes in order without links).
    write: Option<WriteOp>,
    /// An fsync in flight; it may overlap a write (it covers what was
    /// written before it was issued, the next one covers the rest).
    fsync_pending: bool,
    /// The file ends in a partial line (a write failed half way).
    need_newline: bool,
    /// Written since the last fsync.
    dirty: bool,
    last_fsync: Instant,
    rotate_retry_at: Option<Instant>,
    housekeeper: Option<(SyncSender<()>, JoinHandle<()>)>,
    errors: ErrorReporter,
    stop: Arc<AtomicBool>,
}

/// Why a drain pass ended.
#[derive(PartialEq, Eq)]
enum Drained {
    /// Every ring is empty.
    Empty,
    /// A ring hit its per-pass budget: go again at once.
    More,
    /// The active buffer is at its hard cap: wait for the write in flight.
    Full,
}

impl Writer {
    fn run(&mut self) {
        while !self.stop.load(Ordering::Acquire) {
            self.reap();
            let drained = self.drain_rings();
            let now = Instant::now();
            self.maybe_flush(now, false);
            self.maybe_fsync(now);
            match drained {
                Drained::More => {}
                Drained::Full => self.wait_for_completion(self.settings.poll_interval),
                Drained::Empty => self.idle(now),
            }
        }
        self.finish();
    }

    fn busy(&self) -> bool {
        self.write.is_some() || self.fsync_pending
    }

    /// Sleeps until the next poll, waking early for a completion (so the
    /// next batch can go out) or for shutdown (unpark).
    fn idle(&mut self, now: Instant) {
        let mut wait = self.settings.poll_interval;
        if let (None, Some(since)) = (&self.write, self.active_since) {
            // Wake for the flush deadline (with a write in flight the flush
            // waits for its completion instead, which wakes us anyway).
            let due = since + self.settings.flush_interval;
            wait = wait
                .min(due.saturating_duration_since(now))
                .max(Duration::from_micros(50));
        }
        if self.busy() {
            self.wait_for_completion(wait);
        } else {
            thread::park_timeout(wait);
        }
    }

    /// Drains every ring (up to a budget each) into the active buffer.
    fn drain_rings(&mut self) -> Drained {
        let Writer {
            consumers,
            names,
            active,
            active_records,
            active_since,
            hard_cap,
            ..
        } = self;
        let was_empty = active.is_empty();
        let mut result = Drained::Empty;
        for c in consumers.iter_mut() {
            if active.len() >= *hard_cap {
                result = Drained::Full;
                break;
            }
            // Lines without bodies are ~500-700 bytes; with bodies they can
            // be far longer, so stop at the cap too (soft by one line).
            let room = (*hard_cap - active.len()) / 512 + 1;
            let max = DRAIN_BUDGET.min(room);
            let cap = *hard_cap;
            let n = c.drain_while(max, |r, bodies| {
                match bodies {
                    None => encode_json_line(r, names, active),
                    Some(b) => {
                        encode_json_line_with_bodies(r, names, b.request, b.response, active)
                    }
                }
                active.len() < cap
            });
            *active_records += n as u64;
            if n > 0 && active.len() >= *hard_cap {
                result = Drained::Full;
                break;
            }
            if n == max && !c.is_empty() {
                result = Drained::More;
            }
        }
        if result == Drained::More && active.len() >= *hard_cap {
            result = Drained::Full;
        }
        if was_empty && !active.is_empty() {
            *active_since = Some(Instant::now());
        }
        result
    }

    /// Submits the active buffer when it is big or old enough (or `force`)
    /// and no write is in flight.
    fn maybe_flush(&mut self, now: Instant, force: bool) {
        if self.write.is_some() || self.active.is_empty() {
            return;
        }
        let due = force
            || self.active.len() >= self.settings.batch_bytes
            || self
                .active_since
                .is_some_and(|t| now.duration_since(t) >= self.settings.flush_interval);
        if due {
            self.submit_batch();
        }
    }

    fn maybe_fsync(&mut self, now: Instant) {
        if let Some(every) = self.settings.fsync_interval {
            if !self.fsync_pending
                && self.dirty
                && self.is_regular
                && now.duration_since(self.last_fsync) >= every
            {
                self.submit_fsync();
            }
        }
    }

    fn submit_fsync(&mut self) {
        debug_assert!(!self.fsync_pending);
        self.dirty = false;
        self.last_fsync = Instant::now();
        let sqe = opcode::Fsync::new(types::Fd(self.file.as_raw_fd()))
            .build()
            .user_data(UD_FSYNC);
        if self.push_and_submit(&sqe) {
            self.fsync_pending = true;
        }
    }

    /// Swaps the buffers and starts writing the full one.
    fn submit_batch(&mut self) {
        debug_assert!(self.write.is_none());
        self.maybe_rotate();
        let mut buf = std::mem::replace(&mut self.active, std::mem::take(&mut self.spare));
        let records = std::mem::take(&mut self.active_records);
        self.active_since = None;
        let mut prefix = 0;
        if self.need_newline {
            buf.insert(0, b'\n');
            prefix = 1;
            self.need_newline = false;
        }
        self.write = Some(WriteOp {
            buf,
            done: 0,
            records,
            prefix,
        });
        self.submit_write_rest();
    }

    /// (Re)submits the unwritten part of the in-flight batch.
    fn submit_write_rest(&mut self) {
        let Some(w) = &self.write else {
            return;
        };
        let rest = &w.buf[w.done..];
        // Batches are at most ~4 x batch_bytes (<= 1 GiB): fits a u32.
        let len = rest.len().min(u32::MAX as usize) as u32;
        let sqe = opcode::Write::new(types::Fd(self.file.as_raw_fd()), rest.as_ptr(), len)
            .offset(u64::MAX) // -1: the file position (O_APPEND: the end)
            .build()
            .user_data(UD_WRITE);
        if !self.push_and_submit(&sqe) {
            // Could not even queue it: fail the batch like a write error.
            self.fail_write(io::Error::other("io_uring submission queue full"));
        }
    }

    /// Pushes one SQE and submits it; false when it could not be queued.
    fn push_and_submit(&mut self, sqe: &io_uring::squeue::Entry) -> bool {
        // SAFETY: the entry points either at no memory (fsync) or at the
        // heap buffer of the `WriteOp` in `self.write`, which is not
        // touched, reallocated or dropped until its completion is reaped in
        // `reap` (or it is leaked in `Drop` if it never completes). The fd
        // is `self.file`, which is not closed or replaced while an
        // operation is in flight (`rotate` waits for both to finish).
        let pushed = unsafe { self.uring.submission().push(sqe).is_ok() };
        if !pushed {
            return false;
        }
        loop {
            match self.uring.submit() {
                Ok(_) => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // The entry stays queued and goes to the kernel with the
                    // next io_uring_enter (every wait submits), so the
                    // operation still counts as in flight.
                    self.errors.report("io_uring submit", &e, 0);
                    return true;
                }
            }
        }
    }

    /// Handles every available completion.
    fn reap(&mut self) {
        loop {
            // A `let` statement, so the queue's borrow ends here.
            let next = self.uring.completion().next();
            let Some(cqe) = next else {
                return;
            };
            let res = cqe.result();
            match cqe.user_data() {
                UD_WRITE if self.write.is_some() => self.on_write_done(res),
                UD_FSYNC if self.fsync_pending => {
                    self.fsync_pending = false;
                    if res < 0 {
                        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                        let e = io::Error::from_raw_os_error(-res);
                        self.errors.report("fsync", &e, 0);
                    } else {
                        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => {} // not ours; cannot happen
            }
        }
    }

    fn on_write_done(&mut self, res: i32) {
        if res < 0 {
            let e = io::Error::from_raw_os_error(-res);
            if matches!(
                e.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
            ) {
                self.submit_write_rest();
            } else {
                self.fail_write(e);
            }
            return;
        }
        let n = res as usize;
        let Some(w) = &mut self.write else {
            return;
        };
        w.done += n;
        let finished = w.done >= w.buf.len();
        self.stats
            .bytes_written
            .fetch_add(n as u64, Ordering::Relaxed);
        self.file_bytes += n as u64;
        self.dirty = true;
        if n == 0 && !finished {
            self.fail_write(io::Error::new(
                io::ErrorKind::WriteZero,
                "write returned 0 bytes",
            ));
        } else if !finished {
            self.submit_write_rest(); // short write
        } else if let Some(mut w) = self.write.take() {
            self.stats
                .records_written
                .fetch_add(w.records, Ordering::Relaxed);
            w.buf.clear();
            self.spare = w.buf;
        }
    }

    /// Drops the in-flight batch after an error, counting what was lost.
    fn fail_write(&mut self, err: io::Error) {
        let Some(mut w) = self.write.take() else {
            return;
        };
        let written = &w.buf[w.prefix.min(w.done)..w.done];
        let full_lines = written.iter().filter(|&&b| b == b'\n').count() as u64;
        let full_lines = full_lines.min(w.records);
        let lost = w.records - full_lines;
        if w.done > 0 && w.buf[w.done - 1] != b'\n' {
            self.need_newline = true; // the file ends in a cut line
        }
        if w.done == 0 && w.prefix == 1 {
            self.need_newline = true; // the '\n' was not written either
        }
        self.stats
            .records_written
            .fetch_add(full_lines, Ordering::Relaxed);
        self.stats.records_lost.fetch_add(lost, Ordering::Relaxed);
        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        self.errors.report("write", &err, lost);
        w.buf.clear();
        self.spare = w.buf;
    }

    /// Waits up to `timeout` for a completion and handles it.
    fn wait_for_completion(&mut self, timeout: Duration) {
        if !self.busy() {
            return;
        }
        if self.ext_arg {
            let ts = types::Timespec::from(timeout);
            let args = types::SubmitArgs::new().timespec(&ts);
            // ETIME (timeout) and EINTR are expected; anything else shows
            // again on the next call, so nothing to do here.
            let _ = self.uring.submitter().submit_with_args(1, &args);
        } else if self.uring.completion().is_empty() {
            // Kernels before 5.11: poll in small sleeps.
            thread::sleep(timeout.min(Duration::from_millis(1)));
        }
        self.reap();
    }

    /// Waits (up to `shutdown_timeout`) until nothing is in flight.
    fn wait_idle(&mut self) -> bool {
        let deadline = Instant::now() + self.settings.shutdown_timeout;
        while self.busy() && Instant::now() < deadline {
            self.wait_for_completion(self.settings.poll_interval);
        }
        !self.busy()
    }

    /// Rotates before writing the active buffer when the size or the day
    /// says so. Called with no write in flight.
    fn maybe_rotate(&mut self) {
        if !self.is_regular || self.file_bytes == 0 {
            return;
        }
        let now_unix = unix_now();
        let today = now_unix.as_secs() / 86_400;
        let too_big = self.file_bytes + self.active.len() as u64 > self.settings.max_file_bytes;
        let new_day = self.settings.rotate_daily && today != self.file_day;
        if !too_big && !new_day {
            return;
        }
        if self.rotate_retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match self.rotate(now_unix) {
            Ok(()) => {
                self.rotate_retry_at = None;
                self.stats.rotations.fetch_add(1, Ordering::Relaxed);
                if let Some((tx, _)) = &self.housekeeper {
                    // Full = a wake-up is already pending; it will see this
                    // file too.
                    let _ = tx.try_send(());
                }
            }
            Err(e) => {
                // Keep writing to the current file; try again later.
                self.rotate_retry_at = Some(Instant::now() + Duration::from_secs(10));
                self.errors.report("rotation", &e, 0);
            }
        }
    }

    /// fsyncs (when fsync is on), renames the live file and opens a new one.
    fn rotate(&mut self, now_unix: Duration) -> io::Result<()> {
        debug_assert!(self.write.is_none());
        if self.dirty && self.settings.fsync_interval.is_some() && !self.fsync_pending {
            // The rotated file gets no later fsync from us: sync it now.
            // Waiting here delays draining a little; the rings absorb that.
            self.submit_fsync();
        }
        if !self.wait_idle() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "fsync before rotation did not complete",
            ));
        }
        let path = &self.settings.path;
        let rotated = rotated_name(path, now_unix.as_secs());
        fs::rename(path, &rotated)?;
        match open_log(path) {
            Ok((file, is_regular, len, _)) => {
                // The old file (now `rotated`) is closed here; nothing is in
                // flight on it.
                self.file = file;
                self.is_regular = is_regular;
                self.file_bytes = len;
                self.file_day = now_unix.as_secs() / 86_400;
                self.need_newline = false;
                self.dirty = false;
                Ok(())
            }
            Err(e) => {
                // Put the old name back so the live file keeps its name.
                let _ = fs::rename(&rotated, path);
                Err(e)
            }
        }
    }

    /// Final drain on shutdown: close the rings, drain them completely,
    /// write everything, fsync, stop the housekeeper.
    fn finish(&mut self) {
        let deadline = Instant::now() + self.settings.shutdown_timeout;
        for c in &self.consumers {
            c.close();
        }
        loop {
            self.reap();
            let drained = self.drain_rings();
            let now = Instant::now();
            self.maybe_flush(now, true);
            if drained == Drained::Empty
                && self.active.is_empty()
                && self.write.is_none()
                && self.consumers.iter().all(|c| c.is_empty())
            {
                break;
            }
            if now >= deadline {
                eprintln!(
                    "shardgate: access log: disk did not finish writing within {:?} of \
                     shutdown; giving up on the last records",
                    self.settings.shutdown_timeout
                );
                break;
            }
            if drained != Drained::More {
                self.wait_for_completion(self.settings.poll_interval);
            }
        }
        if self.is_regular && self.write.is_none() && self.wait_idle() && self.dirty {
            self.submit_fsync();
            self.wait_idle();
        }
        if let Some((tx, join)) = self.housekeeper.take() {
            drop(tx);
            let _ = join.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(w) = self.write.take() {
            // The kernel may still read this buffer: leak it rather than
            // free memory an I/O is using. Only after a shutdown timeout.
            self.stats
                .records_lost
                .fetch_add(w.records, Ordering::Relaxed);
            std::mem::forget(w.buf);
        }
        // Records encoded but never submitted (shutdown timeout).
        self.stats
            .records_lost
            .fetch_add(self.active_records, Ordering::Relaxed);
    }
}

/// `<path>.YYYYMMDD-HHMMSS`, with `.1`, `.2`, ... appended if that name (or
/// its `.gz`) is taken.
fn rotated_name(path: &Path, unix_secs: u64) -> PathBuf {
    let base = path.as_os_str().to_owned();
    let stamp = compact_utc(unix_secs);
    let mut n = 0u32;
    loop {
        let mut name = base.clone();
        name.push(".");
        name.push(&stamp);
        if n > 0 {
            name.push(format!(".{n}"));
        }
        let candidate = PathBuf::from(name);
        let mut gz = candidate.clone().into_os_string();
        gz.push(".gz");
        if !candidate.exists() && !Path::new(&gz).exists() {
            return candidate;
        }
        n += 1;
    }
}

/// Sort key of a rotated file name: (stamp, counter), or None when `name`
/// is not `<base>.YYYYMMDD-HHMMSS[.N][.gz|.gz.tmp]`.
pub(super) fn rotated_key(base: &str, name: &str) -> Option<(u64, u32)> {
    let rest = name.strip_prefix(base)?.strip_prefix('.')?;
    let rest = rest
        .strip_suffix(".gz.tmp")
        .or_else(|| rest.strip_suffix(".gz"))
        .unwrap_or(rest);
    let (stamp, counter) = match rest.split_once('.') {
        Some((s, c)) => (s, c.parse::<u32>().ok()?),
        None => (rest, 0),
    };
    let b = stamp.as_bytes();
    if b.len() != 15 || b[8] != b'-' {
        return None;
    }
    if !b[..8].iter().chain(&b[9..]).all(u8::is_ascii_digit) {
        return None;
    }
    let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
    Some((digits.parse().ok()?, counter))
}

/// Deletes the oldest rotated files of `path` beyond `keep` (a file and its
/// `.gz` count as one).
fn prune(path: &Path, keep: usize) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(base) = path.file_name().and_then(|b| b.to_str()) else {
        return Ok(());
    };
    let mut groups: std::collections::BTreeMap<(u64, u32), Vec<PathBuf>> = Default::default();
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(key) = rotated_key(base, name) {
            groups.entry(key).or_default().push(entry.path());
        }
    }
    let excess = groups.len().saturating_sub(keep);
    for (_, files) in groups.into_iter().take(excess) {
        for f in files {
            fs::remove_file(&f)?;
        }
    }
    Ok(())
}

/// gzips `src` to `src.gz` (through `src.gz.tmp`), then removes `src`.
fn compress(src: &Path, sync: bool) -> io::Result<()> {
    let gz = with_suffix(src, ".gz");
    let tmp = with_suffix(src, ".gz.tmp");
    let result = (|| {
        let mut input = BufReader::with_capacity(256 * 1024, File::open(src)?);
        let out = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o640)
            .open(&tmp)?;
        // Level 1: JSON lines still shrink ~10x, and this thread competes
        // with the shards for the cores.
        let mut enc = flate2::write::GzEncoder::new(
            BufWriter::with_capacity(256 * 1024, out),
            flate2::Compression::fast(),
        );
        io::copy(&mut input, &mut enc)?;
        let out = enc.finish()?.into_inner().map_err(|e| e.into_error())?;
        if sync {
            out.sync_all()?;
        }
        fs::rename(&tmp, &gz)?;
        fs::remove_file(src)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// One pass over the rotated files of `settings.path`: delete the oldest
/// beyond `keep`, then (if `compress`) gzip the ones still plain. Leftovers
/// of an interrupted run (a `.gz.tmp`, a plain file beside its `.gz`) are
/// cleaned up. Only this thread compresses, so a `.gz.tmp` seen here is
/// stale.
fn housekeep(settings: &LogSettings) -> io::Result<()> {
    let path = &settings.path;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    prune(path, settings.keep)?;
    if !settings.compress {
        return Ok(());
    }
    let Some(base) = path.file_name().and_then(|b| b.to_str()) else {
        return Ok(());
    };
    let mut plain = Vec::new();
    let mut names = std::collections::HashSet::new();
    for entry in fs::read_dir(&dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if rotated_key(base, name).is_some() {
            names.insert(name.to_string());
        }
    }
    for name in &names {
        if name.ends_with(".gz.tmp") {
            // Stale; the plain file, if there, is compressed again below.
            let _ = fs::remove_file(dir.join(name));
        } else if !name.ends_with(".gz") {
            if names.contains(&format!("{name}.gz")) {
                // Compressed, but the plain file was not removed.
                fs::remove_file(dir.join(name))?;
            } else {
                plain.push(name.clone());
            }
        }
    }
    let sync = settings.fsync_interval.is_some();
    let mut first_err = None;
    for name in plain {
        if let Err(e) = compress(&dir.join(&name), sync) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// The background thread: a pass at start (leftovers of an earlier run),
/// then one per wake-up from the writer; exits when the writer hangs up.
fn housekeeper(settings: LogSettings, rx: Receiver<()>) {
    let mut last_report: Option<Instant> = None;
    loop {
        if let Err(e) = housekeep(&settings) {
            if last_report.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                eprintln!("shardgate: access log compression/pruning failed: {e}");
                last_report = Some(Instant::now());
            }
        }
        if rx.recv().is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_keys() {
        assert_eq!(
            rotated_key("access.log", "access.log.20240229-123456"),
            Some((20240229123456, 0))
        );
        assert_eq!(
            rotated_key("access.log", "access.log.20240229-123456.3.gz"),
            Some((20240229123456, 3))
        );
        assert_eq!(
            rotated_key("access.log", "access.log.20240229-123456.gz.tmp"),
            Some((20240229123456, 0))
        );
        assert_eq!(rotated_key("access.log", "access.log"), None);
        assert_eq!(rotated_key("access.log", "access.log.old"), None);
        assert_eq!(
            rotated_key("access.log", "access.log.2024022-1234567"),
            None
        );
        assert_eq!(rotated_key("access.log", "other.log.20240229-123456"), None);
        // .10 sorts after .9 numerically.
        assert!(rotated_key("a", "a.20240229-123456.10") > rotated_key("a", "a.20240229-123456.9"));
    }

    #[test]
    fn rotated_name_adds_counter() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("access.log");
        let a = rotated_name(&p, 1_709_210_096);
        assert!(a.to_str().unwrap().ends_with("access.log.20240229-123456"));
        File::create(&a).unwrap();
        let b = rotated_name(&p, 1_709_210_096);
        assert!(b
            .to_str()
            .unwrap()
            .ends_with("access.log.20240229-123456.1"));
        let mut gz = b.clone().into_os_string();
        gz.push(".gz");
        File::create(&gz).unwrap();
        let c = rotated_name(&p, 1_709_210_096);
        assert!(c
            .to_str()
            .unwrap()
            .ends_with("access.log.20240229-123456.2"));
    }

    #[test]
    fn prune_keeps_newest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("access.log");
        let names = [
            "access.log.20240101-000000.gz",
            "access.log.20240102-000000",
            "access.log.20240102-000000.gz", // same group as above
            "access.log.20240103-000000.2",
            "access.log.20240103-000000.10.gz",
            "access.log",
            "unrelated.txt",
        ];
        for n in names {
            File::create(dir.path().join(n)).unwrap();
        }
        prune(&p, 2).unwrap();
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "access.log",
                "access.log.20240103-000000.10.gz",
                "access.log.20240103-000000.2",
                "unrelated.txt"
            ]
        );
    }

    #[test]
    fn housekeep_compresses_and_cleans_leftovers() {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let settings = LogSettings {
            path: dir.path().join("access.log"),
            keep: 2,
            ..Default::default()
        };
        let d = dir.path();
        fs::write(d.join("access.log.20240101-000000"), "oldest\n").unwrap();
        fs::write(d.join("access.log.20240102-000000"), "plain\n").unwrap();
        fs::write(d.join("access.log.20240102-000000.gz.tmp"), "garbage").unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"done\n").unwrap();
        fs::write(
            d.join("access.log.20240103-000000.gz"),
            enc.finish().unwrap(),
        )
        .unwrap();
        fs::write(d.join("access.log.20240103-000000"), "done\n").unwrap();
        fs::write(d.join("access.log"), "live\n").unwrap();
        housekeep(&settings).unwrap();
        let mut left: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "access.log",
                "access.log.20240102-000000.gz",
                "access.log.20240103-000000.gz"
            ]
        );
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(d.join("access.log.20240102-000000.gz")).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "plain\n");
        assert_eq!(fs::read(d.join("access.log")).unwrap(), b"live\n");
    }

    #[test]
    fn bad_settings_rejected() {
        let s = LogSettings {
            batch_bytes: 0,
            ..Default::default()
        };
        assert!(LogWriter::spawn(s, Names::default(), vec![]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let s = LogSettings {
            path: dir.path().join("no/such/dir/access.log"),
            ..Default::default()
        };
        let e = LogWriter::spawn(s, Names::default(), vec![]).err().unwrap();
        assert!(e.to_string().contains("cannot open"), "{e}");
    }
}
