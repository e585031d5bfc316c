//! One provider's credentials on one shard: selection, in-flight limits,
//! health, and a bounded wait queue.
//!
//! Each credential lives in a slot with a stable [`SlotId`]. A slot is in one
//! of these states:
//!
//! ```text
//!              429                      cooldown over
//!   healthy ---------> cooling_down ---------------------> healthy
//!      |  5xx/network x threshold (also from cooling_down)
//!      +-------------> disabled --probe due, idle--> probing --success--> healthy
//!      |                  ^                             | failure: next probe at
//!      |                  +-----------------------------+ interval x 2, 4, 8 (cap)
//!      |  401/403 (refreshable, first time)
//!      +-------------> refresh_pending --mark_refreshed--> healthy
//!                                     (401/403 again before a success: disabled)
//!   mark_dead: dead, from any state, until the slot is removed.
//! ```
//!
//! # Selection cost
//!
//! Round robin keeps a ring of the *usable* slots (healthy and below
//! `max_in_flight`): `select` pops the head and pushes it back, so it never
//! looks at a cooling, disabled or saturated slot. Slots that leave the
//! usable set are dropped lazily: each ring entry carries the slot's
//! generation, and an entry whose generation is stale is discarded when it
//! reaches the head. Every stale entry is created by one state change and
//! discarded once, so selection is O(1) amortised. Cooldown ends and probe
//! times sit in a min-heap that `select` only pops when its head is due.
//!
//! Least-in-flight scans the live slots for the smallest in-flight count,
//! stopping early at an idle one. In-flight buckets would make it O(1), but
//! measured (`benches/routing.rs`), select+finish on 50 slots costs ~7 ns
//! when one is idle and ~85-100 ns when all 50 are loaded (a full scan, ~2 ns a
//! slot): small next to a request, so the simpler structure stays.
//!
//! # Bookkeeping contract
//!
//! `select` counts the chosen request in flight (there is no separate
//! `begin`: doing both in one call means no window where two requests can
//! claim the last free place, or the probe of a disabled slot). Every
//! `Selection::Chosen(id)` must be matched by exactly one `finish(id, ..)`,
//! with [`Outcome::Cancelled`] when the request ended without an answer (the
//! client left). `finish` on a removed slot is a no-op.
//!
//! Results of requests that were already in flight when their slot was
//! disabled, marked dead or sent for refresh are counted in the totals but
//! change no state: they predate the decision, and only the probe (or the
//! refresh) decides what happens next. A disabled slot is probed only when
//! nothing else is in flight on it, so the one result that comes back is
//! unambiguously the probe's.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

/// A stable slot identifier. Ids are never reused within a pool, so a
/// late `finish` for a removed slot can never touch its successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(pub u32);

/// How `select` chooses among usable credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Each usable credential in turn.
    #[default]
    RoundRobin,
    /// The credential with the fewest requests in flight (ties in turn).
    LeastInFlight,
}

/// Health and limit settings of a pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthSettings {
    /// Consecutive server or network errors before a credential is disabled
    /// (default 3; 0 is treated as 1).
    pub error_threshold: u32,
    /// Cooldown after a 429 without `Retry-After` (default 1 s).
    pub cooldown_default: Duration,
    /// Cap on a 429's `Retry-After` (default 60 s): a provider asking for an
    /// hour must not take a credential out for an hour on one answer.
    pub cooldown_max: Duration,
    /// How often a disabled credential gets one probe request (default 30 s;
    /// doubled after each failed probe, up to 8x).
    pub probe_interval: Duration,
    /// Requests in flight per credential, 0 = unlimited (default 0).
    pub max_in_flight: u32,
    /// Requests that may wait for a free credential (the `Busy` case) before
    /// `try_enqueue` refuses (default 64). Not in the original brief: the
    /// queue's bound belongs with the pool it waits on.
    pub queue_limit: u32,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            error_threshold: 3,
            cooldown_default: Duration::from_secs(1),
            cooldown_max: Duration::from_secs(60),
            probe_interval: Duration::from_secs(30),
            max_in_flight: 0,
            queue_limit: 64,
        }
    }
}

/// What `select` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Use this credential; it is now counted in flight.
    Chosen(SlotId),
    /// Every usable credential is at `max_in_flight`: the caller may queue
    /// ([`CredentialPool::try_enqueue`]) and select again when one finishes.
    Busy,
    /// No credential can take a request now.
    Unavailable {
        /// Time until the earliest cooldown ends or probe is due; `None` when
        /// nothing is scheduled (all dead, awaiting refresh, or probing).
        retry_after: Option<Duration>,
    },
}

/// How a request on a credential ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered (any status that is not a credential problem).
    Success,
    /// 429, with the parsed `Retry-After` if any.
    RateLimited {
        /// The upstream's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// 5xx.
    ServerError,
    /// 401 or 403.
    AuthFailed,
    /// Connect, TLS or read failure, or timeout.
    Network,
    /// The request ended without an answer that says anything about the
    /// credential (the client went away). Added to the brief's list so that
    /// every `Chosen` can be finished.
    Cancelled,
}

/// What the caller should do after `finish`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Refresh this OAuth credential, call [`CredentialPool::mark_refreshed`],
    /// then retry. The slot is not selected until then.
    Refresh,
    /// The credential is (still) disabled after this request: retry elsewhere.
    Disabled,
}

