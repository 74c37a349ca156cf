//! `agent-worker`: the reference worker of agent-factory (README, "The reference worker").
//!
//! Boot: the bootstrap code for its token, the newest good snapshot into its data dir
//! (checksum verified), the skills (placeholder); then the loop (`runtime`), then the snapshot
//! on the way out, then an exit code from `rules::exit_code`.

use worker::{config, rules, runtime};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match config::parse(&args, &|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            let help = args.iter().any(|a| a == "-h" || a == "--help");
            if help {
                print!("{e}");
                std::process::exit(0);
            }
            eprintln!("agent-worker: {e}");
            std::process::exit(rules::EXIT_USAGE);
        }
    };
    let code = runtime::run(cfg).await;
    std::process::exit(code);
}
