//! Shards: one glommio executor pinned to each core, each accepting on its
//! own SO_REUSEPORT socket and serving its connections start to finish.

use std::cell::Cell;
use std::net::TcpListener as StdListener;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::AsyncWriteExt;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

use super::conn::{serve_connection, ConnSettings, Service};
use super::errors::GatewayError;
use super::exchange::{Exchange, RequestIds};
use super::responder::Responder;
use super::shutdown::ShutdownSignal;
use crate::runtime::net::{EpollListener, EpollStream};

/// State shared by all shards of one server (atomics only: read rarely,
/// never on the per-request path except `/ready`).
pub struct GlobalState {
    /// Set by SIGINT/SIGTERM (or a test) to start a graceful shutdown.
    pub shutdown: Arc<AtomicBool>,
    /// Shards whose accept loop is running.
    pub shards_serving: AtomicUsize,
    /// Shards the server was started with.
    pub shard_count: usize,
    /// Per-process seed of generated request ids.
    pub id_seed: u64,
}

impl GlobalState {
    /// State for a server of `shard_count` shards.
    pub fn new(shard_count: usize) -> Arc<Self> {
        Arc::new(GlobalState {
            shutdown: Arc::new(AtomicBool::new(false)),
            shards_serving: AtomicUsize::new(0),
            shard_count,
            id_seed: super::exchange::id_seed(),
        })
    }

    /// Whether every shard is accepting and no shutdown has begun.
    pub fn ready(&self) -> bool {
        !self.shutdown.load(Ordering::Relaxed)
            && self.shards_serving.load(Ordering::Relaxed) == self.shard_count
    }
}

/// One shard's own state.
pub struct ShardState {
    /// 0-based shard index.
    pub id: usize,
    pub shutdown: ShutdownSignal,
    pub connections: Cell<usize>,
    /// Request ids issued by this shard.
    pub ids: RequestIds,
    pub global: Arc<GlobalState>,
}