/// One slot as the admin endpoint shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotStatus {
    /// The slot.
    pub id: SlotId,
    /// `"healthy"`, `"cooling_down"`, `"disabled"`, `"probing"`, `"dead"` or
    /// `"refresh_pending"`.
    pub state: &'static str,
    /// Requests in flight now.
    pub in_flight: u32,
    /// Requests ever selected on this slot.
    pub requests_total: u64,
    /// Requests that ended in an error (429, 5xx, auth, network).
    pub errors_total: u64,
    /// Server/network errors since the last success.
    pub consecutive_errors: u32,
    /// Time left in a cooldown, or until a disabled slot's next probe.
    pub cooldown_remaining: Option<Duration>,
    /// The last error's class, or the reason given to `mark_dead`.
    pub last_error: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Healthy,
    Cooling {
        until: Instant,
    },
    /// `backoff` multiplies `probe_interval` for the next-but-one probe.
    Disabled {
        next_probe: Instant,
        backoff: u32,
    },
    Probing {
        backoff: u32,
    },
    RefreshPending,
    Dead,
}

#[derive(Debug)]
struct Slot {
    state: State,
    in_flight: u32,
    requests_total: u64,
    errors_total: u64,
    consecutive_errors: u32,
    last_error: Option<&'static str>,
    /// An OAuth credential (401 asks for a refresh) rather than a static key.
    refreshable: bool,
    /// Refreshed after a 401 and not yet confirmed by a success.
    refreshed: bool,
    /// Has a live entry in the ring (round robin only).
    in_ring: bool,
    /// Bumped when the slot leaves the ring: older ring entries are stale.
    ring_gen: u32,
    /// Bumped on every state change: older heap and probe entries are stale.
    wait_gen: u32,
    /// Has a live entry in the probe queue.
    probe_queued: bool,
}

/// Longest wait ever scheduled, so that `now + wait` cannot overflow.
const MAX_WAIT: Duration = Duration::from_secs(30 * 24 * 3600);
/// Cap of the probe backoff multiplier.
const MAX_BACKOFF: u32 = 8;

/// The credentials of one provider on one shard. See the module docs.
#[derive(Debug)]
pub struct CredentialPool {
    /// Indexed by `SlotId`; `None` once removed (ids are never reused).
    slots: Vec<Option<Slot>>,
    /// Ids of the slots not removed, for scans.
    live: Vec<u32>,
    policy: Policy,
    settings: HealthSettings,
    /// Round robin: usable slots as `(id, ring_gen)`, possibly with stale
    /// entries.
    ring: VecDeque<(u32, u32)>,
    /// Cooldown ends and probe times: `(when, id, wait_gen)`.
    waiting: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Disabled slots whose probe is due and that are idle: `(id, wait_gen)`.
    probes: VecDeque<(u32, u32)>,
    /// Slots in the healthy state (saturated or not): tells Busy from
    /// Unavailable without a scan.
    healthy: u32,
    /// Least-in-flight: where the next scan starts, so ties rotate.
    cursor: usize,
    queued: u32,
}

impl CredentialPool {
    /// A pool of `n` refreshable credentials with ids `0..n`.
    pub fn new(n: usize, policy: Policy, settings: HealthSettings) -> CredentialPool {
        let mut pool = CredentialPool {
            slots: Vec::with_capacity(n),
            live: Vec::with_capacity(n),
            policy,
            settings,
            ring: VecDeque::with_capacity(n),
            waiting: BinaryHeap::new(),
            probes: VecDeque::new(),
            healthy: 0,
            cursor: 0,
            queued: 0,
        };
        for _ in 0..n {
            pool.add();
        }
        pool
    }

    /// Adds a refreshable (OAuth) credential: its first 401/403 asks for a
    /// refresh.
    pub fn add(&mut self) -> SlotId {
        self.add_slot(true)
    }

    /// Adds a static credential (an API key): 401/403 disables it at once,
    /// since refreshing cannot fix it.
    pub fn add_static(&mut self) -> SlotId {
        self.add_slot(false)
    }

    fn add_slot(&mut self, refreshable: bool) -> SlotId {
        let id = u32::try_from(self.slots.len()).expect("fewer than 2^32 slots");
        self.slots.push(Some(Slot {
            state: State::Healthy,
            in_flight: 0,
            requests_total: 0,
            errors_total: 0,
            consecutive_errors: 0,
            last_error: None,
            refreshable,
            refreshed: false,
            in_ring: false,
            ring_gen: 0,
            wait_gen: 0,
            probe_queued: false,
        }));
        self.live.push(id);
        self.healthy += 1;
        self.ring_enter(id);
        SlotId(id)
    }

    /// Removes a slot, even with requests in flight (their `finish` becomes a
    /// no-op). Returns false if it was not there.
    pub fn remove(&mut self, id: SlotId) -> bool {
        let Some(slot) = self.slots.get_mut(id.0 as usize).and_then(Option::take) else {
            return false;
        };
        if slot.state == State::Healthy {
            self.healthy -= 1;
        }
        if let Some(pos) = self.live.iter().position(|&l| l == id.0) {
            self.live.swap_remove(pos);
        }
        // Its ring, heap and probe entries are now stale (no slot) and are
        // dropped when reached.
        true
    }

    /// Number of slots (not removed).
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// True when the pool has no slot.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The pool's settings.
    pub fn settings(&self) -> &HealthSettings {
        &self.settings
    }

    /// Replaces the settings (config reload), keeping every slot's state.
    pub fn set_settings(&mut self, settings: HealthSettings) {
        self.settings = settings;
        // A new max_in_flight changes who is usable: rebuild the ring.
        for i in 0..self.live.len() {
            let id = self.live[i];
            self.ring_leave(id);
            self.ring_enter(id);
        }
    }

