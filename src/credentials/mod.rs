//! Credential files: the OAuth credential files of CLI tools (Gemini CLI,
//! Qwen Code) that provider pools draw on, read, watched, refreshed and
//! written back.
//!
//! This layer is synchronous and std-only: it runs on the control plane's
//! own threads, never on a shard's executor, because file I/O must stay off
//! the request path. The control plane drives it like this:
//!
//! 1. [`Watcher::new`] on the configured paths (before the scan, so nothing
//!    changed in between is missed), then [`scan()`] them: every `*.json` of a
//!    configured directory, or a configured file, read in parallel with a
//!    bounded number of open files, deduplicated by [`Fingerprint`] (a hash
//!    of the refresh token, the credential's stable, printable id).
//! 2. [`CredentialIndex::from_report`], then on each [`Watcher::poll_changes`]
//!    batch, [`CredentialIndex::apply_changes`]: only the reported paths are
//!    looked at, and only the really changed ones are read.
//! 3. To refresh: POST [`refresh_form`] to [`token_endpoint`], read the
//!    answer with [`parse_token_response`], then [`write_back`] (atomic
//!    replace, mode 0600, unknown fields kept) and
//!    [`CredentialIndex::record_write`] so the watcher's echo of that write
//!    is a no-op.
//!
//! Tokens and secrets never appear in `Debug` output or error messages;
//! fingerprints are what to log.

pub mod file;
pub mod oauth;
pub mod scan;
pub mod watch;
pub mod write;

pub use file::{parse, FileError, Fingerprint, OAuthCredential, OAuthKind, MAX_FILE_SIZE};
pub use oauth::{
    parse_token_response, refresh_form, token_endpoint, RefreshError, TokenGrant,
    FORM_CONTENT_TYPE, GEMINI_TOKEN_URL, QWEN_TOKEN_URL,
};
pub use scan::{expand, scan, Changes, CredentialIndex, ScanReport};
pub use watch::Watcher;
pub use write::{apply_grant, persist, write_back};
