//! Provider credentials at run time: the per-shard cache the request path
//! reads, and the control plane that owns the credential files.
//!
//! Each shard keeps, per provider, a [`CredentialPool`] (selection and
//! health, from `routing`) and the credentials' rendered auth headers. The
//! request path picks and returns credentials there: no lock, no file I/O.
//!
//! One control task, on shard 0, owns the OAuth credential files: it loads
//! changes found by the file watcher, refreshes access tokens ahead of
//! expiry and when a shard reports a 401 (once per credential however many
//! requests saw it: single-flight by token version), writes refreshed
//! files back atomically, and sends every change to all shards. Shards and
//! the control task talk through [`Mailbox`]es: a flag checked every few
//! milliseconds by a background task and a short-held mutex, so neither
//! side's request path waits on the other.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Config, Provider, ProviderProtocol, Secret, SelectionPolicy};
use crate::credentials::{
    self, parse_token_response, refresh_form, write_back, CredentialIndex, OAuthCredential,
    OAuthKind, RefreshError, ScanReport, Watcher,
};
use crate::http::{write, Method};
use crate::protocol::json::write_string;
use crate::routing::{Action, CredentialPool, HealthSettings, Outcome, Policy, Selection, SlotId};
use crate::runtime::net::{BellListener, Doorbell};
use crate::upstream::{exchange, BodyChunk, Pool, PoolKey, UpstreamRequest};

/// How often a mailbox is looked at when its doorbell could not be
/// registered (normally the bell wakes the reader when mail arrives).
const MAILBOX_POLL: Duration = Duration::from_millis(5);
/// How often a shard publishes its view for the admin endpoint when
/// nothing changed.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// How often the control task checks expiries and the file watchers.
const CONTROL_TICK: Duration = Duration::from_millis(200);
/// How long a request waits for a refresh of the credential it picked
/// before trying another.
const REFRESH_WAIT: Duration = Duration::from_secs(15);
/// After a failed refresh (the token endpoint down), the next try waits
/// this long, doubled per failure up to [`REFRESH_RETRY_MAX`].
const REFRESH_RETRY: Duration = Duration::from_secs(1);
const REFRESH_RETRY_MAX: Duration = Duration::from_secs(60);
/// Access tokens this close to expiry count as expired on the request
/// path (clock skew). Small: the control task refreshes well before, at
/// the configured margin.
const EXPIRY_SKEW_MS: u64 = 1_000;
/// A credential is refreshed ahead of expiry at most this often, so a
/// token endpoint handing out short-lived tokens cannot make the control
/// task spin.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// A credential's identity on every shard: its provider and a number the
/// control plane assigns (also its index in the access log's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CredKey {
    pub provider: u16,
    pub id: u16,
}

/// What a credential is, as the admin endpoint shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredKind {
    ApiKey,
    OAuth,
    /// The provider has no credential: requests go without one.
    None,
}

impl CredKind {
    fn as_str(self) -> &'static str {
        match self {
            CredKind::ApiKey => "api_key",
            CredKind::OAuth => "oauth",
            CredKind::None => "none",
        }
    }
}

/// A credential change sent to the shards.
#[derive(Clone, Debug)]
enum Update {
    /// A new credential, or a new token for a known one.
    Upsert {
        key: CredKey,
        kind: CredKind,
        /// The rendered auth header line(s), `name: value\r\n`.
        auth: Arc<[u8]>,
        expiry_ms: Option<u64>,
        version: u64,
    },
    Remove(CredKey),
    /// The refresh token was rejected: never use it again.
    Dead(CredKey),
    /// A refresh attempt failed for now; waiting requests move on.
    RefreshFailed(CredKey),
}

/// A message from a shard to the control task.
#[derive(Clone, Copy, Debug)]
enum Control {
    /// The credential's token (at `version`) is expired or was refused.
    Refresh { key: CredKey, version: u64 },
}

/// A lock-light queue between threads: producers push under a short mutex
/// and raise a flag; the consumer checks the flag (one atomic load) on its
/// poll and takes everything at once.
struct Mailbox<T> {
    pending: AtomicBool,
    items: Mutex<Vec<T>>,
    /// Rung on every push, so the reading task sleeps until there is mail.
    bell: Arc<Doorbell>,
}

impl<T> Mailbox<T> {
    fn new() -> Self {
        Mailbox {
            pending: AtomicBool::new(false),
            items: Mutex::new(Vec::new()),
            bell: Arc::new(Doorbell::new()),
        }
    }

    fn push(&self, item: T) {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(item);
        self.pending.store(true, Ordering::Release);
        self.bell.ring();
    }

    /// Waits up to `tick` for mail: the bell, or the tick for the reader's
    /// own periodic work (and as a fallback if the bell cannot be heard).
    async fn wait(&self, listener: Option<&BellListener>, tick: Duration) {
        match listener {
            Some(l) => {
                crate::runtime::timeout(tick, l.rung()).await;
            }
            None => crate::runtime::sleep(tick.min(MAILBOX_POLL)).await,
        }
    }

