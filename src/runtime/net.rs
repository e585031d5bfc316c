//! TCP sockets driven by one edge-triggered epoll instance per shard.
//!
//! Why not glommio's `TcpStream`: it arms an io_uring `POLL_ADD` after every
//! partial read ("early poll"), so each readiness of each socket costs a poll
//! arm, a completion and a task wake-up. Here every socket is registered
//! once (`EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET`), read and written with
//! plain non-blocking `recv`/`send`, and one driver task per shard collects
//! readiness for all of them with `epoll_wait`. Only when `epoll_wait` finds
//! nothing does the driver ask glommio to wake it when the epoll fd itself
//! becomes readable, so under load one wake-up covers many sockets.
//!
//! Readiness is tracked per socket and direction. A flag is set by the
//! driver and cleared only when the socket says it is drained (`EAGAIN`, or a
//! short read: with edge triggering, every later arrival raises a new event,
//! so clearing after a short read cannot lose a wake-up). Hang-up and error
//! are sticky, so an EOF that arrived together with data is never missed.
//!
//! Reads and writes are synchronous system calls made inside `poll_*`: no
//! buffer is ever lent to the kernel, so dropping a read or write future
//! (a timeout) loses nothing.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures_lite::{AsyncRead, AsyncWrite};

/// Events asked for every socket, once, at registration.
const INTEREST: u32 = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
/// Events collected per `epoll_wait`.
const BATCH: usize = 256;

/// Readiness of one registered fd.
#[derive(Default)]
struct Readiness {
    readable: Cell<bool>,
    writable: Cell<bool>,
    /// Peer closed its side (EPOLLRDHUP): reads never block again.
    read_closed: Cell<bool>,
    /// Hang-up or socket error: neither direction blocks again.
    closed: Cell<bool>,
    read_waker: Cell<Option<Waker>>,
    write_waker: Cell<Option<Waker>>,
}

impl Readiness {
    fn can_read(&self) -> bool {
        self.readable.get() || self.read_closed.get() || self.closed.get()
    }

    fn can_write(&self) -> bool {
        self.writable.get() || self.closed.get()
    }

    fn apply(&self, events: u32) {
        let ev = |f: libc::c_int| events & f as u32 != 0;
        if ev(libc::EPOLLHUP | libc::EPOLLERR) {
            self.closed.set(true);
        }
        if ev(libc::EPOLLRDHUP) {
            self.read_closed.set(true);
        }
        if ev(libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) {
            self.readable.set(true);
            if let Some(w) = self.read_waker.take() {
                w.wake();
            }
        }
        if ev(libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) {
            self.writable.set(true);
            if let Some(w) = self.write_waker.take() {
                w.wake();
            }
        }
    }
}

/// One shard's epoll instance and the fds registered in it.
struct Reactor {
    epfd: OwnedFd,
    /// Token (epoll `u64`) -> readiness; freed slots are reused.
    slots: RefCell<Vec<Option<Rc<Readiness>>>>,
    free: RefCell<Vec<usize>>,
    executor_id: usize,
}

thread_local! {
    static REACTOR: RefCell<Option<Rc<Reactor>>> = const { RefCell::new(None) };
}

/// The current executor's reactor, created (with its driver task) on first use.
fn reactor() -> io::Result<Rc<Reactor>> {
    let id = glommio::executor().id();
    REACTOR.with(|cell| {
        if let Some(r) = cell.borrow().as_ref() {
            if r.executor_id == id {
                return Ok(r.clone());
            }
        }
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let r = Rc::new(Reactor {
            // SAFETY: a fresh fd we own.
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            executor_id: id,
        });
        glommio::spawn_local(drive(Rc::downgrade(&r))).detach();
        *cell.borrow_mut() = Some(r.clone());
        Ok(r)
    })
}

