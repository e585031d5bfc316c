//! A hashed timing wheel: the store behind a shard's coarse deadlines.
//!
//! Almost every request arms a few guards (the keep-alive idle deadline,
//! the upstream head deadline, the periodic look at whether the client
//! went away) and almost none of them fire: they are removed a millisecond
//! later when the request ends. A wheel makes arming and removing O(1)
//! with no allocation once warm (entries live in a slab, linked into
//! per-tick lists), where glommio's own timers are a heap-allocated
//! `Timer` each and a `BTreeMap` insert and removal.
//!
//! Sans-IO: time is a tick count the caller passes in (`runtime::timer`
//! turns `Instant`s into ticks and drives [`Wheel::advance`] from one task
//! per shard). Nothing fires early: an entry for tick `t` fires only once
//! `advance` has been told that tick `t` has been reached.
//!
//! Layout: `SLOTS` lists, one per tick of the current rotation, and one
//! overflow list for entries further away than a rotation. Every half
//! rotation the overflow entries that come within a rotation move into
//! their slot ("cascade"), so a far deadline (a 60 s keep-alive) costs one
//! walk per half rotation, not one visit per rotation of every slot.

/// Slots in the wheel: ticks in one rotation. A power of two.
pub const SLOTS: u64 = 4096;
/// Ticks between two cascades of the overflow list.
const HALF: u64 = SLOTS / 2;
const NIL: u32 = u32::MAX;
/// Index of the overflow list among the list heads.
const OVERFLOW: usize = SLOTS as usize;

/// An armed entry's handle, given back by [`Wheel::insert`]; the owner
/// must hand it to [`Wheel::remove`] exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key(u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    /// Linked into list `list` (a slot, or [`OVERFLOW`]).
    Armed {
        list: usize,
    },
    /// Its tick was reached; the value was handed out by `advance`.
    Fired,
}

struct Entry<T> {
    tick: u64,
    prev: u32,
    /// Next in its list, or in the free list when free.
    next: u32,
    state: State,
    value: Option<T>,
}

/// The wheel: entries with a due tick and a value (a waker) each.
pub struct Wheel<T> {
    entries: Vec<Entry<T>>,
    free: u32,
    /// List heads: `SLOTS` slots, then the overflow list.
    heads: Box<[u32]>,
    /// One bit per slot: its list is not empty.
    occupied: Box<[u64]>,
    /// Every tick up to and including this one has been reached.
    reached: u64,
    armed: usize,
}

impl<T> Default for Wheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Wheel<T> {
    /// An empty wheel at tick 0 (reached).
    pub fn new() -> Self {
        Wheel {
            entries: Vec::new(),
            free: NIL,
            heads: vec![NIL; SLOTS as usize + 1].into_boxed_slice(),
            occupied: vec![0; (SLOTS / 64) as usize].into_boxed_slice(),
            reached: 0,
            armed: 0,
        }
    }

    /// The last tick [`advance`](Self::advance) was told of.
    pub fn reached(&self) -> u64 {
        self.reached
    }

    /// Entries armed and not yet fired.
    pub fn armed(&self) -> usize {
        self.armed
    }

    /// Arms an entry due at `tick`. `Err(value)` when that tick has already
    /// been reached: the deadline has passed, nothing is stored.
    pub fn insert(&mut self, tick: u64, value: T) -> Result<Key, T> {
        if tick <= self.reached {
            return Err(value);
        }
        let index = match self.free {
            NIL => {
                self.entries.push(Entry {
                    tick,
                    prev: NIL,
                    next: NIL,
                    state: State::Free,
                    value: None,
                });
                u32::try_from(self.entries.len() - 1).expect("fewer than 2^32 deadlines")
            }
            i => {
                self.free = self.entries[i as usize].next;
                i
            }
        };
        let e = &mut self.entries[index as usize];
        e.tick = tick;
        e.value = Some(value);
        self.link(index, self.list_for(tick));
        self.armed += 1;
        Ok(Key(index))
    }

    /// Whether the entry's tick has been reached (its value was handed out).
    pub fn is_fired(&self, key: Key) -> bool {
        self.entries[key.0 as usize].state == State::Fired
    }

    /// The value of an entry that has not fired, to replace it.
    pub fn value_mut(&mut self, key: Key) -> Option<&mut T> {
        self.entries[key.0 as usize].value.as_mut()
    }

    /// Disarms (if still armed) and frees an entry; gives back its value
    /// if it had not fired.
    pub fn remove(&mut self, key: Key) -> Option<T> {
        let index = key.0;
        if let State::Armed { list } = self.entries[index as usize].state {
            self.unlink(index, list);
            self.armed -= 1;
        }
        let e = &mut self.entries[index as usize];
        debug_assert!(e.state != State::Free, "a wheel key removed twice");
        e.state = State::Free;
        e.next = self.free;
        self.free = index;
        e.value.take()
    }

