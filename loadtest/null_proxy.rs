//! `null-proxy`: the simplest user-space TCP forwarder, for `perf/ceiling`.
//!
//! ```sh
//! null-proxy --listen 127.0.0.1:3001 --upstream 127.0.0.1:3002 --threads 2
//! ```
//!
//! # Why it exists
//!
//! Issue #6 asks for >= 1.2x nginx's req/s on this machine (wrk `-t2 -c64`,
//! keep-alive, small chat bodies, the mock provider, all on the same two
//! cores), where most of the CPU is the kernel's loopback TCP. This program
//! measures the *ceiling*: how many requests per second a proxy that does
//! nothing in user space but move bytes reaches, with the syscalls a proxy
//! cannot avoid (per request: one `recv` and one `send` on each side, plus
//! its share of `epoll_wait`). If even this does not reach 1.2x nginx, no
//! proxy design can on this machine.
//!
//! # What it does
//!
//! `--threads N` threads, each with its own `SO_REUSEPORT` listener on the
//! same address and its own edge-triggered epoll, pinned to the i-th CPU it
//! may run on (as shardgate pins its shards and nginx's
//! `worker_cpu_affinity auto` its workers). Every accepted client
//! connection gets one upstream connection (non-blocking connect,
//! `TCP_NODELAY` on both); bytes are pumped both ways with `recv`/`send`
//! (the `recvfrom`/`sendto` syscalls shardgate makes) through one fixed
//! 16 KiB buffer per direction. A direction reads only when its buffer is
//! empty, so a slow writer stops the reading of its source until `EPOLLOUT`
//! says it drained. EOF or an error on either side closes both.
//!
//! This works for the measurement because wrk's keep-alive requests on one
//! client connection map 1:1 onto requests on its upstream connection, and
//! the mock keeps that connection alive.
//!
//! Every socket is registered once for `EPOLLIN | EPOLLOUT | EPOLLRDHUP |
//! EPOLLET` and never modified, and readiness is tracked per socket and
//! direction in user space: no `epoll_ctl` per request. A direction counts
//! as drained on `EAGAIN` or on a short read (fewer bytes than the buffer
//! holds: with edge triggering every later arrival raises a new event, see
//! epoll(7)), the same rule as shardgate's `src/runtime/net.rs`, so both do
//! one `recv` per arrival rather than a second one that returns `EAGAIN`.
//! After `EPOLLRDHUP` a side is read until `EAGAIN` or EOF, so an EOF that
//! arrives with the last data is not missed.
//!
//! # What it deliberately skips
//!
//! It is not a product and must not become one: no HTTP parsing (requests
//! are not even delimited), no upstream connection pooling (one upstream
//! connection per client connection, for its lifetime), no routing, no
//! credentials, no logging of requests, no timeouts (idle connections stay
//! forever), no limits on connections, no graceful shutdown (SIGTERM ends
//! it), IPv4/IPv6 TCP only.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};
use std::process::exit;

use socket2::{Domain, Socket, Type};

/// Bytes per direction of a connection pair.
const BUF: usize = 16 * 1024;
/// Events collected per `epoll_wait`.
const BATCH: usize = 256;
/// Asked for every connection socket, once, at registration.
const INTEREST: u32 = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
/// The epoll token of a thread's listener (no pair has this index).
const LISTENER: u64 = u64::MAX;
/// Generations are stored in 31 bits of the token.
const GEN_MASK: u32 = 0x7fff_ffff;

const USAGE: &str =
    "usage: null-proxy --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT --threads N";

struct Args {
    listen: SocketAddr,
    upstream: SocketAddr,
    threads: usize,
}

/// `value` of `flag` as a `T`.
fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| format!("{flag} {value}: {e}"))
}

fn parse_args() -> Result<Args, String> {
    let (mut listen, mut upstream, mut threads) = (None, None, 1);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            exit(0);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(parse::<SocketAddr>(&flag, &value)?),
            "--upstream" => upstream = Some(parse(&flag, &value)?),
            "--threads" => threads = parse(&flag, &value)?,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    let listen = listen.ok_or("--listen is required")?;
    if listen.port() == 0 {
        // Every thread would get a different port.
        return Err("--listen needs a fixed port".into());
    }
    if threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    Ok(Args {
        listen,
        upstream: upstream.ok_or("--upstream is required")?,
        threads,
    })
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn close(fd: RawFd) {
    // SAFETY: `fd` is owned by the caller and not used afterwards.
    unsafe { libc::close(fd) };
}

fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: valid option buffer of the given length.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A non-blocking `SO_REUSEPORT` listener on `addr`.
fn listener(addr: SocketAddr) -> io::Result<RawFd> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into_raw_fd())
}