impl Reactor {
    fn register(self: &Rc<Self>, fd: RawFd, ready: bool) -> io::Result<Registration> {
        let readiness = Rc::new(Readiness::default());
        readiness.readable.set(ready);
        readiness.writable.set(ready);
        let token = {
            let mut slots = self.slots.borrow_mut();
            match self.free.borrow_mut().pop() {
                Some(t) => {
                    slots[t] = Some(readiness.clone());
                    t
                }
                None => {
                    slots.push(Some(readiness.clone()));
                    slots.len() - 1
                }
            }
        };
        let mut ev = libc::epoll_event {
            events: INTEREST,
            u64: token as u64,
        };
        // SAFETY: valid epoll fd and event struct.
        if unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            let e = io::Error::last_os_error();
            self.release(token);
            return Err(e);
        }
        Ok(Registration {
            reactor: self.clone(),
            token,
            readiness,
        })
    }

    fn release(&self, token: usize) {
        self.slots.borrow_mut()[token] = None;
        self.free.borrow_mut().push(token);
    }

    /// Collects ready events without blocking; returns how many there were.
    fn poll_events(&self, events: &mut [libc::epoll_event]) -> usize {
        // SAFETY: `events` is a valid buffer of its length.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                0,
            )
        };
        if n <= 0 {
            return 0;
        }
        let n = n as usize;
        for ev in &events[..n] {
            let token = ev.u64 as usize;
            let events = ev.events;
            // Clone out first: waking may not re-enter the slot table, but
            // keep the borrow short anyway.
            let r = self.slots.borrow().get(token).and_then(|s| s.clone());
            if let Some(r) = r {
                r.apply(events);
            }
        }
        n
    }
}

/// The shard's epoll driver: drains ready events while there are any,
/// yielding to the woken tasks in between; when there are none, sleeps until
/// glommio sees the epoll fd readable.
async fn drive(reactor: std::rc::Weak<Reactor>) {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; BATCH];
    loop {
        let Some(r) = reactor.upgrade() else { return };
        let n = r.poll_events(&mut events);
        if n > 0 {
            drop(r);
            futures_lite::future::yield_now().await;
            continue;
        }
        let epfd = r.epfd.as_raw_fd();
        drop(r);
        if wait_readable(epfd).await.is_err() {
            // Could not arm a wait: fall back to polling on the next turn.
            futures_lite::future::yield_now().await;
        }
    }
}

/// Waits until `fd` is readable, through glommio's io_uring poll.
///
/// glommio 0.9 has no public "wait for readability" call. Its stream types
/// arm exactly that poll when built from a raw fd, so the wait wraps a
/// duplicate of `fd` in a `glommio::net::UnixStream` and reads from it: the
/// read completes when the poll does (and then fails, since `fd` is no
/// socket, which is fine). Dropping the stream closes only the duplicate.
async fn wait_readable(fd: RawFd) -> io::Result<()> {
    use futures_lite::AsyncReadExt;
    // SAFETY: plain syscall; the result is checked.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh fd the stream now owns.
    let mut waiter = unsafe { glommio::net::UnixStream::from_raw_fd(dup) };
    let mut byte = [0u8; 1];
    let _ = waiter.read(&mut byte).await;
    Ok(())
}

/// A registered fd: its readiness, unregistered (slot freed) on drop.
struct Registration {
    reactor: Rc<Reactor>,
    token: usize,
    readiness: Rc<Readiness>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Closing the fd (after this) removes it from the epoll set.
        self.reactor.release(self.token);
    }
}

/// A non-blocking TCP stream whose readiness comes from the shard's epoll.
pub struct EpollStream {
    // Field order: unregister before the fd closes.
    reg: Registration,
    fd: OwnedFd,
}

fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: valid fd and option buffer.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl EpollStream {
    /// Takes ownership of a connected, non-blocking socket.
    fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let reg = reactor()?.register(fd.as_raw_fd(), true)?;
        Ok(EpollStream { reg, fd })
    }

    /// Connects to `addr`. Dropping the future abandons the attempt.
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM.nonblocking().cloexec(),
            Some(socket2::Protocol::TCP),
        )?;
        let pending = match sock.connect(&addr.into()) {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => true,
            Err(e) => return Err(e),
        };
        let fd: OwnedFd = sock.into();
        let reg = reactor()?.register(fd.as_raw_fd(), !pending)?;
        let stream = EpollStream { reg, fd };
        if pending {
            std::future::poll_fn(|cx| {
                let r = &stream.reg.readiness;
                if r.can_write() {
                    Poll::Ready(())
                } else {
                    r.write_waker.set(Some(cx.waker().clone()));
                    Poll::Pending
                }
            })
            .await;
            let sock = socket2::SockRef::from(&stream.fd);
            if let Some(e) = sock.take_error()? {
                return Err(e);
            }
            // Connected: the socket is writable; whether it is readable the
            // first recv will tell.
            stream.reg.readiness.readable.set(true);
        }
        Ok(stream)
    }

    /// Sets TCP_NODELAY.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        if on {
            set_nodelay(self.fd.as_raw_fd())
        } else {
            socket2::SockRef::from(&self.fd).set_nodelay(false)
        }
    }
}

