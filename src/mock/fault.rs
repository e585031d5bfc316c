//! Fault modes: ways the mock misbehaves at the transport level, picked by
//! `fault-<mode>` in the model name (`mock-fault-<mode>`) or in the
//! presented key, so a credential pool can hold one faulty key next to
//! good ones. What each does is in the module docs of `mock`.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use memchr::memmem;

/// The trickle interval when `fault-trickle` names none.
pub const TRICKLE_DEFAULT: Duration = Duration::from_millis(20);

/// How often a stalled answer looks whether the peer closed.
const STALL_POLL: Duration = Duration::from_millis(10);

/// The longest a stalled answer waits for the peer to close.
const STALL_MAX: Duration = Duration::from_secs(600);

/// One fault mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `reset-head`: read the request, then reset the connection (RST, no
    /// byte sent).
    ResetHead,
    /// `reset-body`: the head and part of the body (a few events of a
    /// stream), then a reset.
    ResetBody,
    /// `stall`: read the request and never answer, until the peer closes.
    Stall,
    /// `garbage-head`: bytes that are no HTTP response head, then a close.
    GarbageHead,
    /// `truncated-sse`: the same as `mock-stream-truncate`.
    TruncatedSse,
    /// `trickle[-<ms>]`: the head at once, then the body one byte every
    /// interval (20 ms unless given).
    Trickle(Duration),
    /// `<status>` (400..=599, e.g. `fault-500`, `fault-429`): that status
    /// with the protocol's error body (429 with `retry-after: 1`).
    Status(u16),
}

/// The fault `text` (a model name or a key) asks for with `fault-<mode>`.
/// A text without `fault-` costs one substring search.
pub fn parse(text: &[u8]) -> Option<Fault> {
    memmem::find_iter(text, b"fault-").find_map(|at| mode(&text[at + b"fault-".len()..]))
}

fn mode(rest: &[u8]) -> Option<Fault> {
    let named = [
        (&b"reset-head"[..], Fault::ResetHead),
        (b"reset-body", Fault::ResetBody),
        (b"stall", Fault::Stall),
        (b"garbage-head", Fault::GarbageHead),
        (b"truncated-sse", Fault::TruncatedSse),
    ];
    if let Some((_, fault)) = named.iter().find(|(name, _)| rest.starts_with(name)) {
        return Some(*fault);
    }
    if let Some(after) = rest.strip_prefix(b"trickle") {
        let ms = after.strip_prefix(b"-").and_then(leading_number);
        return Some(Fault::Trickle(
            ms.map_or(TRICKLE_DEFAULT, Duration::from_millis),
        ));
    }
    leading_number(rest)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|s| matches!(s, 400..=599))
        .map(Fault::Status)
}

fn leading_number(s: &[u8]) -> Option<u64> {
    let end = s
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    std::str::from_utf8(&s[..end]).ok()?.parse().ok()
}

/// The bytes a `garbage-head` answer sends instead of a response head.
pub const GARBAGE_HEAD: &[u8] = b"HTTP/1.1 2xx garbage\r\n\x00\xff\xfe this is not HTTP\r\n\r\n";

/// Waits until the peer of `fd` closes its side (EOF or an error), reading
/// and dropping whatever it sends meanwhile. Returns `false` when it gave
/// up first (`stop` turned true, or [`STALL_MAX`] passed).
pub async fn wait_peer_close(fd: RawFd, stop: impl Fn() -> bool) -> bool {
    let end = Instant::now() + STALL_MAX;
    let mut sink = [0u8; 4096];
    loop {
        // SAFETY: `fd` is the connection's socket, open for the whole call;
        // `sink` is valid for writes of its length.
        let n = unsafe {
            libc::recv(
                fd,
                sink.as_mut_ptr() as *mut libc::c_void,
                sink.len(),
                libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => return true,
            n if n > 0 => continue,
            _ => {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EINTR) => {}
                    _ => return true,
                }
            }
        }
        if stop() || Instant::now() >= end {
            return false;
        }
        crate::runtime::sleep(STALL_POLL).await;
    }
}

/// Whether a failed answer means the peer closed the connection while the
/// mock was still sending.
pub fn is_peer_close(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_read_from_model_names_and_keys() {
        assert_eq!(parse(b"mock-fault-reset-head"), Some(Fault::ResetHead));
        assert_eq!(parse(b"sk-fault-reset-body-1"), Some(Fault::ResetBody));
        assert_eq!(parse(b"mock-fault-stall"), Some(Fault::Stall));
        assert_eq!(
            parse(b"models/mock-fault-garbage-head"),
            Some(Fault::GarbageHead)
        );
        assert_eq!(
            parse(b"mock-fault-truncated-sse"),
            Some(Fault::TruncatedSse)
        );
        assert_eq!(
            parse(b"mock-fault-trickle"),
            Some(Fault::Trickle(TRICKLE_DEFAULT))
        );
        assert_eq!(
            parse(b"key-fault-trickle-5-x"),
            Some(Fault::Trickle(Duration::from_millis(5)))
        );
        assert_eq!(parse(b"mock-fault-503"), Some(Fault::Status(503)));
        assert_eq!(parse(b"fault-429"), Some(Fault::Status(429)));
        assert_eq!(parse(b"fault-200"), None);
        assert_eq!(parse(b"fault-unknown"), None);
        assert_eq!(parse(b"default-model"), None);
        // The first known mode wins.
        assert_eq!(parse(b"fault-x-fault-stall"), Some(Fault::Stall));
    }
}