    fn take(&self) -> Vec<T> {
        if !self.pending.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut *self.items.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One credential as the control plane knows it. The token never leaves
/// this struct but in a rendered auth header.
struct ControlCred {
    key: CredKey,
    kind: CredKind,
    label: String,
    token: Secret,
    expiry_ms: Option<u64>,
    version: u64,
    file: Option<OAuthCredential>,
    refreshing: bool,
    dead: Option<String>,
    refreshes: u64,
    last_refresh_error: Option<String>,
    next_refresh_try: Option<Instant>,
    last_refresh: Option<Instant>,
    /// A shard asked for a refresh (a 401): retried until one succeeds,
    /// whatever the expiry says.
    wanted: bool,
    /// Refresh failures in a row (for the retry backoff).
    refresh_failures: u32,
}

/// The control task's credentials and each OAuth provider's first scan.
type ControlState = (Vec<ControlCred>, Vec<(usize, ScanReport)>);

/// What the admin endpoint shows of one credential, per shard.
#[derive(Clone, Debug, Default)]
struct ShardRow {
    state: &'static str,
    in_flight: u64,
    requests: u64,
    errors: u64,
    consecutive_errors: u64,
    cooldown_ms: Option<u64>,
}

/// The state all shards share: mailboxes and what the admin endpoint reads.
pub struct CredentialHub {
    shards: Vec<Mailbox<Update>>,
    control: Mailbox<Control>,
    /// Each shard's pool status, published once a second.
    status: Vec<Mutex<HashMap<CredKey, ShardRow>>>,
    /// The control plane's view, for the admin endpoint.
    control_view: Mutex<Vec<ControlRow>>,
    /// The initial credentials, handed to each shard at its start.
    initial: Vec<Update>,
    /// Credential numbers: the next one to assign per provider.
    next_id: Vec<AtomicU64>,
    /// The control task's state, moved onto shard 0 when it starts: the
    /// credentials, and each OAuth provider's first scan (for its index).
    control_state: Mutex<Option<ControlState>>,
    /// Problems found loading credential files at start (path: reason).
    pub load_errors: Vec<String>,
    /// Credentials known at start -> their index in the access log's names.
    log_index: HashMap<CredKey, u16>,
}

#[derive(Clone, Debug)]
struct ControlRow {
    key: CredKey,
    provider: String,
    kind: CredKind,
    label: String,
    expiry_ms: Option<u64>,
    path: Option<PathBuf>,
    dead: Option<String>,
    refreshes: u64,
    last_refresh_error: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Renders the header that carries `token` to a provider of `protocol`.
/// OAuth access tokens are bearer tokens whatever the protocol.
fn auth_header(protocol: ProviderProtocol, kind: CredKind, token: &str) -> Arc<[u8]> {
    let mut out = Vec::with_capacity(token.len() + 32);
    match (kind, protocol) {
        (CredKind::None, _) => {}
        (CredKind::ApiKey, ProviderProtocol::Anthropic) => {
            write::header(&mut out, b"x-api-key", token.as_bytes())
        }
        (CredKind::ApiKey, ProviderProtocol::Gemini) => {
            write::header(&mut out, b"x-goog-api-key", token.as_bytes())
        }
        _ => {
            let mut value = b"Bearer ".to_vec();
            value.extend_from_slice(token.as_bytes());
            write::header(&mut out, b"authorization", &value);
        }
    }
    out.into()
}

fn oauth_kind(name: &str) -> OAuthKind {
    match name {
        "qwen-code" => OAuthKind::QwenCode,
        _ => OAuthKind::GeminiCli,
    }
}

impl CredentialHub {
    /// Loads every provider's credentials: static keys, and the OAuth
    /// files (scanned in parallel; bad files are reported and skipped).
    pub fn load(config: &Config, shards: usize) -> Arc<CredentialHub> {
        let mut creds = Vec::new();
        let mut reports = Vec::new();
        let mut load_errors = Vec::new();
        let mut next_ids = Vec::new();
        for (pi, provider) in config.providers.iter().enumerate() {
            let mut id: u16 = 0;
            let mut push = |kind, label: String, token: Secret, expiry_ms, file| {
                creds.push(ControlCred {
                    key: CredKey {
                        provider: pi as u16,
                        id,
                    },
                    kind,
                    label,
                    token,
                    expiry_ms,
                    version: 1,
                    file,
                    refreshing: false,
                    dead: None,
                    refreshes: 0,
                    last_refresh_error: None,
                    next_refresh_try: None,
                    last_refresh: None,
                    wanted: false,
                    refresh_failures: 0,
                });
                id = id.wrapping_add(1);
            };
            for (i, key) in provider.api_keys.iter().enumerate() {
                push(
                    CredKind::ApiKey,
                    format!("key-{}", i + 1),
                    key.clone(),
                    None,
                    None,
                );
            }
            if let Some(oauth) = &provider.oauth {
                let report =
                    credentials::scan(&oauth.paths, oauth_kind(&oauth.kind), oauth.max_open_files);
                for (path, why) in &report.errors {
                    load_errors.push(format!(
                        "provider \"{}\": {}: {why}",
                        provider.name,
                        path.display()
                    ));
                }
                for (dup, kept) in &report.duplicates {
                    load_errors.push(format!(
                        "provider \"{}\": {} holds the same refresh token as {}; skipped",
                        provider.name,
                        dup.display(),
                        kept.display()
                    ));
                }
                for file in &report.credentials {
                    let label = format!("oauth:{}", file.fingerprint());
                    push(
                        CredKind::OAuth,
                        label,
                        Secret::new(file.access_token.clone()),
                        file.expiry_ms,
                        Some(file.clone()),
                    );
                }
                reports.push((pi, report));
            }
            if provider.api_keys.is_empty() && provider.oauth.is_none() {
                push(
                    CredKind::None,
                    "none".to_string(),
                    Secret::new(String::new()),
                    None,
                    None,
                );
            }
            next_ids.push(AtomicU64::new(id as u64));
        }
        let initial = creds
            .iter()
            .map(|c| Update::Upsert {
                key: c.key,
                kind: c.kind,
                auth: auth_header(
                    config.providers[c.key.provider as usize].protocol,
                    c.kind,
                    c.token.expose(),
                ),
                expiry_ms: c.expiry_ms,
                version: c.version,
            })
            .collect();
        let hub = CredentialHub {
            shards: (0..shards.max(1)).map(|_| Mailbox::new()).collect(),
            control: Mailbox::new(),
            status: (0..shards.max(1))
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            control_view: Mutex::new(Vec::new()),
            initial,
            next_id: next_ids,
            control_state: Mutex::new(None),
            load_errors,
            log_index: creds
                .iter()
                .enumerate()
                .map(|(i, c)| (c.key, i as u16))
                .collect(),
        };
        hub.publish_control_view(config, &creds);
        *hub.control_state.lock().unwrap_or_else(|e| e.into_inner()) = Some((creds, reports));
        Arc::new(hub)
    }

    /// The access log's credential names: `provider/label` of every
    /// credential known at start, in the order of [`Self::log_index`].
    pub fn log_names(&self) -> Vec<String> {
        self.control_view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|r| format!("{}/{}", r.provider, r.label))
            .collect()
    }

    /// A credential's index in [`Self::log_names`], if it was known at start.
    pub fn log_index(&self, key: CredKey) -> Option<u16> {
        self.log_index.get(&key).copied()
    }

    fn publish_control_view(&self, config: &Config, creds: &[ControlCred]) {
        let rows = creds
            .iter()
            .map(|c| ControlRow {
                key: c.key,
                provider: config.providers[c.key.provider as usize].name.clone(),
                kind: c.kind,
                label: c.label.clone(),
                expiry_ms: c.expiry_ms,
                path: c.file.as_ref().map(|f| f.path.clone()),
                dead: c.dead.clone(),
                refreshes: c.refreshes,
                last_refresh_error: c.last_refresh_error.clone(),
            })
            .collect();
        *self.control_view.lock().unwrap_or_else(|e| e.into_inner()) = rows;
    }

    fn broadcast(&self, update: Update) {
        for m in &self.shards {
            m.push(update.clone());
        }
    }

    /// `GET /admin/credentials`: every credential with its state on each
    /// shard, summed counts, and what the control plane knows. Never a
    /// token.
    pub fn admin_json(&self) -> String {
        let rows = self
            .control_view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let shard_rows: Vec<HashMap<CredKey, ShardRow>> = self
            .status
            .iter()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect();
        let now = now_ms();
        let mut out = b"{\"credentials\":[".to_vec();
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"id\":");
            write_string(&mut out, &row.label);
            out.extend_from_slice(b",\"provider\":");
            write_string(&mut out, &row.provider);
            out.extend_from_slice(b",\"kind\":");
            write_string(&mut out, row.kind.as_str());
            let per_shard: Vec<&ShardRow> =
                shard_rows.iter().filter_map(|m| m.get(&row.key)).collect();
            let state = match &row.dead {
                Some(_) => "dead",
                None => worst_state(per_shard.iter().map(|r| r.state)),
            };
            out.extend_from_slice(b",\"state\":");
            write_string(&mut out, state);
            let sum = |f: fn(&ShardRow) -> u64| per_shard.iter().map(|r| f(r)).sum::<u64>();
            for (name, value) in [
                ("in_flight", sum(|r| r.in_flight)),
                ("requests", sum(|r| r.requests)),
                ("errors", sum(|r| r.errors)),
                (
                    "consecutive_errors",
                    per_shard
                        .iter()
                        .map(|r| r.consecutive_errors)
                        .max()
                        .unwrap_or(0),
                ),
                ("refreshes", row.refreshes),
            ] {
                out.extend_from_slice(b",\"");
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\":");
                out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
            }
            out.extend_from_slice(b",\"cooldown_ms\":");
            match per_shard.iter().filter_map(|r| r.cooldown_ms).max() {
                Some(ms) => out.extend_from_slice(itoa::Buffer::new().format(ms).as_bytes()),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"token_expires_in_ms\":");
            match row.expiry_ms {
                Some(e) => out.extend_from_slice(
                    itoa::Buffer::new().format(e as i64 - now as i64).as_bytes(),
                ),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"path\":");
            match &row.path {
                Some(p) => write_string(&mut out, &p.display().to_string()),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"error\":");
            match row.dead.as_ref().or(row.last_refresh_error.as_ref()) {
                Some(e) => write_string(&mut out, e),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"shards\":[");
            for (s, m) in shard_rows.iter().enumerate() {
                if s > 0 {
                    out.push(b',');
                }
                match m.get(&row.key) {
                    Some(r) => write_string(&mut out, r.state),
                    None => out.extend_from_slice(b"null"),
                }
            }
            out.extend_from_slice(b"]}");
        }
        out.extend_from_slice(b"]}");
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The most alarming of the shards' states for one credential.
fn worst_state<'a>(states: impl Iterator<Item = &'a str>) -> &'a str {
    const ORDER: [&str; 6] = [
        "dead",
        "disabled",
        "refresh_pending",
        "cooling_down",
        "probing",
        "healthy",
    ];
    let mut best = ORDER.len();
    let mut seen = None;
    for s in states {
        let rank = ORDER
            .iter()
            .position(|o| *o == s)
            .unwrap_or(ORDER.len() - 1);
        if rank < best {
            best = rank;
            seen = Some(s);
        }
    }
    seen.unwrap_or("unknown")
}

