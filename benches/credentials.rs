//! Criterion benchmarks of the credential-file layer: a cold scan of a
//! directory of 10,000 Gemini CLI credential files (what startup costs with a
//! large pool), and the parse of one file.
//!
//! "Cold" means no index: every file is listed, opened, read and parsed. The
//! page cache is warm after the first iteration, as it is for a gateway
//! restarted on the same host; the files are created once, outside the
//! measured loop.

use std::fs;
use std::path::{Path, PathBuf};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shardgate::credentials::{parse, scan, OAuthKind};

const FILES: usize = 10_000;
const MAX_OPEN: usize = 64;

/// A credential file of realistic size (~1.3 KiB, the id_token dominating).
fn cred_json(i: usize) -> String {
    let id_token = format!(
        "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEyMyJ9.{}.sig{i}",
        "x".repeat(900)
    );
    format!(
        r#"{{
  "access_token": "ya29.a0AfB_byC{i:08}{pad}",
  "refresh_token": "1//0gRefreshToken{i:08}{pad}",
  "scope": "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email openid",
  "token_type": "Bearer",
  "id_token": "{id_token}",
  "expiry_date": 1754000000000
}}
"#,
        pad = "q".repeat(60)
    )
}

fn make_dir(dir: &Path) {
    for i in 0..FILES {
        fs::write(dir.join(format!("cred-{i:05}.json")), cred_json(i)).unwrap();
    }
}

fn bench_scan(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    make_dir(dir.path());
    let paths: Vec<PathBuf> = vec![dir.path().to_path_buf()];
    let mut g = c.benchmark_group("credentials/scan");
    g.sample_size(10);
    g.throughput(Throughput::Elements(FILES as u64));
    g.bench_function("10k_files", |b| {
        b.iter(|| {
            let r = scan(black_box(&paths), OAuthKind::GeminiCli, MAX_OPEN);
            assert_eq!(r.credentials.len(), FILES);
            r
        })
    });
    g.bench_function("10k_files_max_open_1", |b| {
        b.iter(|| scan(black_box(&paths), OAuthKind::GeminiCli, 1))
    });
    g.finish();
}

fn bench_parse(c: &mut Criterion) {
    let body = cred_json(7);
    let path = Path::new("/creds/cred-00007.json");
    let mut g = c.benchmark_group("credentials/parse");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("gemini_file", |b| {
        b.iter(|| parse(path, black_box(body.as_bytes()), OAuthKind::GeminiCli).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench_scan, bench_parse);
criterion_main!(benches);