/// A non-blocking socket connecting (or connected) to `addr`.
fn connect(addr: SocketAddr) -> io::Result<RawFd> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)?;
    s.set_nodelay(true)?;
    match s.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(s.into_raw_fd())
}

/// Pins the calling thread to the `i`-th CPU of those it may run on
/// (modulo their count).
fn pin(i: usize) -> io::Result<usize> {
    // SAFETY: cpu_set_t is plain data; the calls get its real size.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) < 0 {
            return Err(io::Error::last_os_error());
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &allowed))
            .collect();
        if cpus.is_empty() {
            return Err(io::Error::other("no CPU in the affinity mask"));
        }
        let cpu = cpus[i % cpus.len()];
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(cpu)
    }
}

/// Side 0 is the client, side 1 its upstream connection.
struct Pair {
    fd: [RawFd; 2],
    /// The socket of this side may have bytes to read.
    readable: [bool; 2],
    /// The socket of this side may take bytes.
    writable: [bool; 2],
    /// The peer of this side shut its writing down: read until EOF.
    rdhup: [bool; 2],
    /// `buf[s][start[s]..end[s]]`: read from side `s`, not yet sent to the other.
    buf: [Box<[u8]>; 2],
    start: [usize; 2],
    end: [usize; 2],
}

impl Pair {
    /// Moves bytes from side `s` to the other side until one of them would
    /// block. `false`: EOF or an error, close the pair.
    fn pump(&mut self, s: usize) -> bool {
        let d = 1 - s;
        loop {
            if self.start[s] < self.end[s] {
                if !self.writable[d] {
                    return true;
                }
                let out = &self.buf[s][self.start[s]..self.end[s]];
                // SAFETY: `out` is valid for reads of its length.
                let n = unsafe {
                    libc::send(
                        self.fd[d],
                        out.as_ptr().cast(),
                        out.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                };
                if n < 0 {
                    match errno() {
                        libc::EAGAIN => {
                            self.writable[d] = false;
                            return true;
                        }
                        libc::EINTR => continue,
                        _ => return false,
                    }
                }
                // A short send retries: the next one says EAGAIN if the
                // socket really is full.
                self.start[s] += n as usize;
                continue;
            }
            if !self.readable[s] {
                return true;
            }
            let into = &mut self.buf[s];
            // SAFETY: `into` is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.fd[s],
                    into.as_mut_ptr().cast(),
                    into.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                match errno() {
                    libc::EAGAIN => {
                        self.readable[s] = false;
                        return true;
                    }
                    libc::EINTR => continue,
                    _ => return false,
                }
            }
            if n == 0 {
                // EOF; this direction's buffer is empty (reads happen only
                // then), so everything this side sent has been forwarded.
                return false;
            }
            let n = n as usize;
            if n < BUF && !self.rdhup[s] {
                self.readable[s] = false;
            }
            self.start[s] = 0;
            self.end[s] = n;
        }
    }
}

struct Slot {
    /// Bumped at every close, so events of a closed pair still in the
    /// current batch do not reach a new pair in the same slot.
    gen: u32,
    live: bool,
    pair: Pair,
}

struct Worker {
    epoll: RawFd,
    listener: RawFd,
    upstream: SocketAddr,
    slots: Vec<Slot>,
    free: Vec<usize>,
}

fn token(idx: usize, gen: u32, side: usize) -> u64 {
    ((idx as u64) << 32) | (u64::from(gen & GEN_MASK) << 1) | side as u64
}