/// A credential as one shard holds it.
struct Slot {
    key: CredKey,
    kind: CredKind,
    auth: Arc<[u8]>,
    expiry_ms: Option<u64>,
    version: u64,
    /// This shard asked the control task for a refresh of `version`.
    refresh_asked: bool,
}

/// One provider's credentials on one shard.
struct ProviderCreds {
    pool: CredentialPool,
    slots: HashMap<SlotId, Slot>,
    by_key: HashMap<CredKey, SlotId>,
}

/// A credential lent to one request; give it back with
/// [`ShardCredentials::release`].
pub struct Lease {
    pub provider: usize,
    slot: SlotId,
    pub key: CredKey,
    /// The auth header line(s) to send.
    pub auth: Arc<[u8]>,
    /// The token's version: a refreshed token is a new credential to try.
    pub version: u64,
}

/// Why no credential could be lent.
#[derive(Debug)]
pub enum NoCredential {
    /// Every credential is cooling down, disabled or dead.
    Unavailable { retry_after: Option<Duration> },
    /// Every usable credential is at its concurrency cap and the wait
    /// queue is full, or the wait timed out.
    Busy,
}

/// The credential cache of one shard.
pub struct ShardCredentials {
    shard: usize,
    hub: Arc<CredentialHub>,
    providers: RefCell<Vec<ProviderCreds>>,
    /// Notified whenever a credential is returned or updated: requests
    /// queued for a credential, or waiting for a refresh, look again.
    changed: event_listener::Event,
    queue_timeout: Vec<Duration>,
    /// Bumped on every applied update (tests and debugging).
    updates: Cell<u64>,
}

