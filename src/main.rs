//! The `shardgate` command line: serve, check, demo, mock-upstream.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use shardgate::config::Config;
use shardgate::mock::{BoundMock, MockSettings};
use shardgate::server::BoundGateway;

#[derive(Parser)]
#[command(
    name = "shardgate",
    version,
    about = "A thread-per-core LLM API gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a config file.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
        /// Override the number of shards (0 = one per CPU).
        #[arg(long)]
        shards: Option<usize>,
    },
    /// Validate a config file and print a summary (secrets never shown).
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the gateway in front of the built-in mock provider on loopback.
    Demo {
        /// Port for the gateway on 127.0.0.1.
        #[arg(long, default_value_t = 3001)]
        port: u16,
        #[arg(long)]
        shards: Option<usize>,
    },
    /// Run the mock provider (OpenAI, Anthropic and Gemini protocols, JSON and SSE).
    MockUpstream {
        #[arg(long, default_value_t = 3002)]
        port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// Shards (0 = one per CPU).
        #[arg(long, default_value_t = 0)]
        shards: usize,
        /// Delay before each answer.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Content events per streamed answer.
        #[arg(long, default_value_t = 8)]
        stream_chunks: usize,
        /// Pause between streamed events.
        #[arg(long, default_value_t = 0)]
        chunk_interval_ms: u64,
        /// Keep the last model request (any protocol) for GET /mock/last-request.
        #[arg(long)]
        record_requests: bool,
        /// Lifetime of the access tokens POST /oauth/token issues.
        #[arg(long, default_value_t = 3600)]
        token_ttl_secs: u64,
        /// Delay before POST /oauth/token answers.
        #[arg(long, default_value_t = 0)]
        oauth_delay_ms: u64,
        /// Refuse model requests that present no key (401).
        #[arg(long)]
        require_key: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, shards } => serve(config, shards),
        Command::Check { config } => check(config),
        Command::Demo { port, shards } => demo(port, shards),
        Command::MockUpstream {
            port,
            host,
            shards,
            latency_ms,
            stream_chunks,
            chunk_interval_ms,
            record_requests,
            token_ttl_secs,
            oauth_delay_ms,
            require_key,
        } => mock_upstream(
            SocketAddr::new(host, port),
            shards,
            MockSettings {
                latency: Duration::from_millis(latency_ms),
                stream_chunks,
                chunk_interval: Duration::from_millis(chunk_interval_ms),
                record_requests,
                token_ttl: Duration::from_secs(token_ttl_secs),
                oauth_delay: Duration::from_millis(oauth_delay_ms),
                require_key,
            },
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("shardgate: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT and SIGTERM set `flag`; the shards see it and drain.
fn on_signals(flag: &Arc<AtomicBool>) -> Result<(), String> {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, flag.clone())
            .map_err(|e| format!("cannot install signal handler: {e}"))?;
    }
    Ok(())
}

fn serve(path: PathBuf, shards: Option<usize>) -> Result<(), String> {
    let mut config = Config::load(&path).map_err(|e| e.to_string())?;
    if let Some(n) = shards {
        config.shards = (n > 0).then_some(n);
    }
    run_gateway(config)
}

fn run_gateway(config: Config) -> Result<(), String> {
    let tls = config.client_tls.is_some();
    let gateway = BoundGateway::bind(config).map_err(|e| e.to_string())?;
    on_signals(&gateway.shutdown_flag())?;
    let scheme = if tls { "https" } else { "http" };
    println!("shardgate: listening on {scheme}://{}", gateway.local_addr);
    gateway.run().map_err(|e| e.to_string())?;
    println!("shardgate: stopped");
    Ok(())
}

fn check(path: PathBuf) -> Result<(), String> {
    let config = Config::load(&path).map_err(|e| e.to_string())?;
    println!("{}: ok", path.display());
    println!("{}", config.summary());
    Ok(())
}

fn mock_upstream(addr: SocketAddr, shards: usize, settings: MockSettings) -> Result<(), String> {
    let shards = if shards == 0 {
        shardgate::server::shard::online_cpus()
    } else {
        shards
    };
    let mock = BoundMock::bind(addr, shards, settings).map_err(|e| e.to_string())?;
    on_signals(&mock.shutdown_flag())?;
    println!(
        "shardgate mock provider: listening on http://{}",
        mock.local_addr
    );
    mock.run().map_err(|e| e.to_string())
}

fn demo(port: u16, shards: Option<usize>) -> Result<(), String> {
    let mock = BoundMock::bind(
        "127.0.0.1:0".parse().unwrap(),
        1,
        MockSettings {
            stream_chunks: 8,
            chunk_interval: Duration::from_millis(150),
            ..MockSettings::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let mock_addr = mock.local_addr;
    let mock_stop = mock.shutdown_flag();
    let mock_thread = std::thread::spawn(move || mock.run());

    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
shards = {shards}
drain_timeout_ms = 2000

[[providers]]
name = "mock"
protocol = "openai"
base_url = "http://{mock_addr}/v1"
api_key = "sk-demo-provider-key"

[[providers]]
name = "mock-anthropic"
protocol = "anthropic"
base_url = "http://{mock_addr}/v1"
api_key = "sk-ant-demo-provider-key"

[[providers]]
name = "mock-gemini"
protocol = "gemini"
base_url = "http://{mock_addr}/v1beta"
api_key = "demo-gemini-provider-key"

[routing]
default_provider = "mock"

[[models]]
name = "demo-model"
provider = "mock"
upstream_model = "mock-model"

[[models]]
name = "claude-demo"
provider = "mock-anthropic"
upstream_model = "mock-model"

[[models]]
name = "gemini-demo"
provider = "mock-gemini"
upstream_model = "mock-model"
"#,
        shards = shards.unwrap_or(0)
    );
    let config = Config::from_toml(&text, "<demo>").map_err(|e| e.to_string())?;
    let gateway = BoundGateway::bind(config).map_err(|e| e.to_string())?;
    let addr = gateway.local_addr;
    on_signals(&gateway.shutdown_flag())?;
    println!("shardgate demo: gateway on http://{addr}, mock provider on http://{mock_addr}");
    println!("Models: demo-model (OpenAI provider), claude-demo (Anthropic provider), gemini-demo (Gemini provider);");
    println!("every endpoint reaches every model, translated where the protocols differ. Try:");
    println!("  curl -s http://{addr}/v1/models");
    println!(
        "  curl -s http://{addr}/v1/chat/completions -H 'content-type: application/json' \\\n    -d '{{\"model\":\"claude-demo\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'"
    );
    println!(
        "  curl -sN http://{addr}/v1/messages -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' \\\n    -d '{{\"model\":\"demo-model\",\"max_tokens\":256,\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'"
    );
    println!(
        "  curl -sN 'http://{addr}/v1beta/models/claude-demo:streamGenerateContent?alt=sse' -H 'content-type: application/json' \\\n    -d '{{\"contents\":[{{\"role\":\"user\",\"parts\":[{{\"text\":\"Hello\"}}]}}]}}'"
    );
    println!("Press Ctrl-C to stop.");
    let result = gateway.run().map_err(|e| e.to_string());
    mock_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = mock_thread.join();
    result
}