    /// Requests in flight on a slot (0 if removed).
    pub fn in_flight(&self, id: SlotId) -> u32 {
        self.slot(id.0).map_or(0, |s| s.in_flight)
    }

    fn slot(&self, id: u32) -> Option<&Slot> {
        self.slots.get(id as usize).and_then(Option::as_ref)
    }

    fn slot_mut(&mut self, id: u32) -> Option<&mut Slot> {
        self.slots.get_mut(id as usize).and_then(Option::as_mut)
    }

    fn below_cap(&self, s: &Slot) -> bool {
        self.settings.max_in_flight == 0 || s.in_flight < self.settings.max_in_flight
    }

    /// Puts a slot in the ring if it is usable and not there yet.
    fn ring_enter(&mut self, id: u32) {
        if self.policy != Policy::RoundRobin {
            return;
        }
        let Some(s) = self.slot(id) else { return };
        if s.in_ring || s.state != State::Healthy || !self.below_cap(s) {
            return;
        }
        let s = self.slot_mut(id).expect("checked");
        s.in_ring = true;
        let entry = (id, s.ring_gen);
        self.ring.push_back(entry);
        if self.ring.len() > 2 * self.live.len() + 16 {
            self.compact_ring();
        }
    }

    /// Takes a slot out of the ring (lazily: its entry goes stale).
    fn ring_leave(&mut self, id: u32) {
        if let Some(s) = self.slot_mut(id) {
            if s.in_ring {
                s.in_ring = false;
                s.ring_gen = s.ring_gen.wrapping_add(1);
            }
        }
    }

    fn ring_entry_live(&self, (id, gen): (u32, u32)) -> bool {
        self.slot(id)
            .is_some_and(|s| s.in_ring && s.ring_gen == gen)
    }

    /// Drops stale ring entries. Only reached when state changes outpace
    /// selection (many slots flipping with no request in between).
    fn compact_ring(&mut self) {
        let mut ring = std::mem::take(&mut self.ring);
        ring.retain(|&e| self.ring_entry_live(e));
        self.ring = ring;
    }

    fn wait_entry_live(&self, id: u32, gen: u32) -> bool {
        self.slot(id).is_some_and(|s| s.wait_gen == gen)
    }

    /// Moves a slot to `new`, keeping the healthy count, the ring and the
    /// heap in step.
    fn transition(&mut self, id: u32, new: State) {
        let Some(s) = self.slot_mut(id) else { return };
        let was_healthy = s.state == State::Healthy;
        s.state = new;
        s.wait_gen = s.wait_gen.wrapping_add(1);
        s.probe_queued = false;
        let gen = s.wait_gen;
        let is_healthy = new == State::Healthy;
        match (was_healthy, is_healthy) {
            (false, true) => self.healthy += 1,
            (true, false) => self.healthy -= 1,
            _ => {}
        }
        if is_healthy {
            self.ring_enter(id);
        } else {
            self.ring_leave(id);
        }
        let when = match new {
            State::Cooling { until } => Some(until),
            State::Disabled { next_probe, .. } => Some(next_probe),
            _ => None,
        };
        if let Some(when) = when {
            self.waiting.push(Reverse((when, id, gen)));
            if self.waiting.len() > 2 * self.live.len() + 16 {
                let heap = std::mem::take(&mut self.waiting);
                self.waiting = heap
                    .into_vec()
                    .into_iter()
                    .filter(|Reverse((_, id, gen))| self.wait_entry_live(*id, *gen))
                    .collect();
            }
        }
    }

    /// Queues the probe of a disabled slot if it is due and idle.
    fn maybe_queue_probe(&mut self, id: u32, now: Instant) {
        let Some(s) = self.slot_mut(id) else { return };
        if let State::Disabled { next_probe, .. } = s.state {
            if next_probe <= now && s.in_flight == 0 && !s.probe_queued {
                s.probe_queued = true;
                let entry = (id, s.wait_gen);
                self.probes.push_back(entry);
            }
        }
    }

    /// Applies every cooldown end and probe time up to `now`.
    fn advance(&mut self, now: Instant) {
        while let Some(&Reverse((when, id, gen))) = self.waiting.peek() {
            if when > now {
                break;
            }
            self.waiting.pop();
            if !self.wait_entry_live(id, gen) {
                continue;
            }
            match self.slot(id).map(|s| s.state) {
                Some(State::Cooling { .. }) => self.transition(id, State::Healthy),
                // If requests are still in flight, the last `finish` queues
                // the probe instead.
                Some(State::Disabled { .. }) => self.maybe_queue_probe(id, now),
                _ => {}
            }
        }
    }

    /// Chooses a credential for one request and counts it in flight.
    ///
    /// A due probe goes first, so a disabled credential is retested even
    /// while others serve; then the policy picks among usable slots.
    pub fn select(&mut self, now: Instant) -> Selection {
        self.advance(now);
        while let Some((id, gen)) = self.probes.pop_front() {
            let Some(s) = self.slot(id) else { continue };
            if s.wait_gen != gen || !s.probe_queued {
                continue;
            }
            let State::Disabled { backoff, .. } = s.state else {
                continue;
            };
            self.transition(id, State::Probing { backoff });
            return self.chosen(id);
        }
        let picked = match self.policy {
            Policy::RoundRobin => self.pick_round_robin(),
            Policy::LeastInFlight => self.pick_least_in_flight(),
        };
        if let Some(id) = picked {
            return self.chosen(id);
        }
        if self.healthy > 0 {
            return Selection::Busy;
        }
        Selection::Unavailable {
            retry_after: self.next_wakeup(now),
        }
    }

