//! The command line: `check` output and errors, secrets never printed.

mod common;

use std::time::Duration;

use common::*;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/shardgate.toml");
const OPENAI_SECRET: &str = "sk-test-openai-secret-4242424242";

fn check(path: &str, env: &[(&str, &str)], env_remove: &[&str]) -> (bool, String, String) {
    let (status, out, err) = run_to_exit(
        &["check", "--config", path],
        env,
        env_remove,
        Duration::from_secs(10),
    );
    (status.success(), out, err)
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the text"))
        + 1
}

#[test]
fn check_accepts_the_example_config() {
    let (ok, out, err) = check(EXAMPLE, &[("OPENAI_API_KEY", OPENAI_SECRET)], &[]);
    assert!(ok, "stdout: {out}\nstderr: {err}");
    assert!(out.contains(&format!("{EXAMPLE}: ok")), "{out}");
    assert!(out.contains("listen: 127.0.0.1:3001 (loopback)"), "{out}");
    assert!(out.contains("openai: protocol openai"), "{out}");
    assert!(out.contains("key: set"), "{out}");
    assert!(out.contains("gpt-4o-mini -> openai"), "{out}");
    assert!(out.contains("default provider: openai"), "{out}");
    assert!(
        !out.contains(OPENAI_SECRET) && !err.contains(OPENAI_SECRET),
        "the key leaked: {out}{err}"
    );
}

#[test]
fn check_without_the_env_key_names_the_variable_and_line() {
    let (ok, out, err) = check(EXAMPLE, &[], &["OPENAI_API_KEY"]);
    assert!(!ok, "stdout: {out}");
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let line = line_of(&text, "api_key_env = \"OPENAI_API_KEY\"");
    assert!(err.contains(&format!("{EXAMPLE}:{line}:")), "stderr: {err}");
    assert!(err.contains("OPENAI_API_KEY"), "stderr: {err}");
    assert!(err.contains("not set"), "stderr: {err}");
}

#[test]
fn check_reports_unknown_key_with_file_and_line() {
    let text = "[server]\nlisten = \"127.0.0.1:3001\"\ndrain_timout_ms = 100\n";
    let file = config_file(text);
    let path = file.path().to_str().unwrap();
    let (ok, out, err) = check(path, &[], &[]);
    assert!(!ok, "stdout: {out}");
    assert!(err.contains(&format!("{path}:3:1")), "stderr: {err}");
    assert!(
        err.contains("unknown key `drain_timout_ms`"),
        "stderr: {err}"
    );
    assert!(
        err.contains("did you mean \"drain_timeout_ms\"?"),
        "stderr: {err}"
    );
    assert!(!out.contains(": ok"));
}

#[test]
fn check_reports_unknown_key_in_array_table() {
    let text = format!(
        "{}\n[[models]]\nname = \"m\"\nprovider = \"mock\"\nupstream = \"x\"\n",
        ConfigBuilder::new("http://127.0.0.1:9/v1").build()
    );
    let file = config_file(&text);
    let path = file.path().to_str().unwrap();
    let (ok, _out, err) = check(path, &[], &[]);
    assert!(!ok);
    let line = line_of(&text, "upstream = \"x\"");
    assert!(err.contains(&format!("{path}:{line}:")), "stderr: {err}");
    assert!(err.contains("unknown key `upstream`"), "stderr: {err}");
}

