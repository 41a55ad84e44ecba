//! The `precond` command: `run`, `check`, `demo`, `origin` and `report`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use precond::config;
use precond::demo::{DemoOrigin, Tags};
use precond::telemetry::noise::ListenerNoise;

/// `precond --version`: the crate's version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PRECOND_COMMIT"),
    ")"
);

/// A reverse proxy that answers stale writes with 412 at the edge (RFC 9110 §13).
#[derive(Parser)]
#[command(version = VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy with a configuration file (SIGHUP re-reads it).
    Run {
        /// Path to the TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Take the listeners over from the running precond (graceful upgrade): start this, then
        /// send SIGQUIT to the old process (scripts/upgrade does both).
        #[arg(long, short)]
        upgrade: bool,
    },
    /// Validate a configuration file and exit (non-zero, with the line, on error).
    Check {
        /// Path to the TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the proxy on 127.0.0.1:8080 in front of the bundled demo origin on 127.0.0.1:9000.
    Demo {
        /// Where the demo origin that sends ETags listens (guard route `/`).
        #[arg(long, default_value = "127.0.0.1:9000")]
        origin: SocketAddr,
        /// Where the legacy demo origin (no validators) listens (enforce route `/legacy`).
        #[arg(long, default_value = "127.0.0.1:9001")]
        legacy: SocketAddr,
        /// Make the demo origin on `--origin` send weak ETags (`W/"…"`), as Express, Koa and Rails
        /// do by default.
        #[arg(long)]
        weak_tags: bool,
    },
    /// Summarise what `observe` routes recorded: writes without preconditions, blind
    /// overwrites, what guard would have refused and how the origin answered, top resources.
    Report {
        /// The metrics scrape: an http:// URL (the admin or metrics listener's `/metrics`) or a
        /// file holding one.
        #[arg(long, default_value = "http://127.0.0.1:9091/metrics")]
        metrics: String,
        /// The admin token file, when `/metrics` needs one.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// A JSON log (`log.format = "json"`) to list the resources from.
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// Run only the bundled demo origin (an API that never checks preconditions), e.g. to put a
    /// configured precond in front of it or to measure lost updates with the load scripts.
    Origin {
        /// Where it listens.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Which validators it sends: strong ETags, weak ETags (`W/"…"`), or none (legacy).
        #[arg(long, value_enum, default_value = "strong")]
        tags: TagsArg,
    },
}

/// `--tags` of `precond origin`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum TagsArg {
    Strong,
    Weak,
    None,
}

/// Said by `precond check` and logged at start when `server.metrics_listen` is set.
const METRICS_LISTEN_DEPRECATED: &str = "server.metrics_listen is deprecated and will be \
    removed in the next release: serve metrics from the admin listener instead ([admin] listen = \
    \"127.0.0.1:9901\", GET /metrics, with token_file off loopback)";

const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

/// Logs as `[log]` says: `RUST_LOG` (when set) or `log.level`; JSON lines, or text (with colours
/// only on a terminal); JSON by default when standard output is not a terminal. Pingora's
/// per-connection listener errors (a failed TLS handshake) pass at most once a second.
fn init_logging(log: &config::LogSettings) {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let terminal = std::io::stdout().is_terminal();
    let json = match log.format {
        Some(f) => f == config::LogFormat::Json,
        None => !terminal,
    };
    let fmt = tracing_subscriber::fmt::layer().with_ansi(terminal && !json);
    let fmt = if json {
        fmt.json().flatten_event(true).boxed()
    } else {
        fmt.boxed()
    };
    // Also installs the `log` bridge (Pingora logs through `log`).
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt.with_filter(ListenerNoise::default()))
        .init();
}

/// SIGHUP reloads the configuration once the server runs (`app::reload`); until its handler is
/// installed the signal is ignored rather than left to its default action, which would end the
/// process (a configuration manager may signal right after starting it).
fn ignore_hangup_until_ready() {
    // SAFETY: sets one signal's disposition to "ignore" at start, before any thread is spawned;
    // no handler function is involved.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

fn run(config: config::Config, path: Option<PathBuf>, upgrade: bool) -> ExitCode {
    if config.server.metrics_listen.is_some() {
        tracing::warn!("{METRICS_LISTEN_DEPRECATED}");
    }
    let built = match path {
        Some(path) => precond::app::build_from_file(config, path, upgrade),
        None => precond::app::build(config, precond::app::OnBindFailure::Exit),
    };
    match built {
        Ok((server, _state)) => server.run_forever(),
        Err(e) => {
            eprintln!("precond: cannot start: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match config::load(&config) {
            Ok(c) => {
                // Configured secret and token files are read and server names resolved too (the
                // environment and a generated secret are the running process's business).
                if let Err(e) = precond::app::preflight(&c) {
                    eprintln!("{}: {e}", config.display());
                    return ExitCode::FAILURE;
                }
                if c.server.metrics_listen.is_some() {
                    eprintln!("{}: warning: {METRICS_LISTEN_DEPRECATED}", config.display());
                }
                println!(
                    "{}: OK ({} upstream(s), {} route(s), listening on {:?})",
                    config.display(),
                    c.upstreams.len(),
                    c.routes.len(),
                    c.server.listen
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config, upgrade } => {
            ignore_hangup_until_ready();
            match config::load(&config) {
                Ok(c) => {
                    init_logging(&c.log);
                    run(c, Some(config), upgrade)
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Report {
            metrics,
            token_file,
            log,
        } => match precond::app::report::report(&metrics, token_file.as_deref(), log.as_deref()) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("precond report: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Origin { listen, tags } => {
            let tags = match tags {
                TagsArg::Strong => Tags::Strong,
                TagsArg::Weak => Tags::Weak,
                TagsArg::None => Tags::None,
            };
            let origin = match DemoOrigin::start(listen, tags, "") {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("precond: cannot start the demo origin on {listen}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            println!(
                "demo origin on http://{} ({tags:?} tags, never checks a precondition); Ctrl-C stops it",
                origin.addr
            );
            // Runs until the process is stopped.
            loop {
                std::thread::park();
            }
        }
        Command::Demo {
            origin,
            legacy,
            weak_tags,
        } => {
            let text = DEMO_CONFIG
                .replace("127.0.0.1:9000", &origin.to_string())
                .replace("127.0.0.1:9001", &legacy.to_string());
            let c = config::parse(&text).expect("the bundled demo config is valid");
            init_logging(&c.log);
            let tags = if weak_tags { Tags::Weak } else { Tags::Strong };
            let started = DemoOrigin::start(origin, tags, "")
                .and_then(|d| Ok((d, DemoOrigin::start(legacy, Tags::None, "/legacy")?)));
            let (demo, legacy_demo) = match started {
                Ok(d) => d,
                Err(e) => {
                    eprintln!(
                        "precond: cannot start the demo origins on {origin} and {legacy}: {e}"
                    );
                    return ExitCode::FAILURE;
                }
            };
            let listen = c.server.listen[0];
            println!(
                "demo origin on http://{} (sends {} ETags, never checks If-Match): guard route /,\n\
                 and observe route /observe (then: precond report)\n\
                 legacy origin on http://{} (no validators at all): enforce route /legacy\n\
                 precond on http://{listen}, metrics on http://127.0.0.1:9091/metrics\n\
                 try: curl -i http://{listen}/items/1   and   curl -i http://{listen}/legacy/items/1",
                demo.addr,
                if weak_tags { "weak" } else { "strong" },
                legacy_demo.addr
            );
            let code = run(c, None, false);
            drop((demo, legacy_demo));
            code
        }
    }
}