    fn chosen(&mut self, id: u32) -> Selection {
        let s = self.slot_mut(id).expect("chosen slot exists");
        s.in_flight += 1;
        s.requests_total += 1;
        Selection::Chosen(SlotId(id))
    }

    fn pick_round_robin(&mut self) -> Option<u32> {
        while let Some(entry) = self.ring.pop_front() {
            if !self.ring_entry_live(entry) {
                continue;
            }
            let id = entry.0;
            // The request about to be counted may fill the slot.
            let full_after = {
                let max = self.settings.max_in_flight;
                let s = self.slot(id).expect("live entry");
                max != 0 && s.in_flight + 1 >= max
            };
            if full_after {
                self.ring_leave(id);
            } else {
                self.ring.push_back(entry);
            }
            return Some(id);
        }
        None
    }

    fn pick_least_in_flight(&mut self) -> Option<u32> {
        let n = self.live.len();
        let mut best: Option<(usize, u32)> = None;
        for k in 0..n {
            let pos = (self.cursor + k) % n;
            let s = self.slot(self.live[pos]).expect("live slot");
            if s.state != State::Healthy || !self.below_cap(s) {
                continue;
            }
            if best.is_none_or(|(_, f)| s.in_flight < f) {
                best = Some((pos, s.in_flight));
                if s.in_flight == 0 {
                    break;
                }
            }
        }
        let (pos, _) = best?;
        self.cursor = pos + 1;
        Some(self.live[pos])
    }

    /// Time until the earliest scheduled cooldown end or probe.
    fn next_wakeup(&mut self, now: Instant) -> Option<Duration> {
        while let Some(&Reverse((when, id, gen))) = self.waiting.peek() {
            if self.wait_entry_live(id, gen) {
                return Some(when.saturating_duration_since(now));
            }
            self.waiting.pop();
        }
        None
    }

    fn later(&self, now: Instant, wait: Duration) -> Instant {
        now + wait.min(MAX_WAIT)
    }

    /// Records how a request chosen by `select` ended and updates the slot's
    /// health. See the module docs for the state machine.
    pub fn finish(&mut self, id: SlotId, outcome: Outcome, now: Instant) -> Action {
        let threshold = self.settings.error_threshold.max(1);
        let probe_interval = self.settings.probe_interval;
        let Some(s) = self.slot_mut(id.0) else {
            return Action::None;
        };
        if s.in_flight == 0 {
            // A finish without a select: ignore rather than corrupt counts.
            return Action::None;
        }
        s.in_flight -= 1;
        let state = s.state;
        let error = match outcome {
            Outcome::Success | Outcome::Cancelled => None,
            Outcome::RateLimited { .. } => Some("rate_limited"),
            Outcome::ServerError => Some("server_error"),
            Outcome::AuthFailed => Some("auth_failed"),
            Outcome::Network => Some("network"),
        };
        if let Some(e) = error {
            s.errors_total += 1;
            if state != State::Dead {
                s.last_error = Some(e);
            }
        }
        // Requests that began before the slot was disabled, sent for refresh
        // or marked dead only count (see module docs).
        let current = matches!(
            state,
            State::Healthy | State::Cooling { .. } | State::Probing { .. }
        );
        let disable = |backoff: u32| State::Disabled {
            next_probe: now + (probe_interval * backoff).min(MAX_WAIT),
            backoff,
        };
        // Backoff for the next disable: doubled after a failed probe.
        let next_backoff = match state {
            State::Probing { backoff } => (backoff * 2).min(MAX_BACKOFF),
            _ => 1,
        };
        let mut action = Action::None;
        match outcome {
            Outcome::Success if current => {
                s.consecutive_errors = 0;
                s.refreshed = false;
                if let State::Probing { .. } = state {
                    self.transition(id.0, State::Healthy);
                }
            }
            Outcome::Success => {}
            Outcome::Cancelled => {
                if let State::Probing { backoff } = state {
                    // The probe told us nothing: probe again on next select.
                    self.transition(
                        id.0,
                        State::Disabled {
                            next_probe: now,
                            backoff,
                        },
                    );
                }
            }
            Outcome::RateLimited { retry_after } if current => {
                // A 429 says the credential works but is out of quota: cool it
                // down, never count it toward disabling. A probe answered 429
                // leaves "disabled" for the cooldown.
                let wait = retry_after
                    .unwrap_or(self.settings.cooldown_default)
                    .min(self.settings.cooldown_max);
                let until = self.later(now, wait);
                let extend = match state {
                    State::Cooling { until: u } => until > u,
                    _ => true,
                };
                if extend {
                    self.transition(id.0, State::Cooling { until });
                }
            }
            Outcome::ServerError | Outcome::Network if current => {
                s.consecutive_errors += 1;
                if s.consecutive_errors >= threshold || matches!(state, State::Probing { .. }) {
                    self.transition(id.0, disable(next_backoff));
                    action = Action::Disabled;
                }
            }
            Outcome::AuthFailed if current => {
                if s.refreshable && !s.refreshed {
                    self.transition(id.0, State::RefreshPending);
                    action = Action::Refresh;
                } else {
                    self.transition(id.0, disable(next_backoff));
                    action = Action::Disabled;
                }
            }
            Outcome::RateLimited { .. }
            | Outcome::ServerError
            | Outcome::Network
            | Outcome::AuthFailed => {}
        }
        // Back below the cap, or the last old request of a disabled slot.
        self.ring_enter(id.0);
        self.maybe_queue_probe(id.0, now);
        action
    }

    /// The credential can never work again (its refresh token was rejected):
    /// it is not selected until removed and replaced.
    pub fn mark_dead(&mut self, id: SlotId, reason: &'static str) {
        if let Some(s) = self.slot_mut(id.0) {
            s.last_error = Some(reason);
            self.transition(id.0, State::Dead);
        }
    }