impl AsRawFd for EpollStream {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsyncRead for EpollStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let r = &self.reg.readiness;
        loop {
            if !r.can_read() {
                // Flags change only in the driver, on this thread: nothing can
                // slip in between the check and storing the waker.
                r.read_waker.set(Some(cx.waker().clone()));
                return Poll::Pending;
            }
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                let n = n as usize;
                if n > 0 && n < buf.len() {
                    // Drained: the next arrival raises a new edge.
                    r.readable.set(false);
                }
                return Poll::Ready(Ok(n));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => r.readable.set(false),
                Some(libc::EINTR) => {}
                _ => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for EpollStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = &self.reg.readiness;
        loop {
            if !r.can_write() {
                r.write_waker.set(Some(cx.waker().clone()));
                return Poll::Pending;
            }
            // SAFETY: `buf` is valid for reads of its length.
            let n = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    buf.as_ptr() as *const libc::c_void,
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                // A short write leaves the flag set: the next send reports
                // EAGAIN if the buffer really is full (rare).
                return Poll::Ready(Ok(n as usize));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => r.writable.set(false),
                Some(libc::EINTR) => {}
                _ => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // SAFETY: plain syscall on our fd.
        let rc = unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOTCONN) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// A listening socket accepting [`EpollStream`]s.
pub struct EpollListener {
    reg: Registration,
    fd: OwnedFd,
}

impl EpollListener {
    /// Takes ownership of a bound, listening socket (made non-blocking here).
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let fd: OwnedFd = listener.into();
        let reg = reactor()?.register(fd.as_raw_fd(), true)?;
        Ok(EpollListener { reg, fd })
    }

    /// Accepts the next connection (non-blocking, close-on-exec).
    pub fn accept(&self) -> impl Future<Output = io::Result<EpollStream>> + '_ {
        std::future::poll_fn(move |cx| {
            let r = &self.reg.readiness;
            loop {
                if !r.can_read() {
                    r.read_waker.set(Some(cx.waker().clone()));
                    return Poll::Pending;
                }
                // SAFETY: plain syscall; no peer address wanted.
                let fd = unsafe {
                    libc::accept4(
                        self.fd.as_raw_fd(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    )
                };
                if fd >= 0 {
                    // SAFETY: a fresh fd we own.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    return Poll::Ready(EpollStream::from_fd(fd));
                }
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => r.readable.set(false),
                    Some(libc::EINTR) | Some(libc::ECONNABORTED) => {}
                    _ => return Poll::Ready(Err(e)),
                }
            }
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        socket2::SockRef::from(&self.fd)
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an inet socket"))
    }
}

/// A wake-up any thread can ring for a task on one shard: an eventfd,
/// registered in that shard's epoll by [`Doorbell::listen`].
///
/// Cross-shard mailboxes use it so their reader sleeps until something
/// arrives instead of looking every few milliseconds: an idle gateway then
/// has no timer wake-ups for them at all. If the eventfd cannot be created
/// (fd exhaustion at start), ringing does nothing and [`BellListener::rung`]
/// never completes; callers race it against their own periodic tick.
pub struct Doorbell {
    fd: Option<OwnedFd>,
}

impl Doorbell {
    /// A new, unrung bell.
    pub fn new() -> Self {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        Doorbell {
            // SAFETY: a fresh fd we own.
            fd: (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) }),
        }
    }

    /// Rings the bell, from any thread; never blocks. Rings before the
    /// listener waits are not lost: the counter stays non-zero.
    pub fn ring(&self) {
        if let Some(fd) = &self.fd {
            let one: u64 = 1;
            // SAFETY: valid eventfd and an 8-byte buffer. A full counter
            // (EAGAIN) means it is rung already.
            unsafe { libc::write(fd.as_raw_fd(), &one as *const u64 as *const libc::c_void, 8) };
        }
    }

    /// Registers the bell in the current shard's epoll, for one task there
    /// to wait on.
    pub fn listen(self: &std::sync::Arc<Self>) -> io::Result<BellListener> {
        let reg = match &self.fd {
            Some(fd) => Some(reactor()?.register(fd.as_raw_fd(), true)?),
            None => None,
        };
        Ok(BellListener {
            reg,
            bell: self.clone(),
        })
    }
}

impl Default for Doorbell {
    fn default() -> Self {
        Self::new()
    }
}

/// One shard's view of a [`Doorbell`].
pub struct BellListener {
    reg: Option<Registration>,
    bell: std::sync::Arc<Doorbell>,
}