impl ShardCredentials {
    /// The cache for `shard`, filled with the credentials known at start.
    pub fn new(config: &Config, hub: Arc<CredentialHub>, shard: usize) -> Rc<ShardCredentials> {
        let providers = config
            .providers
            .iter()
            .map(|p: &Provider| ProviderCreds {
                pool: CredentialPool::new(
                    0,
                    match p.pool.selection {
                        SelectionPolicy::RoundRobin => Policy::RoundRobin,
                        SelectionPolicy::LeastInFlight => Policy::LeastInFlight,
                    },
                    HealthSettings {
                        error_threshold: p.pool.error_threshold,
                        cooldown_default: p.pool.cooldown_default,
                        cooldown_max: p.pool.cooldown_max,
                        probe_interval: p.pool.probe_interval,
                        max_in_flight: p.pool.max_in_flight,
                        queue_limit: u32::try_from(p.pool.queue_limit).unwrap_or(u32::MAX),
                    },
                ),
                slots: HashMap::new(),
                by_key: HashMap::new(),
            })
            .collect();
        let this = Rc::new(ShardCredentials {
            shard,
            queue_timeout: config
                .providers
                .iter()
                .map(|p| p.pool.queue_timeout)
                .collect(),
            hub: hub.clone(),
            providers: RefCell::new(providers),
            changed: event_listener::Event::new(),
            updates: Cell::new(0),
        });
        for u in hub.initial.clone() {
            this.apply(u);
        }
        // Apply updates as they come, and publish this shard's view for
        // the admin endpoint.
        let weak = Rc::downgrade(&this);
        let hub_for_task = hub.clone();
        let shard_index = this.shard;
        glommio::spawn_local(async move {
            let mailbox = &hub_for_task.shards[shard_index];
            let listener = mailbox.bell.listen().ok();
            let mut last_publish = Instant::now();
            loop {
                mailbox.wait(listener.as_ref(), PUBLISH_EVERY).await;
                let Some(this) = weak.upgrade() else { return };
                let updates = mailbox.take();
                let any = !updates.is_empty();
                for u in updates {
                    this.apply(u);
                }
                if any {
                    this.changed.notify(usize::MAX);
                }
                if last_publish.elapsed() >= PUBLISH_EVERY || any {
                    last_publish = Instant::now();
                    this.publish();
                }
            }
        })
        .detach();
        this.publish();
        this
    }