    /// The caller refreshed the credential. After a [`Action::Refresh`] the
    /// slot becomes selectable again (one more 401/403 before a success
    /// disables it); a disabled slot gets its probe at once, since the new
    /// token is news. Other states are unchanged.
    pub fn mark_refreshed(&mut self, id: SlotId, now: Instant) {
        let Some(s) = self.slot_mut(id.0) else { return };
        match s.state {
            State::RefreshPending => {
                s.refreshed = true;
                self.transition(id.0, State::Healthy);
            }
            State::Disabled { backoff, .. } => {
                self.transition(
                    id.0,
                    State::Disabled {
                        next_probe: now,
                        backoff,
                    },
                );
                self.maybe_queue_probe(id.0, now);
            }
            _ => {}
        }
    }

    /// Counts one request waiting for a credential (after `Busy`). False when
    /// `queue_limit` requests already wait: answer 429. The pool only counts;
    /// the caller keeps the waiters and, after each `finish`, wakes one if
    /// `queue_len() > 0` so it can `select` again.
    pub fn try_enqueue(&mut self) -> bool {
        if self.queued >= self.settings.queue_limit {
            return false;
        }
        self.queued += 1;
        true
    }

    /// One waiting request left the queue (it got a credential or gave up).
    pub fn dequeue(&mut self) {
        self.queued = self.queued.saturating_sub(1);
    }

    /// Requests waiting for a credential.
    pub fn queue_len(&self) -> u32 {
        self.queued
    }

    /// Every slot, in id order, for the admin endpoint.
    pub fn status(&self, now: Instant) -> Vec<SlotStatus> {
        let mut out = Vec::with_capacity(self.live.len());
        for (i, s) in self.slots.iter().enumerate() {
            let Some(s) = s else { continue };
            let (state, remaining) = match s.state {
                State::Healthy => ("healthy", None),
                // Due but not yet applied by a select: healthy in effect.
                State::Cooling { until } if until <= now => ("healthy", None),
                State::Cooling { until } => ("cooling_down", Some(until - now)),
                State::Disabled { next_probe, .. } => {
                    ("disabled", Some(next_probe.saturating_duration_since(now)))
                }
                State::Probing { .. } => ("probing", None),
                State::RefreshPending => ("refresh_pending", None),
                State::Dead => ("dead", None),
            };
            out.push(SlotStatus {
                id: SlotId(i as u32),
                state,
                in_flight: s.in_flight,
                requests_total: s.requests_total,
                errors_total: s.errors_total,
                consecutive_errors: s.consecutive_errors,
                cooldown_remaining: remaining,
                last_error: s.last_error,
            });
        }
        out
    }

    /// Checks the internal invariants; panics with a description if broken.
    #[cfg(test)]
    fn check_invariants(&self) {
        let mut healthy = 0;
        for &id in &self.live {
            let s = self.slot(id).expect("live slot exists");
            if s.state == State::Healthy {
                healthy += 1;
            }
            let usable = s.state == State::Healthy && self.below_cap(s);
            if self.policy == Policy::RoundRobin {
                assert_eq!(s.in_ring, usable, "slot {id}: in_ring vs usable");
                let entries = self
                    .ring
                    .iter()
                    .filter(|&&(i, g)| i == id && g == s.ring_gen);
                assert_eq!(
                    entries.count(),
                    usize::from(s.in_ring),
                    "slot {id}: ring entries"
                );
            }
            if let State::Probing { .. } = s.state {
                assert_eq!(s.in_flight, 1, "slot {id}: a probe is alone");
            }
            if self.settings.max_in_flight > 0 && !matches!(s.state, State::Probing { .. }) {
                assert!(
                    s.in_flight <= self.settings.max_in_flight,
                    "slot {id}: over cap"
                );
            }
            if s.probe_queued {
                assert!(matches!(s.state, State::Disabled { .. }) && s.in_flight == 0);
            }
        }
        assert_eq!(healthy, self.healthy, "healthy count");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn settings() -> HealthSettings {
        HealthSettings::default()
    }

    fn chosen(sel: Selection) -> SlotId {
        match sel {
            Selection::Chosen(id) => id,
            other => panic!("expected a credential, got {other:?}"),
        }
    }

    fn state(pool: &CredentialPool, id: SlotId, now: Instant) -> &'static str {
        pool.status(now)
            .into_iter()
            .find(|s| s.id == id)
            .unwrap()
            .state
    }

    #[test]
    fn round_robin_is_fair() {
        let t0 = Instant::now();
        let mut pool = CredentialPool::new(3, Policy::RoundRobin, settings());
        let mut counts = [0; 3];
        let mut order = Vec::new();
        for _ in 0..300 {
            let id = chosen(pool.select(t0));
            counts[id.0 as usize] += 1;
            order.push(id.0);
            assert_eq!(pool.finish(id, Outcome::Success, t0), Action::None);
        }
        assert_eq!(counts, [100, 100, 100]);
        assert_eq!(&order[..6], &[0, 1, 2, 0, 1, 2]);
        pool.check_invariants();
    }

