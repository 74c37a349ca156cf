//! Logging: JSON lines on Lambda (CloudWatch), readable text locally. `RUST_LOG` sets the level.

pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr);
    let _ = if json { b.json().without_time().try_init() } else { b.with_ansi(false).try_init() };
}