    fn apply(&self, update: Update) {
        self.updates.set(self.updates.get() + 1);
        let mut providers = self.providers.borrow_mut();
        match update {
            Update::Upsert {
                key,
                kind,
                auth,
                expiry_ms,
                version,
            } => {
                let p = &mut providers[key.provider as usize];
                match p.by_key.get(&key) {
                    Some(&slot) => {
                        if let Some(s) = p.slots.get_mut(&slot) {
                            if version > s.version {
                                s.auth = auth;
                                s.expiry_ms = expiry_ms;
                                s.version = version;
                                s.refresh_asked = false;
                                p.pool.mark_refreshed(slot, Instant::now());
                            }
                        }
                    }
                    None => {
                        // Only OAuth tokens can be refreshed: a refused
                        // static key is disabled at once.
                        let slot = if kind == CredKind::OAuth {
                            p.pool.add()
                        } else {
                            p.pool.add_static()
                        };
                        p.by_key.insert(key, slot);
                        p.slots.insert(
                            slot,
                            Slot {
                                key,
                                kind,
                                auth,
                                expiry_ms,
                                version,
                                refresh_asked: false,
                            },
                        );
                    }
                }
            }
            Update::Remove(key) => {
                let p = &mut providers[key.provider as usize];
                if let Some(slot) = p.by_key.remove(&key) {
                    p.slots.remove(&slot);
                    p.pool.remove(slot);
                }
            }
            Update::Dead(key) => {
                let p = &mut providers[key.provider as usize];
                if let Some(&slot) = p.by_key.get(&key) {
                    p.pool.mark_dead(slot, "refresh token rejected");
                }
            }
            Update::RefreshFailed(key) => {
                let p = &mut providers[key.provider as usize];
                if let Some(&slot) = p.by_key.get(&key) {
                    if let Some(s) = p.slots.get_mut(&slot) {
                        s.refresh_asked = false;
                    }
                }
            }
        }
    }