#[test]
fn check_never_prints_secrets() {
    let provider = "sk-provider-very-secret-000111";
    let client = "sk-client-very-secret-222333";
    let env_client = "sk-client-from-env-444555";
    let good = format!(
        r#"[server]
listen = "127.0.0.1:3001"

[[auth.keys]]
id = "alice"
key = "{client}"

[[auth.keys]]
id = "bob"
key_env = "SHARDGATE_TEST_BOB_KEY"

[[providers]]
name = "up"
protocol = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "{provider}"
"#
    );
    let file = config_file(&good);
    let path = file.path().to_str().unwrap();
    let (ok, out, err) = check(path, &[("SHARDGATE_TEST_BOB_KEY", env_client)], &[]);
    assert!(ok, "stderr: {err}");
    assert!(out.contains("alice") && out.contains("bob"), "{out}");
    for secret in [provider, client, env_client] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} leaked: {out}{err}"
        );
    }

    // Error paths: a secret-looking value in the wrong place, a misspelled
    // key holding a secret, an unusable key, the same key twice.
    let bad_configs = [
        good.replace(
            "listen = \"127.0.0.1:3001\"",
            &format!("listen = \"127.0.0.1:3001\"\nshards = \"{provider}\""),
        ),
        good.replace("api_key = ", "api_kye = "),
        good.replace(
            &format!("key = \"{client}\""),
            &format!("key = \"{client} x\""),
        ),
        good.replace(
            "key_env = \"SHARDGATE_TEST_BOB_KEY\"",
            &format!("key = \"{client}\""),
        ),
        good.replace(
            "base_url = \"http://127.0.0.1:9/v1\"",
            &format!("base_url = \"http://user:{provider}@127.0.0.1:9/v1\""),
        ),
        good.replace(
            &format!("api_key = \"{provider}\""),
            &format!("api_key = \"{provider}\"\napi_key_env = \"X\""),
        ),
        good.replace("\"alice\"", &format!("\"alice\"\nunknown = \"{client}\"")),
        good.replace(
            "protocol = \"openai\"",
            &format!("protocol = \"{provider}\""),
        ),
    ];
    for (i, bad) in bad_configs.iter().enumerate() {
        let file = config_file(bad);
        let path = file.path().to_str().unwrap();
        let (ok, out, err) = check(path, &[("SHARDGATE_TEST_BOB_KEY", env_client)], &[]);
        assert!(!ok, "bad config #{i} accepted:\n{bad}");
        assert!(
            err.contains(path),
            "bad config #{i}: error does not name the file: {err}"
        );
        for secret in [client, env_client] {
            assert!(
                !out.contains(secret) && !err.contains(secret),
                "bad config #{i}: {secret} leaked:\n{out}{err}"
            );
        }
        // The provider key may legitimately be echoed only where it was
        // used as a protocol name (#7, not a secret there).
        if i != 7 {
            assert!(
                !out.contains(provider) && !err.contains(provider),
                "bad config #{i}: provider key leaked:\n{out}{err}"
            );
        }
    }
}

#[test]
fn serve_with_a_missing_config_file_fails_with_its_path() {
    let (status, out, err) = run_to_exit(
        &["serve", "--config", "/nonexistent/dir/shardgate.toml"],
        &[],
        &[],
        Duration::from_secs(10),
    );
    assert!(!status.success(), "{out}");
    assert!(
        err.contains("/nonexistent/dir/shardgate.toml") && err.contains("cannot read"),
        "stderr: {err}"
    );
}

#[test]
fn serve_with_invalid_config_fails_with_line() {
    let text = "[limits]\nmax_body_bytes = 0\n";
    let file = config_file(text);
    let path = file.path().to_str().unwrap();
    let (status, out, err) = run_to_exit(
        &["serve", "--config", path],
        &[],
        &[],
        Duration::from_secs(10),
    );
    assert!(!status.success(), "{out}");
    assert!(err.contains(&format!("{path}:2:")), "stderr: {err}");
    assert!(err.contains("max_body_bytes"), "stderr: {err}");
}

#[test]
fn env_overrides_listen_address() {
    let mock = start_mock(&[]);
    let config = ConfigBuilder::for_mock(&mock).listen("127.0.0.1:1").build();
    let file = config_file(&config);
    let path = file.path().to_str().unwrap().to_string();
    let gw = Proc::spawn_with_env(
        "gateway",
        &["serve", "--config", &path],
        &[
            ("SHARDGATE_LISTEN", "127.0.0.1:0"),
            ("SHARDGATE_SHARDS", "1"),
        ],
        vec![file],
    );
    assert_ne!(gw.addr.port(), 1);
    assert_eq!(roundtrip(gw.addr, &get("/health")).status, 200);
}
