//! Per-shard free lists of I/O read buffers.
//!
//! A keep-alive connection spends most of its life idle, and a buffer it
//! keeps while idle is memory 10,000 idle connections multiply. So client
//! connections and pooled upstream connections hand their read buffer back
//! here when they go idle and take one again when bytes arrive. Each shard
//! is one thread, so the lists are thread-local and need no locking; a
//! buffer taken on one shard and given back on another simply joins that
//! shard's list.
//!
//! Buffers are kept at full length (`len() == capacity()` of their class),
//! so reusing one costs no zeroing: callers track which bytes are valid.

use std::cell::RefCell;

/// Read buffer of a client connection.
pub const CLIENT_READ: usize = 8 * 1024;
/// Read buffer of an upstream connection.
pub const UPSTREAM_READ: usize = 32 * 1024;

/// Buffers kept per class and shard: enough for the connections busy at
/// once under heavy load, few enough that an idle shard holds at most
/// 64 x (8 + 32) KiB.
const KEEP_PER_CLASS: usize = 64;

#[derive(Default)]
struct FreeLists {
    client: Vec<Vec<u8>>,
    upstream: Vec<Vec<u8>>,
}

impl FreeLists {
    fn list(&mut self, size: usize) -> Option<&mut Vec<Vec<u8>>> {
        match size {
            CLIENT_READ => Some(&mut self.client),
            UPSTREAM_READ => Some(&mut self.upstream),
            _ => None,
        }
    }
}

thread_local! {
    static FREE: RefCell<FreeLists> = RefCell::new(FreeLists::default());
}

/// A buffer of `size` bytes (contents unspecified): a recycled one when
/// `size` is a class with one on the list, else a new zeroed one.
pub fn take(size: usize) -> Vec<u8> {
    let recycled = FREE.with(|f| f.borrow_mut().list(size).and_then(Vec::pop));
    recycled.unwrap_or_else(|| vec![0; size])
}

/// Gives a buffer back. Kept when its length is one of the classes (a
/// buffer that grew for a large message is freed) and the list has room.
pub fn give(buf: Vec<u8>) {
    if buf.len() != buf.capacity() {
        return;
    }
    FREE.with(|f| {
        if let Some(list) = f.borrow_mut().list(buf.len()) {
            if list.len() < KEEP_PER_CLASS {
                list.push(buf);
            }
        }
    });
}

/// Buffers currently kept by this thread, per class (client, upstream).
#[cfg(test)]
fn kept() -> (usize, usize) {
    FREE.with(|f| {
        let f = f.borrow();
        (f.client.len(), f.upstream.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again_without_allocating() {
        let buf = take(CLIENT_READ);
        assert_eq!(buf.len(), CLIENT_READ);
        let ptr = buf.as_ptr();
        give(buf);
        assert_eq!(kept().0, 1);
        let again = take(CLIENT_READ);
        assert_eq!(again.as_ptr(), ptr);
        assert_eq!(kept().0, 0);
    }

    #[test]
    fn grown_and_odd_sized_buffers_are_not_kept() {
        let mut grown = take(UPSTREAM_READ);
        grown.resize(UPSTREAM_READ * 2, 0);
        give(grown);
        give(vec![0; 100]);
        let mut short = Vec::with_capacity(CLIENT_READ);
        short.resize(10, 0);
        give(short);
        assert_eq!(kept(), (0, 0));
    }

    #[test]
    fn the_lists_are_capped() {
        for _ in 0..KEEP_PER_CLASS + 10 {
            give(vec![0; CLIENT_READ]);
        }
        assert_eq!(kept().0, KEEP_PER_CLASS);
    }
}