    fn publish(&self) {
        let providers = self.providers.borrow();
        let now = Instant::now();
        let mut rows = HashMap::new();
        for p in providers.iter() {
            for st in p.pool.status(now) {
                if let Some(slot) = p.slots.get(&st.id) {
                    rows.insert(
                        slot.key,
                        ShardRow {
                            state: st.state,
                            in_flight: st.in_flight as u64,
                            requests: st.requests_total,
                            errors: st.errors_total,
                            consecutive_errors: st.consecutive_errors as u64,
                            cooldown_ms: st.cooldown_remaining.map(|d| d.as_millis() as u64),
                        },
                    );
                }
            }
        }
        *self.hub.status[self.shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = rows;
    }

    /// Lends a credential of `provider`: waits (bounded) when every usable
    /// one is at its concurrency cap, and when the chosen OAuth token is
    /// expired, asks the control task for a refresh and waits for it.
    pub async fn acquire(&self, provider: usize) -> Result<Lease, NoCredential> {
        let deadline = Instant::now() + self.queue_timeout[provider].max(REFRESH_WAIT);
        let mut queued = false;
        loop {
            let listener = self.changed.listen();
            let now = Instant::now();
            let picked = {
                let mut providers = self.providers.borrow_mut();
                let p = &mut providers[provider];
                match p.pool.select(now) {
                    Selection::Chosen(slot) => {
                        if queued {
                            p.pool.dequeue();
                            queued = false;
                        }
                        let s = &p.slots[&slot];
                        let expired = s.kind == CredKind::OAuth
                            && s.expiry_ms.is_some_and(|e| e <= now_ms() + EXPIRY_SKEW_MS);
                        if expired {
                            // Give it back unused and wait for the refresh.
                            p.pool.finish(slot, Outcome::Cancelled, now);
                            let key = s.key;
                            let version = s.version;
                            let asked = s.refresh_asked;
                            if let Some(s) = p.slots.get_mut(&slot) {
                                s.refresh_asked = true;
                            }
                            if !asked {
                                self.hub.control.push(Control::Refresh { key, version });
                            }
                            None
                        } else {
                            Some(Ok(Lease {
                                provider,
                                slot,
                                key: s.key,
                                auth: s.auth.clone(),
                                version: s.version,
                            }))
                        }
                    }
                    Selection::Busy => {
                        if !queued {
                            if !p.pool.try_enqueue() {
                                return Err(NoCredential::Busy);
                            }
                            queued = true;
                        }
                        None
                    }
                    Selection::Unavailable { retry_after } => {
                        // A token being refreshed will be back shortly:
                        // wait for it rather than fail the request.
                        if !p.slots.values().any(|s| s.refresh_asked) {
                            if queued {
                                p.pool.dequeue();
                            }
                            return Err(NoCredential::Unavailable { retry_after });
                        }
                        None
                    }
                }
            };
            if let Some(lease) = picked {
                return lease;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || crate::runtime::timeout(left, listener).await.is_none() {
                if queued {
                    self.providers.borrow_mut()[provider].pool.dequeue();
                }
                return Err(NoCredential::Busy);
            }
        }
    }

    /// The state shared with the other shards.
    pub fn hub(&self) -> &CredentialHub {
        &self.hub
    }

    /// Whether `provider` has OAuth credentials (a refused one is refreshed
    /// and worth another try).
    pub fn refreshable(&self, provider: usize) -> bool {
        self.providers.borrow()[provider]
            .slots
            .values()
            .any(|s| s.kind == CredKind::OAuth)
    }

    /// How many credentials `provider` has on this shard (dead ones too).
    pub fn count(&self, provider: usize) -> usize {
        self.providers.borrow()[provider].slots.len()
    }

    /// Returns a lease with how the request went. A 401/403 on an OAuth
    /// credential asks the control task for a refresh (once per token
    /// version on this shard); the caller may retry with another
    /// credential at once.
    pub fn release(&self, lease: Lease, outcome: Outcome) -> Action {
        let now = Instant::now();
        let action = {
            let mut providers = self.providers.borrow_mut();
            let p = &mut providers[lease.provider];
            // A refusal of a token that was replaced meanwhile says nothing
            // about the new one.
            let stale = p
                .slots
                .get(&lease.slot)
                .is_some_and(|s| s.version != lease.version);
            let outcome = match outcome {
                Outcome::AuthFailed if stale => Outcome::Cancelled,
                o => o,
            };
            let action = p.pool.finish(lease.slot, outcome, now);
            if action == Action::Refresh {
                if let Some(s) = p.slots.get_mut(&lease.slot) {
                    if !s.refresh_asked {
                        s.refresh_asked = true;
                        self.hub.control.push(Control::Refresh {
                            key: s.key,
                            version: lease.version,
                        });
                    }
                }
            }
            action
        };
        self.changed.notify(usize::MAX);
        action
    }
}

/// Starts the control task on this shard (call on exactly one shard).
pub fn start_control(config: Arc<Config>, hub: Arc<CredentialHub>, pool: Rc<Pool>) {
    let Some((creds, reports)) = hub
        .control_state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    else {
        return;
    };
    let state = Rc::new(RefCell::new(creds));
    // One watcher and index per provider with OAuth files. The first scan
    // ran before the watcher existed: whatever changed in between is
    // found by checking every file once against the index (unchanged ones
    // are skipped by their metadata).
    let mut watched: Vec<(usize, Watcher, CredentialIndex)> = Vec::new();
    for (pi, report) in reports {
        let Some(o) = &config.providers[pi].oauth else {
            continue;
        };
        let watcher = Watcher::new(&o.paths, o.poll_interval);
        let mut index = CredentialIndex::from_report(&report);
        let (files, _) = credentials::expand(&o.paths);
        let changes = index.apply_changes(&files, oauth_kind(&o.kind), o.max_open_files);
        apply_file_changes(&config, &hub, &state, pi, changes);
        watched.push((pi, watcher, index));
    }
    glommio::spawn_local(async move {
        let listener = hub.control.bell.listen().ok();
        let mut last_tick = Instant::now() - CONTROL_TICK;
        loop {
            let next_tick = CONTROL_TICK.saturating_sub(last_tick.elapsed());
            hub.control.wait(listener.as_ref(), next_tick).await;
            for msg in hub.control.take() {
                let Control::Refresh { key, version } = msg;
                let current = state
                    .borrow()
                    .iter()
                    .find(|c| c.key == key)
                    .map(|c| c.version);
                if current == Some(version) {
                    if let Some(c) = state.borrow_mut().iter_mut().find(|c| c.key == key) {
                        c.wanted = true;
                    }
                    start_refresh(&config, &hub, &state, &pool, key);
                } else if current.is_some() {
                    // Already refreshed since the shard looked: resend the
                    // current token so the shard stops waiting.
                    resend(&config, &hub, &state, key);
                }
            }
            if last_tick.elapsed() < CONTROL_TICK {
                continue;
            }
            last_tick = Instant::now();
            // Proactive refresh ahead of expiry.
            let due: Vec<CredKey> = {
                let now = now_ms();
                let instant = Instant::now();
                state
                    .borrow()
                    .iter()
                    .filter(|c| c.kind == CredKind::OAuth && c.dead.is_none() && !c.refreshing)
                    .filter(|c| c.next_refresh_try.is_none_or(|t| t <= instant))
                    .filter(|c| {
                        c.last_refresh
                            .is_none_or(|t| instant - t >= MIN_REFRESH_INTERVAL)
                    })
                    .filter(|c| {
                        let margin = config.providers[c.key.provider as usize]
                            .oauth
                            .as_ref()
                            .map_or(0, |o| o.refresh_margin.as_millis() as u64);
                        c.wanted || c.expiry_ms.is_some_and(|e| e <= now + margin)
                    })
                    .map(|c| c.key)
                    .collect()
            };
            for key in due {
                start_refresh(&config, &hub, &state, &pool, key);
            }
            // Files that changed on disk.
            for (pi, watcher, index) in watched.iter_mut() {
                let changed = watcher.poll_changes();
                if changed.is_empty() {
                    continue;
                }
                let Some(o) = &config.providers[*pi].oauth else {
                    continue;
                };
                let changes = index.apply_changes(&changed, oauth_kind(&o.kind), o.max_open_files);
                for (path, why) in &changes.errors {
                    eprintln!(
                        "shardgate: provider \"{}\": credential file {}: {why}; skipped",
                        config.providers[*pi].name,
                        path.display()
                    );
                }
                apply_file_changes(&config, &hub, &state, *pi, changes);
            }
            hub.publish_control_view(&config, &state.borrow());
        }
    })
    .detach();
}

/// Sends a credential's current token to every shard again.
fn resend(config: &Config, hub: &CredentialHub, state: &RefCell<Vec<ControlCred>>, key: CredKey) {
    let st = state.borrow();
    if let Some(c) = st.iter().find(|c| c.key == key) {
        let update = if c.dead.is_some() {
            Update::Dead(key)
        } else if c.refreshing {
            return;
        } else {
            upsert_of(config, c)
        };
        hub.broadcast(update);
    }
}

fn upsert_of(config: &Config, c: &ControlCred) -> Update {
    Update::Upsert {
        key: c.key,
        kind: c.kind,
        auth: auth_header(
            config.providers[c.key.provider as usize].protocol,
            c.kind,
            c.token.expose(),
        ),
        expiry_ms: c.expiry_ms,
        version: c.version,
    }
}

fn apply_file_changes(
    config: &Config,
    hub: &CredentialHub,
    state: &RefCell<Vec<ControlCred>>,
    provider: usize,
    changes: credentials::Changes,
) {
    let mut st = state.borrow_mut();
    let mut changes = changes;
    // A rotated refresh token changes a credential's fingerprint: the
    // credential keeps its identity (and its shards' health state).
    for (old, new) in &changes.rekeyed {
        let Some(pos) = changes.updated.iter().position(|f| f.fingerprint() == *new) else {
            continue;
        };
        if let Some(c) = st.iter_mut().find(|c| {
            c.key.provider as usize == provider
                && c.file.as_ref().is_some_and(|f| f.fingerprint() == *old)
        }) {
            let file = changes.updated.remove(pos);
            if c.token.expose() != file.access_token || c.expiry_ms != file.expiry_ms {
                c.token = Secret::new(file.access_token.clone());
                c.expiry_ms = file.expiry_ms;
                c.version += 1;
                c.dead = None;
                c.file = Some(file);
                hub.broadcast(upsert_of(config, c));
            } else {
                c.file = Some(file);
            }
        }
    }
    for fp in &changes.removed {
        if let Some(i) = st.iter().position(|c| {
            c.key.provider as usize == provider
                && c.file.as_ref().is_some_and(|f| f.fingerprint() == *fp)
        }) {
            let c = st.remove(i);
            hub.broadcast(Update::Remove(c.key));
        }
    }
    for file in changes.added.into_iter().chain(changes.updated) {
        let fp = file.fingerprint();
        match st.iter_mut().find(|c| {
            c.key.provider as usize == provider
                && c.file.as_ref().is_some_and(|f| f.fingerprint() == fp)
        }) {
            Some(c) => {
                // Our own write-back reads back the token we already hold.
                if c.token.expose() != file.access_token || c.expiry_ms != file.expiry_ms {
                    c.token = Secret::new(file.access_token.clone());
                    c.expiry_ms = file.expiry_ms;
                    c.version += 1;
                    c.dead = None;
                    c.file = Some(file);
                    hub.broadcast(upsert_of(config, c));
                } else {
                    c.file = Some(file);
                }
            }
            None => {
                let id = hub.next_id[provider].fetch_add(1, Ordering::Relaxed) as u16;
                let c = ControlCred {
                    key: CredKey {
                        provider: provider as u16,
                        id,
                    },
                    kind: CredKind::OAuth,
                    label: format!("oauth:{fp}"),
                    token: Secret::new(file.access_token.clone()),
                    expiry_ms: file.expiry_ms,
                    version: 1,
                    file: Some(file),
                    refreshing: false,
                    dead: None,
                    refreshes: 0,
                    last_refresh_error: None,
                    next_refresh_try: None,
                    last_refresh: None,
                    wanted: false,
                    refresh_failures: 0,
                };
                hub.broadcast(upsert_of(config, &c));
                st.push(c);
            }
        }
    }
}

/// Refreshes one credential's access token, unless a refresh is already
/// running: the single flight.
fn start_refresh(
    config: &Arc<Config>,
    hub: &Arc<CredentialHub>,
    state: &Rc<RefCell<Vec<ControlCred>>>,
    pool: &Rc<Pool>,
    key: CredKey,
) {
    let (file, provider) = {
        let mut st = state.borrow_mut();
        let Some(c) = st.iter_mut().find(|c| c.key == key) else {
            return;
        };
        if c.refreshing || c.dead.is_some() || c.kind != CredKind::OAuth {
            return;
        }
        let Some(file) = c.file.clone() else { return };
        c.refreshing = true;
        (file, key.provider as usize)
    };
    let config = config.clone();
    let hub = hub.clone();
    let state = state.clone();
    let pool = pool.clone();
    glommio::spawn_local(async move {
        let result = refresh_once(&config, &pool, provider, &file).await;
        let mut st = state.borrow_mut();
        let Some(c) = st.iter_mut().find(|c| c.key == key) else { return };
        c.refreshing = false;
        let name = &config.providers[provider].name;
        match result {
            Ok(updated) => {
                c.token = Secret::new(updated.access_token.clone());
                c.expiry_ms = updated.expiry_ms;
                c.file = Some(updated);
                c.version += 1;
                c.refreshes += 1;
                c.last_refresh_error = None;
                c.next_refresh_try = None;
                c.last_refresh = Some(Instant::now());
                c.wanted = false;
                c.refresh_failures = 0;
                hub.broadcast(upsert_of(&config, c));
            }
            Err(RefreshFailure::Rejected(why)) => {
                eprintln!(
                    "shardgate: provider \"{name}\": credential {} ({}): the token endpoint rejected its refresh token ({why}); the credential is disabled until the file is replaced",
                    c.label,
                    file.path.display()
                );
                c.dead = Some(format!("refresh token rejected: {why}"));
                hub.broadcast(Update::Dead(key));
            }
            Err(RefreshFailure::Transient(why)) => {
                let wait = REFRESH_RETRY
                    .saturating_mul(1 << c.refresh_failures.min(6))
                    .min(REFRESH_RETRY_MAX);
                c.refresh_failures += 1;
                eprintln!(
                    "shardgate: provider \"{name}\": credential {}: refresh failed ({why}); retrying in {} ms",
                    c.label,
                    wait.as_millis()
                );
                c.last_refresh_error = Some(why);
                c.next_refresh_try = Some(Instant::now() + wait);
                hub.broadcast(Update::RefreshFailed(key));
            }
        }
    })
    .detach();
}

enum RefreshFailure {
    Rejected(String),
    Transient(String),
}

/// One refresh: POST the refresh token to the token endpoint, then write
/// the file back (on the blocking pool: file I/O never runs on a shard).
async fn refresh_once(
    config: &Config,
    pool: &Pool,
    provider: usize,
    file: &OAuthCredential,
) -> Result<OAuthCredential, RefreshFailure> {
    let oauth = config.providers[provider]
        .oauth
        .as_ref()
        .ok_or_else(|| RefreshFailure::Transient("no oauth settings".into()))?;
    let uri = credentials::token_endpoint(file, oauth.token_uri.as_deref()).to_string();
    let url = crate::config::BaseUrl::parse(&uri)
        .map_err(|m| RefreshFailure::Transient(format!("bad token endpoint: {m}")))?;
    let client_id = oauth
        .client_id
        .as_ref()
        .map(|s| s.expose().to_string())
        .or_else(|| file.client_id.clone());
    let client_secret = oauth
        .client_secret
        .as_ref()
        .map(|s| s.expose().to_string())
        .or_else(|| file.client_secret.clone());
    let body = refresh_form(file, client_id.as_deref(), client_secret.as_deref());
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"POST ");
    head.extend_from_slice(
        if url.path_prefix.is_empty() {
            "/"
        } else {
            &url.path_prefix
        }
        .as_bytes(),
    );
    head.extend_from_slice(b" HTTP/1.1\r\n");
    let host = if url.port == 80 || url.port == 443 {
        url.host.clone()
    } else {
        format!("{}:{}", url.host, url.port)
    };
    write::header(&mut head, b"host", host.as_bytes());
    write::header(
        &mut head,
        b"content-type",
        b"application/x-www-form-urlencoded",
    );
    write::header(&mut head, b"accept", b"application/json");
    write::content_length(&mut head, body.len() as u64);
    head.extend_from_slice(b"\r\n");
    let req = UpstreamRequest {
        method: Method::Post,
        head: &head,
        body: &body,
    };
    let key = PoolKey::for_url(&url);
    let mut scratch = Vec::new();
    let mut resp = exchange(
        pool,
        &key,
        &req,
        config.timeouts.upstream_head,
        &mut scratch,
    )
    .await
    .map_err(|e| RefreshFailure::Transient(format!("token endpoint: {e}")))?;
    let status = resp.head.status;
    let mut answer = Vec::new();
    let mut reader = resp.body();
    loop {
        match reader
            .next(&mut resp.conn, config.timeouts.upstream_body_idle, |d| {
                if answer.len() < 1 << 20 {
                    answer.extend_from_slice(d)
                }
            })
            .await
        {
            Ok(BodyChunk::Raw(_)) => {}
            Ok(BodyChunk::End) => break,
            Err(e) => return Err(RefreshFailure::Transient(format!("token endpoint: {e}"))),
        }
    }
    let grant = parse_token_response(status, &answer).map_err(|e| match e {
        RefreshError::Rejected(why) => RefreshFailure::Rejected(why),
        RefreshError::Transient(why) => RefreshFailure::Transient(why),
    })?;
    let file = file.clone();
    let now = now_ms();
    glommio::executor()
        .spawn_blocking(move || write_back(&file, &grant, now))
        .await
        .map_err(|e| RefreshFailure::Transient(format!("writing the credential file: {e}")))
}
