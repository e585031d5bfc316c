//! Writing a refreshed credential back to its file, crash-safely.
//!
//! The file is shared with the CLI tool that created it (and with other
//! gateway instances), and a refresh may have rotated the refresh token: the
//! old one is then dead, so losing the new file would lose the account. The
//! write therefore goes to a temp file in the same directory, is synced, and
//! is renamed over the target; the directory is synced last. A crash at any
//! point leaves the old file or the new one, whole, plus at worst a temp
//! file whose name does not end in `.json`, which scans ignore.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use super::file::OAuthCredential;
use super::oauth::TokenGrant;

/// Distinguishes temp files of concurrent writes within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The credential after `grant`, in memory only: the original fields with
/// `access_token`, `expiry_date` (`now_ms + expires_in * 1000`; removed when
/// the grant gives no lifetime, since the old one no longer applies),
/// `refresh_token` (when rotated), `id_token` and `resource_url` (when
/// sent) replaced. Unknown fields are kept.
pub fn apply_grant(cred: &OAuthCredential, grant: &TokenGrant, now_ms: u64) -> OAuthCredential {
    let mut fields = cred.fields.clone();
    let mut set = |k: &str, v: &str| {
        fields.insert(k.to_owned(), Value::String(v.to_owned()));
    };
    set("access_token", &grant.access_token);
    if let Some(r) = &grant.refresh_token {
        set("refresh_token", r);
    }
    if let Some(t) = &grant.id_token {
        set("id_token", t);
    }
    if let Some(u) = &grant.resource_url {
        set("resource_url", u);
    }
    match grant.expires_in {
        Some(secs) => {
            let at = now_ms.saturating_add(secs.saturating_mul(1000));
            fields.insert("expiry_date".to_owned(), Value::from(at));
        }
        None => {
            fields.remove("expiry_date");
        }
    }
    // The grant holds a non-empty access token and the refresh token is
    // either kept or replaced by a non-empty one, so the fields stay valid.
    OAuthCredential::from_fields(&cred.path, cred.kind, fields)
        .expect("a granted credential keeps every required field")
}

/// Applies `grant` ([`apply_grant`]) and writes the result over
/// `cred.path` ([`persist`]). Returns the updated credential.
///
/// On an error the file is unchanged (or already replaced, if only the
/// directory sync failed), but the grant is still valid: when it rotated the
/// refresh token, keep serving `apply_grant(cred, grant, now_ms)` from
/// memory and retry the write, since the old refresh token is dead.
pub fn write_back(
    cred: &OAuthCredential,
    grant: &TokenGrant,
    now_ms: u64,
) -> io::Result<OAuthCredential> {
    let updated = apply_grant(cred, grant, now_ms);
    persist(&updated)?;
    Ok(updated)
}