    /// The tick at which [`advance`](Self::advance) next has work: the first
    /// occupied slot, or the next cascade while the overflow list has
    /// entries. `None` when nothing is armed.
    pub fn next_wake(&self) -> Option<u64> {
        let slot = self.first_occupied_after(self.reached);
        let cascade = (self.heads[OVERFLOW] != NIL).then(|| (self.reached / HALF + 1) * HALF);
        match (slot, cascade) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Tick `now` has been reached: every entry due at or before it fires,
    /// its value pushed to `fired`.
    pub fn advance(&mut self, now: u64, fired: &mut Vec<T>) {
        if now <= self.reached {
            return;
        }
        if self.armed == 0 {
            self.reached = now;
            return;
        }
        if now - self.reached >= SLOTS {
            // A stall longer than a rotation (or the first tick after one):
            // look at every slot once, then cascade from `now`.
            for slot in 0..SLOTS as usize {
                self.fire_list(slot, now, fired);
            }
            self.reached = now;
            self.cascade(now, fired);
            return;
        }
        for tick in self.reached + 1..=now {
            self.reached = tick;
            if tick % HALF == 0 {
                self.cascade(now, fired);
            }
            self.fire_list((tick % SLOTS) as usize, now, fired);
        }
    }

    /// The list an entry due at `tick` belongs in now.
    fn list_for(&self, tick: u64) -> usize {
        if tick - self.reached < SLOTS {
            (tick % SLOTS) as usize
        } else {
            OVERFLOW
        }
    }

    /// Fires the entries of `list` due by `now`.
    fn fire_list(&mut self, list: usize, now: u64, fired: &mut Vec<T>) {
        let mut i = self.heads[list];
        while i != NIL {
            let next = self.entries[i as usize].next;
            if self.entries[i as usize].tick <= now {
                self.fire(i, list, fired);
            }
            i = next;
        }
    }

    /// Moves the overflow entries that are now within a rotation of
    /// `reached` into their slots (firing any already due by `now`).
    fn cascade(&mut self, now: u64, fired: &mut Vec<T>) {
        let mut i = self.heads[OVERFLOW];
        while i != NIL {
            let next = self.entries[i as usize].next;
            let tick = self.entries[i as usize].tick;
            if tick <= now {
                self.fire(i, OVERFLOW, fired);
            } else if tick - self.reached < SLOTS {
                self.unlink(i, OVERFLOW);
                self.link(i, (tick % SLOTS) as usize);
            }
            i = next;
        }
    }

    fn fire(&mut self, index: u32, list: usize, fired: &mut Vec<T>) {
        self.unlink(index, list);
        self.armed -= 1;
        let e = &mut self.entries[index as usize];
        e.state = State::Fired;
        if let Some(v) = e.value.take() {
            fired.push(v);
        }
    }

    fn link(&mut self, index: u32, list: usize) {
        let head = self.heads[list];
        if head != NIL {
            self.entries[head as usize].prev = index;
        }
        let e = &mut self.entries[index as usize];
        e.prev = NIL;
        e.next = head;
        e.state = State::Armed { list };
        self.heads[list] = index;
        if list != OVERFLOW {
            self.occupied[list / 64] |= 1 << (list % 64);
        }
    }

    fn unlink(&mut self, index: u32, list: usize) {
        let (prev, next) = {
            let e = &self.entries[index as usize];
            (e.prev, e.next)
        };
        if prev == NIL {
            self.heads[list] = next;
            if next == NIL && list != OVERFLOW {
                self.occupied[list / 64] &= !(1 << (list % 64));
            }
        } else {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
    }

    /// The first tick after `after` whose slot is occupied, looking at most
    /// one rotation ahead.
    fn first_occupied_after(&self, after: u64) -> Option<u64> {
        let start = (after + 1) % SLOTS;
        let words = self.occupied.len() as u64;
        let mut word = start / 64;
        // Bits of the first word below `start` belong to the end of the
        // rotation: masked now, looked at again on the wrap.
        let mut bits = self.occupied[word as usize] & (!0u64 << (start % 64));
        for step in 0..=words {
            if bits != 0 {
                let slot = word * 64 + u64::from(bits.trailing_zeros());
                let distance = (slot + SLOTS - start) % SLOTS;
                return Some(after + 1 + distance);
            }
            word = (word + 1) % words;
            bits = self.occupied[word as usize];
            if step == words - 1 {
                // Back at the first word: only the bits below `start`.
                bits &= !(!0u64 << (start % 64));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fired(w: &mut Wheel<u32>, now: u64) -> Vec<u32> {
        let mut out = Vec::new();
        w.advance(now, &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn fires_at_its_tick_and_not_before() {
        let mut w = Wheel::new();
        let k = w.insert(5, 1).unwrap();
        assert_eq!(w.next_wake(), Some(5));
        assert!(fired(&mut w, 4).is_empty());
        assert!(!w.is_fired(k));
        assert_eq!(fired(&mut w, 5), vec![1]);
        assert!(w.is_fired(k));
        assert_eq!(w.remove(k), None);
        assert_eq!(w.armed(), 0);
        assert_eq!(w.next_wake(), None);
    }

    #[test]
    fn a_reached_tick_is_refused() {
        let mut w = Wheel::new();
        w.advance(10, &mut Vec::new());
        assert_eq!(w.insert(10, 7), Err(7));
        assert!(w.insert(11, 7).is_ok());
    }

    #[test]
    fn removed_entries_never_fire_and_slots_are_reused() {
        let mut w = Wheel::new();
        let a = w.insert(3, 1).unwrap();
        let b = w.insert(3, 2).unwrap();
        let c = w.insert(3, 3).unwrap();
        assert_eq!(w.remove(b), Some(2));
        let d = w.insert(4, 4).unwrap();
        assert_eq!(d, b, "the freed entry is reused");
        assert_eq!(fired(&mut w, 3), vec![1, 3]);
        w.remove(a);
        w.remove(c);
        assert_eq!(w.remove(d), Some(4));
        assert_eq!(w.armed(), 0);
        assert_eq!(w.next_wake(), None);
        assert!(fired(&mut w, 100).is_empty());
    }

    #[test]
    fn far_entries_cascade_and_fire_on_time() {
        let mut w = Wheel::new();
        let far = 3 * SLOTS + 17;
        let k = w.insert(far, 9).unwrap();
        let near = w.insert(2, 1).unwrap();
        assert_eq!(w.next_wake(), Some(2));
        assert_eq!(fired(&mut w, 2), vec![1]);
        w.remove(near);
        // Walk tick by tick through the wakes the wheel asks for: the far
        // entry fires exactly at its tick, after a few cascades.
        let mut wakes = 0;
        while let Some(t) = w.next_wake() {
            wakes += 1;
            let out = fired(&mut w, t);
            if t < far {
                assert!(out.is_empty(), "fired early at {t}");
            } else {
                assert_eq!((t, out), (far, vec![9]));
            }
        }
        assert!(w.is_fired(k));
        assert!(wakes <= 8, "{wakes} wakes for one far entry");
    }

    #[test]
    fn a_long_stall_fires_everything_due_and_keeps_the_rest() {
        let mut w = Wheel::new();
        let mut keys = Vec::new();
        for (i, t) in [1, SLOTS - 1, SLOTS + 5, 2 * SLOTS, 10 * SLOTS]
            .into_iter()
            .enumerate()
        {
            keys.push(w.insert(t, i as u32).unwrap());
        }
        assert_eq!(fired(&mut w, 2 * SLOTS + 1), vec![0, 1, 2, 3]);
        assert_eq!(w.armed(), 1);
        assert!(fired(&mut w, 10 * SLOTS - 1).is_empty());
        assert_eq!(fired(&mut w, 10 * SLOTS), vec![4]);
    }

    #[test]
    fn next_wake_wraps_around_the_rotation() {
        let mut w = Wheel::new();
        w.advance(SLOTS - 10, &mut Vec::new());
        // Slot index 3 of the next rotation: behind `reached` in the array.
        w.insert(SLOTS + 3, 1).unwrap();
        assert_eq!(w.next_wake(), Some(SLOTS + 3));
        w.insert(SLOTS - 2, 2).unwrap();
        assert_eq!(w.next_wake(), Some(SLOTS - 2));
    }

    /// Against a plain list: random inserts, removals and advances, every
    /// value fires exactly at the first advance at or past its tick.
    #[test]
    fn matches_a_naive_model() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut w = Wheel::new();
        let mut model: Vec<(u32, u64, Key)> = Vec::new();
        let mut now = 0u64;
        for id in 0..20_000u32 {
            match rand(10) {
                0..=4 => {
                    let span = if rand(4) == 0 { 5 * SLOTS } else { 300 };
                    let tick = now + 1 + rand(span);
                    let key = w.insert(tick, id).unwrap();
                    model.push((id, tick, key));
                }
                5..=6 if !model.is_empty() => {
                    let pick = rand(model.len() as u64) as usize;
                    let (_, _, key) = model.swap_remove(pick);
                    assert!(w.remove(key).is_some());
                }
                _ => {
                    now += match rand(20) {
                        0 => 2 * SLOTS,
                        1..=3 => rand(SLOTS),
                        _ => rand(8),
                    };
                    let got = fired(&mut w, now);
                    let mut want: Vec<u32> =
                        model.iter().filter(|m| m.1 <= now).map(|m| m.0).collect();
                    want.sort_unstable();
                    assert_eq!(got, want, "at tick {now}");
                    for (_, _, key) in model.iter().filter(|m| m.1 <= now) {
                        assert!(w.is_fired(*key));
                        assert!(w.remove(*key).is_none());
                    }
                    model.retain(|m| m.1 > now);
                    assert_eq!(w.armed(), model.len());
                    let earliest = model.iter().map(|m| m.1).min();
                    if let (Some(e), Some(wake)) = (earliest, w.next_wake()) {
                        assert!(wake <= e, "wake {wake} after the earliest entry {e}");
                    }
                    assert_eq!(w.next_wake().is_some(), earliest.is_some());
                }
            }
        }
    }
}