    #[test]
    fn rate_limit_cooldown_honours_and_caps_retry_after() {
        let t0 = Instant::now();
        let mut pool = CredentialPool::new(2, Policy::RoundRobin, settings());
        let a = chosen(pool.select(t0));
        let rl = |s| Outcome::RateLimited {
            retry_after: Some(secs(s)),
        };
        assert_eq!(pool.finish(a, rl(10), t0), Action::None);
        // Only the other one until 10 s have passed.
        for _ in 0..5 {
            let b = chosen(pool.select(t0 + secs(9)));
            assert_ne!(a, b);
            pool.finish(b, Outcome::Success, t0 + secs(9));
        }
        let st = &pool.status(t0 + secs(4))[a.0 as usize];
        assert_eq!(
            (st.state, st.cooldown_remaining),
            ("cooling_down", Some(secs(6)))
        );
        assert_eq!(st.last_error, Some("rate_limited"));
        let picks: Vec<_> = (0..2)
            .map(|_| {
                let id = chosen(pool.select(t0 + secs(10)));
                pool.finish(id, Outcome::Success, t0 + secs(10));
                id
            })
            .collect();
        assert!(picks.contains(&a));
        // Both limited, one asking for an hour (capped to 60 s), one with no
        // Retry-After (1 s default).
        let x = chosen(pool.select(t0 + secs(20)));
        let y = chosen(pool.select(t0 + secs(20)));
        pool.finish(x, rl(3600), t0 + secs(20));
        pool.finish(y, Outcome::RateLimited { retry_after: None }, t0 + secs(20));
        assert_eq!(
            pool.select(t0 + secs(20)),
            Selection::Unavailable {
                retry_after: Some(secs(1))
            }
        );
        assert_eq!(chosen(pool.select(t0 + secs(21))), y);
        pool.finish(y, Outcome::Success, t0 + secs(21));
        assert_eq!(chosen(pool.select(t0 + secs(22))), y);
        pool.finish(y, rl(5), t0 + secs(22));
        assert_eq!(
            pool.select(t0 + secs(23)),
            Selection::Unavailable {
                retry_after: Some(secs(4))
            }
        );
        // x is capped at 60 s: still out at 79 s, back at 80 s.
        assert_eq!(state(&pool, x, t0 + secs(79)), "cooling_down");
        assert_eq!(chosen(pool.select(t0 + secs(79))), y);
        pool.finish(y, Outcome::Success, t0 + secs(79));
        let both = [
            chosen(pool.select(t0 + secs(80))),
            chosen(pool.select(t0 + secs(80))),
        ];
        assert!(both.contains(&x) && both.contains(&y));
        pool.check_invariants();
    }

    #[test]
    fn threshold_disable_single_probe_reenable_and_doubling() {
        let t0 = Instant::now();
        let mut pool = CredentialPool::new(2, Policy::RoundRobin, settings());
        let bad = SlotId(0);
        // Three consecutive errors on slot 0 (interleaved with slot 1).
        let mut t = t0;
        let mut errors = 0;
        while errors < 3 {
            let id = chosen(pool.select(t));
            let outcome = if id == bad {
                Outcome::ServerError
            } else {
                Outcome::Success
            };
            let action = pool.finish(id, outcome, t);
            if id == bad {
                errors += 1;
                let expect = if errors == 3 {
                    Action::Disabled
                } else {
                    Action::None
                };
                assert_eq!(action, expect);
            }
            t += Duration::from_millis(1);
        }
        assert_eq!(state(&pool, bad, t), "disabled");
        // Until the probe is due, only slot 1.
        let probe_at = t - Duration::from_millis(1) + secs(30);
        for _ in 0..4 {
            let id = chosen(pool.select(probe_at - Duration::from_millis(1)));
            assert_eq!(id, SlotId(1));
            pool.finish(id, Outcome::Success, t);
        }
        // Due: exactly one request probes it; concurrent ones go elsewhere.
        assert_eq!(chosen(pool.select(probe_at)), bad);
        assert_eq!(state(&pool, bad, probe_at), "probing");
        for _ in 0..3 {
            assert_eq!(chosen(pool.select(probe_at)), SlotId(1));
        }
        pool.check_invariants();
        // The probe fails: next probe after 2 x 30 s, then 4x, 8x, 8x.
        let mut now = probe_at;
        for mult in [2, 4, 8, 8] {
            assert_eq!(pool.finish(bad, Outcome::Network, now), Action::Disabled);
            let next = now + secs(30 * mult);
            assert_eq!(
                pool.status(now)[0].cooldown_remaining,
                Some(secs(30 * mult))
            );
            assert_eq!(
                pool.select(next - Duration::from_millis(1)),
                Selection::Chosen(SlotId(1))
            );
            assert_eq!(chosen(pool.select(next)), bad);
            now = next;
        }
        // A successful probe re-enables it.
        assert_eq!(pool.finish(bad, Outcome::Success, now), Action::None);
        let st = &pool.status(now)[0];
        assert_eq!((st.state, st.consecutive_errors), ("healthy", 0));
        let next_two = [chosen(pool.select(now)), chosen(pool.select(now))];
        assert!(next_two.contains(&bad));
        pool.check_invariants();
    }

    #[test]
    fn probe_waits_for_old_requests() {
        let t0 = Instant::now();
        let s = HealthSettings {
            error_threshold: 1,
            ..settings()
        };
        let mut pool = CredentialPool::new(1, Policy::RoundRobin, s);
        let a = chosen(pool.select(t0));
        let b = chosen(pool.select(t0));
        assert_eq!(pool.finish(a, Outcome::ServerError, t0), Action::Disabled);
        // b is still in flight at probe time: no probe yet.
        assert_eq!(
            pool.select(t0 + secs(31)),
            Selection::Unavailable { retry_after: None }
        );
        // b's late success changes nothing but frees the slot for the probe.
        assert_eq!(
            pool.finish(b, Outcome::Success, t0 + secs(32)),
            Action::None
        );
        assert_eq!(state(&pool, a, t0 + secs(32)), "disabled");
        assert_eq!(chosen(pool.select(t0 + secs(32))), a);
        assert_eq!(
            pool.select(t0 + secs(32)),
            Selection::Unavailable { retry_after: None }
        );
        // A cancelled probe is retried by the next select.
        pool.finish(a, Outcome::Cancelled, t0 + secs(33));
        assert_eq!(chosen(pool.select(t0 + secs(33))), a);
        pool.check_invariants();
    }