/// Atomically replaces `cred.path` with `cred`'s fields as pretty JSON (the
/// layout the CLI tools write), mode 0600.
pub fn persist(cred: &OAuthCredential) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(&cred.fields).map_err(io::Error::other)?;
    bytes.push(b'\n');
    let path = &cred.path;
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "credential path has no file name",
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let result = write_synced(&tmp, &bytes).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// Creates `tmp` (mode 0600, failing if it exists), writes and syncs it.
fn write_synced(tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    // The umask can only clear bits of 0600; set it exactly anyway, so the
    // file never ends up unreadable by its owner.
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Makes the rename durable. Filesystems that cannot sync a directory say
/// EINVAL; the rename is then as durable as they allow.
fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::file::{parse, OAuthKind};
    use std::path::PathBuf;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    const QWEN: &str = r#"{"access_token":"old-a","refresh_token":"old-r","token_type":"Bearer","resource_url":"portal.qwen.ai","expiry_date":1,"extra":{"nested":[1,2]},"note":"keep me"}"#;

    fn grant(access: &str) -> TokenGrant {
        TokenGrant {
            access_token: access.into(),
            expires_in: Some(3600),
            refresh_token: None,
            id_token: None,
            resource_url: None,
        }
    }

    fn setup(json: &str) -> (tempfile::TempDir, OAuthCredential) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oauth_creds.json");
        fs::write(&path, json).unwrap();
        let c = parse(&path, json.as_bytes(), OAuthKind::QwenCode).unwrap();
        (dir, c)
    }

    fn dir_names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_back_keeps_unknown_fields() {
        let (dir, c) = setup(QWEN);
        let g = TokenGrant {
            access_token: "new-a".into(),
            expires_in: Some(21600),
            refresh_token: Some("new-r".into()),
            id_token: None,
            resource_url: Some("portal2.qwen.ai".into()),
        };
        let n = write_back(&c, &g, 1_000).unwrap();
        assert_eq!(n.access_token, "new-a");
        assert_eq!(n.refresh_token, "new-r");
        assert_eq!(n.expiry_ms, Some(1_000 + 21_600_000));
        assert_eq!(n.resource_url.as_deref(), Some("portal2.qwen.ai"));
        let on_disk = fs::read(&c.path).unwrap();
        assert_eq!(parse(&c.path, &on_disk, OAuthKind::QwenCode).unwrap(), n);
        let v: Value = serde_json::from_slice(&on_disk).unwrap();
        assert_eq!(v["extra"]["nested"][1], 2);
        assert_eq!(v["note"], "keep me");
        assert_eq!(v["token_type"], "Bearer");
        assert_eq!(v["expiry_date"], 21_601_000);
        assert_eq!(v.as_object().unwrap().get("id_token"), None);
        let mode = fs::metadata(&c.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(dir_names(dir.path()), ["oauth_creds.json"]);
    }

    #[test]
    fn refresh_token_kept_unless_rotated() {
        let (_dir, c) = setup(QWEN);
        let mut g = grant("a2");
        g.id_token = Some("idt".into());
        g.expires_in = None;
        let n = write_back(&c, &g, 5).unwrap();
        assert_eq!(n.refresh_token, "old-r");
        assert_eq!(n.fingerprint(), c.fingerprint());
        assert_eq!(n.expiry_ms, None);
        assert_eq!(n.fields()["id_token"], "idt");
        assert_eq!(n.resource_url.as_deref(), Some("portal.qwen.ai"));
    }

    #[test]
    fn relative_path_and_missing_dir() {
        let (_dir, mut c) = setup(QWEN);
        c.path = PathBuf::from("/nonexistent-dir-for-test/x.json");
        let e = write_back(&c, &grant("a"), 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn temp_names_are_never_json() {
        // What persist builds for a name; scans must skip it.
        let name = format!(".oauth_creds.json.tmp-{}-{}", 1, 2);
        assert!(!crate::credentials::scan::is_json_name(name.as_ref()));
    }

    #[test]
    fn readers_always_see_a_whole_file() {
        let (dir, c) = setup(QWEN);
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer = {
            let stop = stop.clone();
            let written = written.clone();
            let c = c.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                // Alternate short and long bodies, so a torn write would show.
                while !stop.load(Ordering::Relaxed) {
                    let token = if n % 2 == 0 {
                        "s".to_string()
                    } else {
                        "L".repeat(5000)
                    };
                    write_back(&c, &grant(&token), n).unwrap();
                    n += 1;
                    written.store(n, Ordering::Relaxed);
                }
                n
            })
        };
        // At least 400 ms and 20 writes (each one fsyncs: a busy disk is
        // slow), at most 20 s.
        let started = std::time::Instant::now();
        let mut reads = 0;
        while started.elapsed() < std::time::Duration::from_millis(400)
            || (written.load(Ordering::Relaxed) < 20
                && started.elapsed() < std::time::Duration::from_secs(20))
        {
            let bytes = fs::read(&c.path).unwrap();
            let r = parse(&c.path, &bytes, OAuthKind::QwenCode)
                .unwrap_or_else(|e| panic!("torn read: {e}"));
            assert!(
                ["old-a", "s"].contains(&r.access_token.as_str()) || r.access_token.len() == 5000
            );
            reads += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let writes = writer.join().unwrap();
        assert!(writes > 2 && reads > 2, "writes {writes} reads {reads}");
        assert_eq!(dir_names(dir.path()), ["oauth_creds.json"]);
    }

    /// Child half of `kill_9_leaves_a_whole_file`: writes forever when the
    /// parent sets the variable, passes at once otherwise.
    #[test]
    fn crash_child_writer() {
        let Some(path) = std::env::var_os("SHARDGATE_CRED_CRASH_PATH") else {
            return;
        };
        let path = PathBuf::from(path);
        let c = parse(&path, &fs::read(&path).unwrap(), OAuthKind::QwenCode).unwrap();
        for n in 0u64.. {
            let token = if n % 2 == 0 {
                "s".to_string()
            } else {
                "L".repeat(50_000)
            };
            write_back(&c, &grant(&token), n).unwrap();
        }
    }

    #[test]
    fn kill_9_leaves_a_whole_file() {
        let (dir, c) = setup(QWEN);
        let exe = std::env::current_exe().unwrap();
        for delay_ms in [30, 70, 110] {
            let mut child = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "credentials::write::tests::crash_child_writer",
                    "--test-threads=1",
                ])
                .env("SHARDGATE_CRED_CRASH_PATH", &c.path)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            // Wait for the child's first write, then kill it mid-stream.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while fs::read(&c.path).unwrap() == QWEN.as_bytes() {
                assert!(std::time::Instant::now() < deadline, "child never wrote");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            std::thread::sleep(std::time::Duration::from_millis(delay_ms));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            let bytes = fs::read(&c.path).unwrap();
            parse(&c.path, &bytes, OAuthKind::QwenCode)
                .unwrap_or_else(|e| panic!("torn file: {e}"));
            fs::write(&c.path, QWEN).unwrap();
        }
        // Stray temp files may remain; none of them looks like a credential.
        for name in dir_names(dir.path()) {
            assert!(
                name == "oauth_creds.json" || !name.ends_with(".json"),
                "{name}"
            );
        }
    }
}