impl BellListener {
    /// Completes once the bell has been rung since the last time this
    /// completed (or since [`Doorbell::listen`], for rings before it).
    pub async fn rung(&self) {
        let (Some(reg), Some(fd)) = (&self.reg, &self.bell.fd) else {
            return std::future::pending().await;
        };
        std::future::poll_fn(|cx| {
            let r = &reg.readiness;
            if r.can_read() {
                let mut count = 0u64;
                // SAFETY: valid eventfd and an 8-byte buffer; reading
                // resets the counter.
                let n = unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        &mut count as *mut u64 as *mut libc::c_void,
                        8,
                    )
                };
                if n == 8 {
                    return Poll::Ready(());
                }
                // Drained (EAGAIN): edge-triggered, the next ring raises a
                // new event.
                r.readable.set(false);
            }
            r.read_waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

impl Drop for BellListener {
    fn drop(&mut self) {
        // The eventfd outlives this registration (the bell is shared), so
        // it must leave the epoll set explicitly before its slot is freed.
        if let (Some(reg), Some(fd)) = (&self.reg, &self.bell.fd) {
            // SAFETY: valid fds; failure only leaves a stale entry whose
            // token maps to no slot.
            unsafe {
                libc::epoll_ctl(
                    reg.reactor.epfd.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    fd.as_raw_fd(),
                    std::ptr::null_mut(),
                )
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use std::time::Duration;

    use crate::runtime::run_on_test_executor as run;

    async fn pair() -> (EpollStream, EpollStream) {
        let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listener = EpollListener::from_std(std).unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) =
            futures_lite::future::zip(EpollStream::connect(addr), listener.accept()).await;
        (client.unwrap(), server.unwrap())
    }

    #[test]
    fn a_doorbell_rung_from_another_thread_wakes_its_listener() {
        run(|| async {
            let bell = std::sync::Arc::new(Doorbell::new());
            let listener = bell.listen().unwrap();
            // Nothing rung yet.
            let early = crate::runtime::timeout(Duration::from_millis(20), listener.rung()).await;
            assert!(early.is_none());
            // A ring before the wait is kept; two rings are one wake-up.
            bell.ring();
            bell.ring();
            crate::runtime::timeout(Duration::from_secs(5), listener.rung())
                .await
                .expect("rung before the wait");
            let again = crate::runtime::timeout(Duration::from_millis(20), listener.rung()).await;
            assert!(again.is_none(), "two rings before one wait are one wake-up");
            // From another thread, while waiting.
            let remote = bell.clone();
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                remote.ring();
            });
            crate::runtime::timeout(Duration::from_secs(5), listener.rung())
                .await
                .expect("rung from another thread");
            t.join().unwrap();
            drop(listener);
            // Listening again after the first listener left the epoll set.
            let listener = bell.listen().unwrap();
            bell.ring();
            crate::runtime::timeout(Duration::from_secs(5), listener.rung())
                .await
                .expect("a second listener");
        });
    }

    #[test]
    fn a_timed_out_read_loses_nothing() {
        run(|| async {
            let (mut a, mut b) = pair().await;
            let mut buf = [0u8; 16];
            // Nothing to read yet: the read is abandoned by the timeout.
            let r = crate::runtime::timeout(Duration::from_millis(20), b.read(&mut buf)).await;
            assert!(r.is_none());
            a.write_all(b"hello").await.unwrap();
            let n = crate::runtime::timeout(Duration::from_secs(5), b.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], b"hello");
        });
    }

    #[test]
    fn eof_arriving_with_data_is_seen() {
        run(|| async {
            let (mut a, mut b) = pair().await;
            a.write_all(b"last words").await.unwrap();
            a.close().await.unwrap();
            glommio::timer::sleep(Duration::from_millis(20)).await;
            let mut buf = [0u8; 64];
            let n = b.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"last words");
            let eof = crate::runtime::timeout(Duration::from_secs(5), b.read(&mut buf)).await;
            assert_eq!(eof.unwrap().unwrap(), 0);
        });
    }

    #[test]
    fn large_writes_wait_for_the_reader() {
        run(|| async {
            let (mut a, mut b) = pair().await;
            let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| i as u8).collect();
            let expected = data.clone();
            let writer = glommio::spawn_local(async move {
                a.write_all(&data).await.unwrap();
                a.close().await.unwrap();
            });
            let mut got = Vec::new();
            let mut buf = vec![0u8; 7000];
            loop {
                let n = b.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            writer.await;
            assert!(got == expected);
        });
    }

    #[test]
    fn a_refused_connect_fails() {
        run(|| async {
            let addr = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap()
            };
            let r = crate::runtime::timeout(Duration::from_secs(5), EpollStream::connect(addr))
                .await
                .unwrap();
            assert!(r.is_err());
        });
    }
}