    #[test]
    fn auth_refresh_then_disable() {
        let t0 = Instant::now();
        let mut pool = CredentialPool::new(1, Policy::RoundRobin, settings());
        let a = chosen(pool.select(t0));
        let b = chosen(pool.select(t0)); // in flight with the old token
        assert_eq!(pool.finish(a, Outcome::AuthFailed, t0), Action::Refresh);
        assert_eq!(state(&pool, a, t0), "refresh_pending");
        assert_eq!(
            pool.select(t0),
            Selection::Unavailable { retry_after: None }
        );
        // The concurrent old-token 401 does not count as the second one.
        assert_eq!(pool.finish(b, Outcome::AuthFailed, t0), Action::None);
        pool.mark_refreshed(a, t0);
        assert_eq!(chosen(pool.select(t0)), a);
        assert_eq!(pool.finish(a, Outcome::AuthFailed, t0), Action::Disabled);
        assert_eq!(state(&pool, a, t0), "disabled");
        // After a success, a later 401 asks for a refresh again.
        pool.mark_refreshed(a, t0); // disabled + refreshed: probe now
        assert_eq!(chosen(pool.select(t0)), a);
        assert_eq!(pool.finish(a, Outcome::Success, t0), Action::None);
        assert_eq!(chosen(pool.select(t0)), a);
        assert_eq!(pool.finish(a, Outcome::AuthFailed, t0), Action::Refresh);
        // A static key cannot be refreshed: disabled at once.
        let k = pool.add_static();
        assert_eq!(chosen(pool.select(t0)), k);
        assert_eq!(pool.finish(k, Outcome::AuthFailed, t0), Action::Disabled);
        pool.check_invariants();
    }

    #[test]
    fn dead_is_never_selected() {
        let t0 = Instant::now();
        let mut pool = CredentialPool::new(3, Policy::RoundRobin, settings());
        let held = chosen(pool.select(t0));
        pool.mark_dead(SlotId(1), "refresh_token_rejected");
        pool.mark_dead(held, "revoked");
        for i in 0..100 {
            let now = t0 + secs(i * 10);
            let id = chosen(pool.select(now));
            assert_eq!(id, SlotId(2));
            pool.finish(id, Outcome::Success, now);
        }
        // The in-flight request on a dead slot finishes harmlessly.
        assert_eq!(pool.finish(held, Outcome::Success, t0), Action::None);
        let st = pool.status(t0);
        assert_eq!(
            (st[1].state, st[1].last_error),
            ("dead", Some("refresh_token_rejected"))
        );
        assert_eq!(st[0].state, "dead");
        pool.mark_dead(SlotId(2), "x");
        assert_eq!(
            pool.select(t0),
            Selection::Unavailable { retry_after: None }
        );
        pool.check_invariants();
    }

    #[test]
    fn max_in_flight_busy_and_queue_bound() {
        let t0 = Instant::now();
        let s = HealthSettings {
            max_in_flight: 2,
            queue_limit: 3,
            ..settings()
        };
        let mut pool = CredentialPool::new(2, Policy::RoundRobin, s);
        let held: Vec<_> = (0..4).map(|_| chosen(pool.select(t0))).collect();
        assert_eq!(pool.in_flight(SlotId(0)), 2);
        assert_eq!(pool.select(t0), Selection::Busy);
        assert!(pool.try_enqueue() && pool.try_enqueue() && pool.try_enqueue());
        assert!(!pool.try_enqueue());
        assert_eq!(pool.queue_len(), 3);
        pool.finish(held[1], Outcome::Success, t0);
        pool.dequeue();
        assert_eq!(chosen(pool.select(t0)), held[1]);
        assert_eq!(pool.select(t0), Selection::Busy);
        pool.check_invariants();
        // Busy, not Unavailable, even when the other slot is cooling.
        pool.finish(held[0], Outcome::RateLimited { retry_after: None }, t0);
        assert_eq!(pool.select(t0), Selection::Busy);
    }

    #[test]
    fn add_and_remove_while_in_flight() {
        let t0 = Instant::now();
        let mut pool = CredentialPool::new(2, Policy::RoundRobin, settings());
        let a = chosen(pool.select(t0));
        assert!(pool.remove(a));
        assert!(!pool.remove(a));
        assert_eq!(pool.finish(a, Outcome::ServerError, t0), Action::None);
        let c = pool.add();
        assert_eq!(c, SlotId(2)); // ids are not reused
        let mut seen = Vec::new();
        for _ in 0..4 {
            let id = chosen(pool.select(t0));
            seen.push(id);
            pool.finish(id, Outcome::Success, t0);
        }
        assert!(!seen.contains(&a) && seen.contains(&c) && seen.contains(&SlotId(1)));
        assert_eq!(pool.status(t0).len(), 2);
        pool.remove(SlotId(1));
        pool.remove(c);
        assert!(pool.is_empty());
        assert_eq!(
            pool.select(t0),
            Selection::Unavailable { retry_after: None }
        );
        pool.check_invariants();
    }

