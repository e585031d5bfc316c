//! Routing: which provider and upstream model serve a request, which of the
//! provider's credentials carries it, and what happens when one fails.
//!
//! Everything here is sans-IO and synchronous: no sockets, no executor, no
//! clock reads (callers pass `now`), no locks. Each shard owns its own
//! [`ModelTable`] (or shares an immutable one), rule list and one
//! [`CredentialPool`] per provider; the request path calls them directly.
//!
//! # Request path
//!
//! ```text
//! let traits = traits_of_body(&body);                      // 4 memmem scans
//! let name   = pick(&rules, requested, &traits).unwrap_or(requested);
//! let target = table.resolve(name)?;                       // hash lookup
//! for t in once(target).chain(table.fallback_targets(&target)) {
//!     match pools[t.provider].select(now) {
//!         Selection::Chosen(id) => {                        // counted in flight
//!             let outcome = /* send with credential `id` */;
//!             match pools[t.provider].finish(id, outcome, now) {
//!                 Action::Refresh => /* refresh, mark_refreshed(id), retry */,
//!                 _ => /* done, or retry on the next credential/target */,
//!             }
//!         }
//!         Selection::Busy => /* try_enqueue() or 429; dequeue() when woken */,
//!         Selection::Unavailable { retry_after } => /* next target, or 503 */,
//!     }
//! }
//! ```
//!
//! - [`models`]: the model table (exact names, aliases, `provider/model`,
//!   globs, default provider) and fallback chains.
//! - [`rules`]: scenario rules (background, thinking, long context, web
//!   search) and the body scan that feeds them.
//! - [`pool`]: a provider's credentials on one shard, with health (cooldown
//!   on 429, disable after repeated errors, single probe to re-enable, OAuth
//!   refresh on 401/403), in-flight limits and a bounded wait queue.

//!
//! # Differences from the original API sketch
//!
//! - `CredentialPool::select` counts the request in flight itself; there is
//!   no `begin` (a separate call would leave a window where two requests
//!   claim the last free place or the same probe).
//! - [`Outcome::Cancelled`] finishes a request that ended without an answer.
//! - `queue_limit` lives in [`HealthSettings`] with the other pool limits.
//! - `mark_refreshed(id, now)` takes `now` (a disabled slot is probed at
//!   once with its new token); `mark_dead(id, reason)` takes a
//!   `&'static str` shown as `last_error`; `add_static()` adds an API key,
//!   which a 401/403 disables without asking for a refresh.
//! - Table globs have exactly one `*` (two would make the `*` substitution
//!   ambiguous); rule globs ([`glob_match`]) take any number.

#![warn(missing_docs)]

pub mod models;
pub mod pool;
pub mod rules;

pub use models::{ModelDefaults, ModelSpec, ModelTable, Target, MAX_FALLBACKS};
pub use pool::{
    Action, CredentialPool, HealthSettings, Outcome, Policy, Selection, SlotId, SlotStatus,
};
pub use rules::{glob_match, pick, traits_of_body, Condition, RequestTraits, Rule};