fn epoll_add(epoll: RawFd, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: `ev` is a valid event for the duration of the call.
    if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Worker {
    fn new(listener: RawFd, upstream: SocketAddr) -> io::Result<Self> {
        // SAFETY: plain syscall.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        epoll_add(
            epoll,
            listener,
            (libc::EPOLLIN | libc::EPOLLET) as u32,
            LISTENER,
        )?;
        Ok(Worker {
            epoll,
            listener,
            upstream,
            slots: Vec::new(),
            free: Vec::new(),
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; BATCH];
        loop {
            // SAFETY: `events` is valid for BATCH entries.
            let n = unsafe {
                libc::epoll_wait(self.epoll, events.as_mut_ptr(), BATCH as libc::c_int, -1)
            };
            if n < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                return Err(io::Error::last_os_error());
            }
            for ev in &events[..n as usize] {
                // Copies: the struct is packed.
                let (flags, data) = (ev.events, ev.u64);
                if data == LISTENER {
                    self.accept();
                } else {
                    self.event(data, flags);
                }
            }
        }
    }

    /// Accepts until the listener's queue is empty.
    fn accept(&mut self) {
        loop {
            // SAFETY: plain syscall; the peer address is not wanted.
            let c = unsafe {
                libc::accept4(
                    self.listener,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if c < 0 {
                match errno() {
                    libc::EAGAIN => return,
                    libc::EINTR | libc::ECONNABORTED => continue,
                    _ => {
                        eprintln!("null-proxy: accept: {}", io::Error::last_os_error());
                        return;
                    }
                }
            }
            let u = match set_nodelay(c).and_then(|()| connect(self.upstream)) {
                Ok(u) => u,
                Err(e) => {
                    eprintln!("null-proxy: upstream {}: {e}", self.upstream);
                    close(c);
                    continue;
                }
            };
            let idx = self.insert(c, u);
            let gen = self.slots[idx].gen;
            let added = epoll_add(self.epoll, c, INTEREST, token(idx, gen, 0))
                .and_then(|()| epoll_add(self.epoll, u, INTEREST, token(idx, gen, 1)));
            if let Err(e) = added {
                eprintln!("null-proxy: epoll_ctl: {e}");
                self.remove(idx);
            }
        }
    }

    /// A live slot for the pair (client `c`, upstream `u`); nothing is
    /// known to be readable or writable until epoll says so.
    fn insert(&mut self, c: RawFd, u: RawFd) -> usize {
        let idx = match self.free.pop() {
            Some(idx) => idx,
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    live: false,
                    pair: Pair {
                        fd: [-1; 2],
                        readable: [false; 2],
                        writable: [false; 2],
                        rdhup: [false; 2],
                        buf: [
                            vec![0; BUF].into_boxed_slice(),
                            vec![0; BUF].into_boxed_slice(),
                        ],
                        start: [0; 2],
                        end: [0; 2],
                    },
                });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[idx];
        slot.live = true;
        let p = &mut slot.pair;
        p.fd = [c, u];
        p.readable = [false; 2];
        p.writable = [false; 2];
        p.rdhup = [false; 2];
        p.start = [0; 2];
        p.end = [0; 2];
        idx
    }

    /// Closes both sockets (which takes them out of the epoll set).
    fn remove(&mut self, idx: usize) {
        let slot = &mut self.slots[idx];
        close(slot.pair.fd[0]);
        close(slot.pair.fd[1]);
        slot.pair.fd = [-1; 2];
        slot.live = false;
        slot.gen = slot.gen.wrapping_add(1);
        self.free.push(idx);
    }

    fn event(&mut self, data: u64, flags: u32) {
        let idx = (data >> 32) as usize;
        let gen = ((data >> 1) as u32) & GEN_MASK;
        let side = (data & 1) as usize;
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        if !slot.live || slot.gen & GEN_MASK != gen {
            return; // closed earlier in this batch
        }
        if flags & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
            self.remove(idx);
            return;
        }
        let p = &mut slot.pair;
        if flags & libc::EPOLLRDHUP as u32 != 0 {
            p.rdhup[side] = true;
            p.readable[side] = true;
        }
        if flags & libc::EPOLLIN as u32 != 0 {
            p.readable[side] = true;
        }
        if flags & libc::EPOLLOUT as u32 != 0 {
            p.writable[side] = true;
        }
        if !(p.pump(side) && p.pump(1 - side)) {
            self.remove(idx);
        }
    }
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("null-proxy: {e}\n{USAGE}");
        exit(2);
    });
    // Bind every listener before serving, so a taken port fails at once.
    let listeners: Vec<RawFd> = (0..args.threads)
        .map(|_| listener(args.listen))
        .collect::<io::Result<_>>()
        .unwrap_or_else(|e| {
            eprintln!("null-proxy: listen on {}: {e}", args.listen);
            exit(1);
        });
    let threads: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, fd)| {
            let upstream = args.upstream;
            std::thread::Builder::new()
                .name(format!("null-proxy-{i}"))
                .spawn(move || -> io::Result<()> {
                    let cpu = pin(i)?;
                    eprintln!("null-proxy: thread {i} on CPU {cpu}");
                    Worker::new(fd, upstream)?.run()
                })
                .expect("spawn thread")
        })
        .collect();
    eprintln!(
        "null-proxy: {} threads listening on {}, upstream {}",
        args.threads, args.listen, args.upstream
    );
    for (i, t) in threads.into_iter().enumerate() {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("null-proxy: thread {i}: {e}");
                exit(1);
            }
            Err(_) => exit(1),
        }
    }
}