/// How to run a set of shards.
#[derive(Clone, Debug)]
pub struct ShardSpec {
    /// Thread name prefix, e.g. `gateway`.
    pub name: &'static str,
    pub shards: usize,
    pub conn: ConnSettings,
    pub max_connections_per_shard: usize,
    /// Time in-flight requests get to finish after shutdown begins.
    pub drain: Duration,
    /// TLS for client connections; `None` serves plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Why the shards could not run.
#[derive(Debug)]
pub enum ShardError {
    /// RLIMIT_MEMLOCK is too low for io_uring and could not be raised.
    MemlockTooLow { soft: u64, hard: u64, needed: u64 },
    /// An executor failed to start or a shard failed.
    Start(String),
}

impl std::fmt::Display for ShardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardError::MemlockTooLow { soft, hard, needed } => write!(
                f,
                "RLIMIT_MEMLOCK is {} KiB (hard limit {} KiB) but io_uring needs at least {} KiB.\n\
                 Raise it before starting shardgate, e.g.:\n  ulimit -l unlimited      # in this shell (as root)\n  \
                 LimitMEMLOCK=infinity    # in the systemd unit\n  \
                 * - memlock unlimited    # in /etc/security/limits.conf\n  \
                 docker run --ulimit memlock=-1:-1 ...",
                soft / 1024,
                hard / 1024,
                needed / 1024
            ),
            ShardError::Start(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for ShardError {}

/// io_uring buffer memory per executor. shardgate does its file I/O
/// elsewhere, so glommio's registered DMA buffers stay small and fit in
/// default memlock limits.
const IO_MEMORY: usize = 256 * 1024;
/// glommio refuses to start an executor below this limit.
const MIN_MEMLOCK: u64 = 512 * 1024;

/// Raises the soft RLIMIT_MEMLOCK toward the hard one when it is below what
/// `shards` executors need.
pub fn ensure_memlock(shards: usize) -> Result<(), ShardError> {
    let needed = MIN_MEMLOCK.max(shards as u64 * MIN_MEMLOCK);
    let lim = memlock_limit();
    if lim.rlim_cur >= needed {
        return Ok(());
    }
    let raised = libc::rlimit {
        rlim_cur: lim.rlim_max.min(needed.max(lim.rlim_cur)).max(lim.rlim_cur),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we own.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) };
    let lim = memlock_limit();
    if lim.rlim_cur < MIN_MEMLOCK {
        return Err(ShardError::MemlockTooLow {
            soft: lim.rlim_cur,
            hard: lim.rlim_max,
            needed,
        });
    }
    Ok(())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, as a server that holds
/// thousands of connections must (the usual soft default is 1024, below one
/// shard's default connection cap). Returns the soft limit now in force and
/// the number of fds the client connection caps alone need (plus room for
/// listeners, the log and credential files), so the caller can warn when
/// the cap cannot be reached. Upstream connections come on top, one per
/// request in flight, so a limit just above this still refuses work at
/// full load; the warning is for a limit that cannot even hold the clients.
pub fn raise_nofile(shards: usize, max_connections_per_shard: usize) -> (u64, u64) {
    let needed = (shards as u64)
        .saturating_mul(max_connections_per_shard as u64)
        .saturating_add(256);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return (u64::MAX, needed);
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    (lim.rlim_cur, needed)
}

/// The current RLIMIT_MEMLOCK (unlimited if it cannot be read: glommio
/// then reports a real shortage itself).
fn memlock_limit() -> libc::rlimit {
    let mut lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        lim.rlim_cur = libc::RLIM_INFINITY;
    }
    lim
}

/// Number of CPUs this process may run on.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Runs `spec.shards` executors, each serving its listener with the service
/// `make_service` builds for it, until shutdown completes. `on_ready` runs
/// once every shard accepts.
pub fn run_shards<F, H>(
    spec: ShardSpec,
    listeners: Vec<StdListener>,
    global: Arc<GlobalState>,
    make_service: F,
) -> Result<(), ShardError>
where
    F: Fn(Rc<ShardState>) -> H + Send + Sync + Clone + 'static,
    H: Service + 'static,
{
    assert_eq!(listeners.len(), spec.shards, "one listener per shard");
    ensure_memlock(spec.shards)?;
    let placement = if spec.shards <= online_cpus() {
        PoolPlacement::MaxSpread(spec.shards, None)
    } else {
        // More shards than cores cannot all be pinned.
        PoolPlacement::Unbound(spec.shards)
    };
    let listeners = Arc::new(Mutex::new(
        listeners.into_iter().map(Some).collect::<Vec<_>>(),
    ));
    let next_index = Arc::new(AtomicUsize::new(0));
    let spec = Arc::new(spec);

    let handles = LocalExecutorPoolBuilder::new(placement)
        .name(spec.name)
        .io_memory(IO_MEMORY)
        .on_all_shards({
            let global = global.clone();
            move || async move {
                let id = next_index.fetch_add(1, Ordering::SeqCst);
                let listener = listeners.lock().unwrap()[id]
                    .take()
                    .expect("listener taken once");
                let state = Rc::new(ShardState {
                    id,
                    shutdown: ShutdownSignal::default(),
                    connections: Cell::new(0),
                    ids: RequestIds::new(id as u16, global.id_seed),
                    global: global.clone(),
                });
                let service = Rc::new(make_service(state.clone()));
                serve_shard(listener, service, state, &spec).await;
            }
        })
        .map_err(|e| ShardError::Start(format!("cannot start shard executors: {e}")))?;

    let mut failures = Vec::new();
    for (i, result) in handles.join_all().into_iter().enumerate() {
        match result {
            Ok(()) => {}
            Err(glommio::GlommioError::ReactorError(glommio::ReactorErrorKind::MemLockLimit(
                soft,
                needed,
            ))) => {
                global.shutdown.store(true, Ordering::Relaxed);
                return Err(ShardError::MemlockTooLow {
                    soft,
                    hard: memlock_limit().rlim_max,
                    needed,
                });
            }
            Err(e) => failures.push(format!("shard {i} failed to start: {e}")),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        // Shards that did start must not keep serving without the others.
        global.shutdown.store(true, Ordering::Relaxed);
        Err(ShardError::Start(failures.join("\n")))
    }
}

async fn serve_shard<H: Service + 'static>(
    listener: StdListener,
    service: Rc<H>,
    state: Rc<ShardState>,
    spec: &ShardSpec,
) {
    glommio::spawn_local({
        let state = state.clone();
        async move { state.shutdown.follow(state.global.shutdown.clone()).await }
    })
    .detach();
    state.global.shards_serving.fetch_add(1, Ordering::SeqCst);

    let listener = match EpollListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "shardgate: shard {}: cannot watch the listener: {e}",
                state.id
            );
            state.global.shards_serving.fetch_sub(1, Ordering::SeqCst);
            state.global.shutdown.store(true, Ordering::Relaxed);
            return;
        }
    };
    let settings = Rc::new(spec.conn.clone());
    let mut accept_errors = 0u64;
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            state.shutdown.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                // Out of descriptors or a transient failure: back off
                // briefly instead of spinning, and say so now and then.
                accept_errors += 1;
                if accept_errors.is_power_of_two() {
                    eprintln!(
                        "shardgate: shard {}: accept failed ({accept_errors} times): {e}",
                        state.id
                    );
                }
                crate::runtime::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if state.connections.get() >= spec.max_connections_per_shard {
            glommio::spawn_local(reject_over_capacity(stream, state.clone(), service.clone()))
                .detach();
            continue;
        }
        state.connections.set(state.connections.get() + 1);
        let guard = ConnectionGuard(state.clone());
        let service = service.clone();
        let settings = settings.clone();
        match &spec.tls {
            None => {
                glommio::spawn_local(async move {
                    serve_connection(stream, &*service, &settings, &guard.0).await;
                    drop(guard);
                })
                .detach();
            }
            Some(tls) => {
                let acceptor = futures_rustls::TlsAcceptor::from(tls.clone());
                glommio::spawn_local(async move {
                    // The handshake is bounded like a request head, so a
                    // client that stalls in it holds its slot no longer.
                    let handshake =
                        crate::runtime::timeout(settings.header_read, acceptor.accept(stream))
                            .await;
                    if let Some(Ok(stream)) = handshake {
                        serve_connection(stream, &*service, &settings, &guard.0).await;
                    }
                    drop(guard);
                })
                .detach();
            }
        }
    }
    drop(listener);
    state.global.shards_serving.fetch_sub(1, Ordering::SeqCst);

    // Drain: idle connections close on the shutdown signal; busy ones
    // finish their current request and then close.
    let deadline = Instant::now() + spec.drain;
    while state.connections.get() > 0 && Instant::now() < deadline {
        crate::runtime::sleep(Duration::from_millis(10)).await;
    }
}

/// Decrements the shard's connection count when a connection task ends,
/// however it ends.
struct ConnectionGuard(Rc<ShardState>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.set(self.0.connections.get() - 1);
    }
}

/// Answers a connection beyond the cap with 503 and closes it. The answer
/// is recorded like any other (metrics, access log), so a connection flood
/// shows up as 503s.
async fn reject_over_capacity<H: Service>(
    mut stream: EpollStream,
    state: Rc<ShardState>,
    service: Rc<H>,
) {
    let mut out = Vec::with_capacity(256);
    let mut exchange = Exchange::new(state.ids.next(), std::time::Instant::now(), 0);
    let err = GatewayError::new(
        503,
        "too_many_connections",
        "the gateway is at its connection limit; retry shortly",
    );
    let mut resp = Responder::new(
        &mut stream,
        &mut out,
        crate::http::Version::Http11,
        false,
        false,
        &mut exchange,
    );
    let sent = resp.send_error(&err).await;
    if sent.is_err() {
        exchange.status = 499;
        exchange.error = super::exchange::ErrorClass::ClientDisconnect;
    }
    service.finish(&exchange);
    let _ = stream.close().await;
}