    #[test]
    fn least_in_flight_picks_least_loaded() {
        let t0 = Instant::now();
        let mut pool = CredentialPool::new(3, Policy::LeastInFlight, settings());
        let first: Vec<_> = (0..3).map(|_| chosen(pool.select(t0))).collect();
        assert_eq!(first, [SlotId(0), SlotId(1), SlotId(2)]);
        let extra = chosen(pool.select(t0)); // all at 1: any, say slot 0
        pool.finish(SlotId(1), Outcome::Success, t0); // slot 1 now at 0
        assert_eq!(chosen(pool.select(t0)), SlotId(1));
        pool.finish(SlotId(2), Outcome::Success, t0);
        assert_eq!(chosen(pool.select(t0)), SlotId(2));
        // Loads: extra's slot 2, the other two 1.
        assert_eq!(pool.in_flight(extra), 2);
        assert_ne!(chosen(pool.select(t0)), extra);
        pool.check_invariants();
    }

    /// A tiny deterministic PRNG for the model test.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_ops(policy: Policy, seed: u64) {
        let t0 = Instant::now();
        let s = HealthSettings {
            error_threshold: 2,
            max_in_flight: 3,
            queue_limit: 4,
            probe_interval: secs(5),
            ..settings()
        };
        let mut pool = CredentialPool::new(5, policy, s);
        let mut rng = XorShift(seed);
        let mut now = t0;
        // Requests in flight, as the test sees them.
        let mut held: Vec<SlotId> = Vec::new();
        let mut dead: Vec<SlotId> = Vec::new();
        // How often each interesting case happened: the test must reach them.
        let (mut probes, mut busy, mut unavailable, mut chosen_n) = (0, 0, 0, 0);
        for _ in 0..10_000 {
            now += Duration::from_millis(rng.below(400));
            match rng.below(100) {
                0..=44 => {
                    let before = pool.status(now);
                    match pool.select(now) {
                        Selection::Chosen(id) => {
                            assert!(!dead.contains(&id), "dead slot selected");
                            let b = before.iter().find(|s| s.id == id).unwrap();
                            match b.state {
                                "healthy" => assert!(b.in_flight < 3, "over max_in_flight"),
                                "disabled" => {
                                    probes += 1;
                                    assert_eq!(b.cooldown_remaining, Some(Duration::ZERO));
                                    assert_eq!(b.in_flight, 0, "probe not alone");
                                    assert_eq!(state(&pool, id, now), "probing");
                                }
                                other => panic!("selected a {other} slot"),
                            }
                            held.push(id);
                            chosen_n += 1;
                        }
                        Selection::Busy => {
                            busy += 1;
                            assert!(before.iter().any(|s| s.state == "healthy"));
                            assert!(before
                                .iter()
                                .all(|s| s.state != "healthy" || s.in_flight >= 3));
                        }
                        Selection::Unavailable { .. } => {
                            unavailable += 1;
                            assert!(before.iter().all(|s| s.state != "healthy"));
                        }
                    }
                }
                45..=84 if !held.is_empty() => {
                    let i = rng.below(held.len() as u64) as usize;
                    let id = held.swap_remove(i);
                    let outcome = match rng.below(20) {
                        0..=11 => Outcome::Success,
                        12 => Outcome::RateLimited {
                            retry_after: Some(secs(rng.below(90))),
                        },
                        13 => Outcome::RateLimited { retry_after: None },
                        14 => Outcome::ServerError,
                        15 => Outcome::Network,
                        16 => Outcome::AuthFailed,
                        _ => Outcome::Cancelled,
                    };
                    if pool.finish(id, outcome, now) == Action::Refresh && rng.below(2) == 0 {
                        pool.mark_refreshed(id, now);
                    }
                }
                85..=87 => {
                    let id = SlotId(rng.below(pool.slots.len() as u64) as u32);
                    pool.mark_refreshed(id, now);
                }
                88 if rng.below(3) == 0 => {
                    let id = SlotId(rng.below(pool.slots.len() as u64) as u32);
                    if pool.slot(id.0).is_some() {
                        pool.mark_dead(id, "test");
                        dead.push(id);
                    }
                }
                89 if pool.len() > 1 => {
                    // Replace a dead credential if there is one, else any.
                    let id = dead.iter().copied().find(|d| pool.slot(d.0).is_some());
                    let id = id.unwrap_or(SlotId(pool.live[rng.below(pool.len() as u64) as usize]));
                    pool.remove(id);
                }
                90 if pool.len() < 8 => {
                    pool.add();
                }
                91..=95 => {
                    if pool.try_enqueue() {
                        assert!(pool.queue_len() <= 4);
                    } else {
                        assert_eq!(pool.queue_len(), 4);
                    }
                }
                96..=99 => pool.dequeue(),
                _ => {}
            }
            pool.check_invariants();
            // In-flight counts equal what the test holds, slot by slot.
            for st in pool.status(now) {
                let mine = held.iter().filter(|&&h| h == st.id).count() as u32;
                assert_eq!(st.in_flight, mine, "slot {:?} in-flight", st.id);
            }
        }
        eprintln!("{policy:?}: chosen {chosen_n}, probes {probes}, busy {busy}, unavailable {unavailable}");
        assert!(chosen_n > 1000 && probes > 10 && busy > 10 && unavailable > 10);
    }

    #[test]
    fn randomized_model_round_robin() {
        for seed in [0x9E37_79B9_7F4A_7C15, 1, 0xDEAD_BEEF] {
            random_ops(Policy::RoundRobin, seed);
        }
    }

    #[test]
    fn randomized_model_least_in_flight() {
        for seed in [0xD1B5_4A32_D192_ED03, 2, 0x1234_5678] {
            random_ops(Policy::LeastInFlight, seed);
        }
    }
}
