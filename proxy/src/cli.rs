//! The `pointsman` command: `run` a node, `check` a config file, `explain` how a call would be
//! routed, `status` of a running node's destinations, `log` to show or change a running node's
//! log filter, `announce` its anycast route through BIRD while it is ready.

use crate::config::Config;
use clap::{Parser, Subcommand, ValueEnum};
use routing_rules::Call;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "pointsman",
    version,
    about = "SIP traffic cop for the carrier edge: keeps every call alive when a cloud fails"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node on a config file.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Log line format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Validate a config file: prints every error and warning, one a line as
    /// `FILE:LINE:COLUMN: KEY.PATH: message` in file order, then a count; exits 1 on errors,
    /// else 0.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show how a call would be routed, with every destination up: the route that matches and
    /// why, then its tiers and their members in the order they would be tried.
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        /// The called number (Request-URI user), e.g. +15550100911, or a sip:/tel: URI.
        #[arg(long)]
        to: String,
        /// The caller's number (From user).
        #[arg(long)]
        from: Option<String>,
        /// The name of the listener the call comes in on.
        #[arg(long)]
        source: Option<String>,
        /// A request header, `Name: value` (repeat for several).
        #[arg(long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
    },
    /// Show a running node (its state and calls) and its destinations, from its admin API.
    Status {
        /// The node's admin API address ([admin] listen).
        #[arg(long, default_value = "127.0.0.1:9060", value_name = "HOST:PORT")]
        admin: String,
        /// The node's [admin] token, if it has one (default: $POINTSMAN_ADMIN_TOKEN, which
        /// keeps it out of the process list).
        #[arg(long)]
        token: Option<String>,
    },
    /// List a running node's calls in setup and answered calls, from its admin API (the
    /// filters given must all hold), or end one with `pointsman calls end CALL-ID`: CANCEL
    /// and 480 in setup, BYE to both sides answered, each with
    /// `Reason: SIP;cause=480;text="ended by operator"`.
    Calls {
        #[command(subcommand)]
        action: Option<CallsAction>,
        /// Only calls of this route.
        #[arg(long)]
        route: Option<String>,
        /// Only calls at this destination (the one tried now, or the one that answered).
        #[arg(long)]
        destination: Option<String>,
        /// Only calls whose caller or dialled number ends with this one (digits compared).
        #[arg(long)]
        number: Option<String>,
        /// Only calls at least this old, in seconds.
        #[arg(long, value_name = "SECONDS")]
        min_age: Option<u64>,
        /// The node's admin API address ([admin] listen).
        #[arg(
            long,
            global = true,
            default_value = "127.0.0.1:9060",
            value_name = "HOST:PORT"
        )]
        admin: String,
        /// The node's [admin] token, if it has one (default: $POINTSMAN_ADMIN_TOKEN, which
        /// keeps it out of the process list).
        #[arg(long, global = true)]
        token: Option<String>,
    },
    /// Show, or switch on or off, a running node's HEP capture (`[hep]`), from its admin API.
    Hep {
        /// `on` or `off`; without it, shows whether capture is on.
        #[arg(value_enum)]
        switch: Option<HepSwitch>,
        /// The node's admin API address ([admin] listen).
        #[arg(long, default_value = "127.0.0.1:9060", value_name = "HOST:PORT")]
        admin: String,
        /// The node's [admin] token, if it has one (default: $POINTSMAN_ADMIN_TOKEN).
        #[arg(long)]
        token: Option<String>,
    },
    /// Show or change a running node's log filter, through its admin API. Without FILTER it
    /// prints the filter in force; with one, that filter applies at once to every thread, until
    /// the next change or a restart (which starts from POINTSMAN_LOG again).
    Log {
        /// A level (trace, debug, info, warn, error, off) or tracing directives, e.g.
        /// `pointsman_protocol=debug,info`.
        filter: Option<String>,
        /// The node's admin API address ([admin] listen).
        #[arg(long, default_value = "127.0.0.1:9060", value_name = "HOST:PORT")]
        admin: String,
        /// The node's [admin] token, if it has one (default: $POINTSMAN_ADMIN_TOKEN, which
        /// keeps it out of the process list).
        #[arg(long)]
        token: Option<String>,
    },
    /// Failover drill on loopback, nothing else needed: pointsman between a simulated carrier
    /// and two simulated clouds while the primary answers 503, browns out, dies and recovers;
    /// then hot-hot calls with early media from two more clouds, the preferred one failing
    /// (a 500 or RTP silence), judged by what the carrier heard across the switch.
    Drill {
        /// New calls per second.
        #[arg(long, default_value_t = 4.0)]
        rate: f64,
        /// Length of the whole drill (each phase gets an equal share).
        #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// The phases, in order, after a healthy first one: 503, brownout, dies, recovers,
        /// hot-hot.
        #[arg(long, value_delimiter = ',', default_value = "503,brownout,dies,recovers,hot-hot",
              value_parser = crate::drill::Failure::parse)]
        failures: Vec<crate::drill::Failure>,
        /// Loopback address for pointsman and the simulated peers.
        #[arg(long, default_value = "127.0.0.1")]
        ip: std::net::IpAddr,
        /// pointsman's port; the primary, the secondary, the carrier, the admin API, hot-1 and
        /// hot-2 take the next six, the media relay 400 ports from port + 100.
        #[arg(long, default_value_t = 25060)]
        port: u16,
        /// Also draw the drill as a picture (SVG): calls per destination over time, failovers
        /// and destination states.
        #[arg(long, value_name = "FILE.svg")]
        timeline: Option<std::path::PathBuf>,
    },
    /// Sidecar of an anycast node: polls the node's GET /ready and has BIRD announce the
    /// anycast route (`enable PROTOCOL` on its control socket) only while the node is ready;
    /// withdraws at start, at once on a 503 (drained, stopping) or a refused connection (the
    /// proxy is gone), after --fall probes in a row without an answer (a frozen process), and
    /// on SIGTERM/SIGINT.
    Announce {
        /// The node's admin API address ([admin] listen).
        #[arg(long, default_value = "127.0.0.1:9060", value_name = "HOST:PORT")]
        admin: String,
        /// The node's [admin] token, if /ready needs one (default: $POINTSMAN_ADMIN_TOKEN).
        #[arg(long)]
        token: Option<String>,
        /// BIRD's control socket (bird -s).
        #[arg(long, default_value = "/run/bird/bird.ctl")]
        bird_socket: PathBuf,
        /// The BIRD protocol that holds the anycast route (a static protocol exported over
        /// BGP, `disabled` in BIRD's config).
        #[arg(long, default_value = "anycast")]
        protocol: String,
        /// Time between probes.
        #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// A probe not answered within this has failed (a frozen process).
        #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Ready answers in a row before announcing, spanning at least rise - 1 intervals.
        #[arg(long, default_value_t = 2)]
        rise: u32,
        /// Probes in a row without an answer within --timeout (or with a status other than 200
        /// and 503) before withdrawing.
        #[arg(long, default_value_t = 3)]
        fall: u32,
        /// Log line format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Whether to colour what goes to a stream: only a terminal, and never when `NO_COLOR` is set
/// to anything but the empty string (no-color.org).
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    // Logs go to stderr: a file or a pipe (journald, a container runtime) gets no escapes.
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    crate::logging::init(matches!(format, LogFormat::Json), ansi);
}

/// Parses the command line and runs it; the exit code says how it went.
pub fn main() -> ExitCode {
    // The one rustls crypto provider (ring), installed before anything builds a TLS config.
    crate::transport::tls::install_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Drill {
            rate,
            duration,
            failures,
            ip,
            port,
            timeline,
        } => drill(crate::drill::Options {
            bin: std::env::current_exe().unwrap_or_else(|_| "pointsman".into()),
            rate,
            duration,
            failures,
            ip,
            base_port: port,
            hold: std::time::Duration::from_millis(1500),
            timeline,
        }),
        Command::Status { admin, token } => status(&admin, token),
        Command::Calls {
            action,
            route,
            destination,
            number,
            min_age,
            admin,
            token,
        } => {
            let filter = crate::admin::CallFilter {
                route,
                destination,
                number,
                min_age_secs: min_age,
            };
            calls(&admin, token, action, &filter)
        }
        Command::Hep {
            switch,
            admin,
            token,
        } => hep(&admin, token, switch),
        Command::Log {
            filter,
            admin,
            token,
        } => log(&admin, token, filter.as_deref()),
        Command::Announce {
            admin,
            token,
            bird_socket,
            protocol,
            interval,
            timeout,
            rise,
            fall,
            log_format,
        } => {
            init_logs(log_format);
            let token = admin_token(token);
            announce(crate::announce::Options {
                admin,
                token,
                bird_socket,
                protocol,
                interval,
                timeout,
                rules: crate::announce::Rules {
                    rise,
                    fall,
                    rise_spacing: interval,
                    ..Default::default()
                },
            })
        }
        Command::Check { config } => {
            let (result, warnings) = Config::load_with_warnings(&config);
            let errors = result.as_ref().err().map_or(&[][..], |e| &e.0[..]);
            // One problem a line, `FILE:LINE:COLUMN: KEY.PATH: message`, errors and warnings
            // together in file order (those without a place last).
            let mut lines: Vec<_> = errors
                .iter()
                .map(|e| (e, String::new()))
                .chain(warnings.iter().map(|w| (w, "warning: ".to_string())))
                .collect();
            lines.sort_by_key(|(e, _)| (e.line.unwrap_or(usize::MAX), e.column.unwrap_or(0)));
            for (e, kind) in &lines {
                eprintln!("{kind}{e}");
            }
            let errors = errors.len();
            match (errors, warnings.len()) {
                (0, 0) => println!("{}: ok", config.display()),
                (0, w) => println!("{}: ok, {w} warning(s)", config.display()),
                (e, w) => eprintln!("{}: {e} error(s), {w} warning(s)", config.display()),
            }
            if let Ok(cfg) = &result {
                print!("{}", routes_media(cfg));
            }
            if errors == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Explain {
            config,
            to,
            from,
            source,
            headers,
        } => explain(config, &to, from.as_deref(), source.as_deref(), &headers),
        Command::Run { config, log_format } => {
            init_logs(log_format);
            let cfg = match Config::load(&config) {
                Ok(cfg) => cfg,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            for w in &cfg.warnings {
                tracing::warn!(warning = %w, "config");
            }
            match crate::driver::run_with_reload(cfg, Some(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pointsman: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The admin token from `--token`, else `$POINTSMAN_ADMIN_TOKEN`; an empty one is none.
fn admin_token(token: Option<String>) -> Option<String> {
    token
        .or_else(|| std::env::var("POINTSMAN_ADMIN_TOKEN").ok())
        .filter(|t| !t.is_empty())
}

/// `pointsman log [FILTER]`: prints the node's log filter, or sets it and prints the change;
/// exit 1 (said on stderr) when the node cannot be reached or refuses the filter.
fn log(admin: &str, token: Option<String>, filter: Option<&str>) -> ExitCode {
    let token = admin_token(token);
    let timeout = std::time::Duration::from_secs(5);
    let line = match filter {
        None => crate::admin::fetch_log_filter(admin, token.as_deref(), timeout)
            .map(|filter| format!("log filter: {filter}")),
        Some(filter) => crate::admin::set_log_filter(admin, token.as_deref(), filter, timeout)
            .map(|change| log_change_line(&change)),
    };
    match line {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pointsman log: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What `pointsman log FILTER` prints: the filter now in force and the one before.
fn log_change_line(change: &crate::logging::LogChange) -> String {
    if change.filter == change.previous {
        format!("log filter: {} (unchanged)", change.filter)
    } else {
        format!("log filter: {} (was {})", change.filter, change.previous)
    }
}

/// `pointsman status`: the node line and destination table of a running node; exit 1 if they
/// cannot be had.
fn status(admin: &str, token: Option<String>) -> ExitCode {
    use std::io::IsTerminal;
    let token = admin_token(token);
    let timeout = std::time::Duration::from_secs(5);
    let fetched = crate::admin::fetch_node(admin, token.as_deref(), timeout).and_then(|node| {
        crate::admin::fetch_destinations(admin, token.as_deref(), timeout)
            .map(|destinations| (node, destinations))
    });
    match fetched {
        Ok((node, destinations)) => {
            let coloured = colour(
                std::io::stdout().is_terminal(),
                std::env::var_os("NO_COLOR"),
            );
            print!("{}", crate::admin::render_node(&node, coloured));
            print!("{}", crate::admin::render_status(&destinations, coloured));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pointsman status: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `pointsman calls end CALL-ID`.
#[derive(Subcommand)]
enum CallsAction {
    /// End one call: CANCEL and 480 in setup, BYE to both sides answered.
    End {
        /// The call's Call-ID, as `pointsman calls` lists it.
        call_id: String,
    },
}

/// `pointsman calls`: the node's calls as a table (`GET /calls`), or `end CALL-ID`
/// (`POST /calls/CALL-ID/end`) and the call it ended; exit 1 (said on stderr) when the node
/// cannot be reached or has no such call.
fn calls(
    admin: &str,
    token: Option<String>,
    action: Option<CallsAction>,
    filter: &crate::admin::CallFilter,
) -> ExitCode {
    let token = admin_token(token);
    let timeout = std::time::Duration::from_secs(5);
    let result = match action {
        None => crate::admin::fetch_calls(admin, filter, token.as_deref(), timeout)
            .map(|calls| crate::admin::render_calls(&calls)),
        Some(CallsAction::End { call_id }) => {
            crate::admin::end_call(admin, &call_id, token.as_deref(), timeout)
                .map(|ended| format!("ended:\n{}", crate::admin::render_calls(&ended)))
        }
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pointsman calls: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `pointsman hep [on|off]`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum HepSwitch {
    On,
    Off,
}

/// `pointsman hep`: `GET /hep`, or `POST /hep/on|off`; prints `hep capture on|off`.
fn hep(admin: &str, token: Option<String>, switch: Option<HepSwitch>) -> ExitCode {
    let token = admin_token(token);
    let timeout = std::time::Duration::from_secs(5);
    let switch = switch.map(|s| matches!(s, HepSwitch::On));
    match crate::admin::hep_capture(admin, token.as_deref(), switch, timeout) {
        Ok(on) => {
            println!("hep capture {}", if on { "on" } else { "off" });
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pointsman hep: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `pointsman explain`: prints the decision, or says why there is none (exit 1).
fn explain(
    config: PathBuf,
    to: &str,
    from: Option<&str>,
    source: Option<&str>,
    headers: &[String],
) -> ExitCode {
    let cfg = match Config::load(&config) {
        Ok(cfg) => cfg,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} error(s): fix them before explaining",
                config.display(),
                errors.0.len()
            );
            return ExitCode::FAILURE;
        }
    };
    if let Some(name) = source {
        if !cfg.listeners.iter().any(|l| l.name == name) {
            let known: Vec<String> = cfg
                .listeners
                .iter()
                .map(|l| format!("{:?}", l.name))
                .collect();
            eprintln!(
                "explain: --source {name:?} is not a listener of {}: use one of {}",
                config.display(),
                known.join(", ")
            );
            return ExitCode::FAILURE;
        }
    }
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(headers.len());
    for h in headers {
        match h.split_once(':') {
            Some((name, value)) if !name.trim().is_empty() => {
                pairs.push((name.trim(), value.trim()))
            }
            _ => {
                eprintln!("explain: --header {h:?} is not \"Name: value\", e.g. --header \"X-Tenant: acme\"");
                return ExitCode::FAILURE;
            }
        }
    }
    let call = Call {
        to_user: Some(user_part(to)),
        from_user: from.map(user_part),
        listener: source,
        headers: &pairs,
        ..Call::default()
    };
    match cfg.router.explain(&call, &|_| true) {
        Ok(explanation) => {
            print!("{explanation}");
            let route = cfg.router.rules.route(explanation.route);
            println!("media: {}", route_media(route, cfg.media.as_ref()));
            ExitCode::SUCCESS
        }
        Err(no_route) => {
            eprintln!("explain: {no_route}");
            ExitCode::FAILURE
        }
    }
}

/// One line per route: whether its media is relayed, and how (`pointsman check`).
fn routes_media(cfg: &Config) -> String {
    cfg.router
        .rules
        .routes
        .iter()
        .map(|r| {
            format!(
                "route {:?}: media {}\n",
                r.name,
                route_media(r, cfg.media.as_ref())
            )
        })
        .collect()
}

/// Whether a route's media is relayed: the relay's addresses and ports, and its media timeout.
fn route_media(
    route: &routing_rules::Route,
    media: Option<&pointsman_protocol::media::MediaConfig>,
) -> String {
    use routing_rules::check::fmt_duration;
    match (route.media, media) {
        (routing_rules::spec::MediaMode::Relay, Some(m)) => {
            let timeout = match route.media_timeout {
                Some(t) => format!(
                    "an answered call without media for {} is ended with BYE both ways",
                    fmt_duration(t)
                ),
                None => "no media timeout (media_timeout = \"0s\")".into(),
            };
            format!(
                "relayed by pointsman (carrier side {}, cloud side {}, ports {}-{}); {timeout}",
                m.carrier_ip, m.cloud_ip, m.port_min, m.port_max
            )
        }
        // Not reached on a valid config: a relaying route needs [media].
        (routing_rules::spec::MediaMode::Relay, None) => "relayed (no [media] section)".into(),
        (routing_rules::spec::MediaMode::Off, _) => {
            "not relayed (the SDP goes through untouched: media flows between the carrier and \
             the cloud)"
                .into()
        }
    }
}

/// The user part of `sip:user@host`, `tel:+1555...;params`, or the text itself.
fn user_part(text: &str) -> &str {
    let t = text.trim();
    let rest = ["sips:", "sip:", "tel:"]
        .iter()
        .find_map(|scheme| {
            t.get(..scheme.len())
                .filter(|p| p.eq_ignore_ascii_case(scheme))
                .map(|_| &t[scheme.len()..])
        })
        .unwrap_or(t);
    rest.split('@').next().unwrap_or(rest)
}

/// A single-threaded runtime for command `command`, or `None` (said on stderr) if it cannot be
/// made.
fn runtime(command: &str) -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| eprintln!("pointsman {command}: {e}"))
        .ok()
}

/// Runs `pointsman announce` until a signal; exit 1 if it could not start or withdraw at the end.
fn announce(opts: crate::announce::Options) -> ExitCode {
    let Some(rt) = runtime("announce") else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(crate::announce::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("pointsman announce: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `pointsman drill`; exit 0 when every call was answered, no ghost call leaked and every
/// hot-hot call switched cleanly.
fn drill(opts: crate::drill::Options) -> ExitCode {
    let Some(rt) = runtime("drill") else {
        return ExitCode::FAILURE;
    };
    let mut out = std::io::stdout();
    match rt.block_on(crate::drill::run(opts, &mut out)) {
        Ok(report) if report.passed() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("pointsman drill: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{colour, log_change_line, routes_media, user_part};
    use crate::config::Config;

    /// Two routes: `hot-hot` over a parallel group with `hot_hot_keys`, and `default`.
    fn hot_hot_config(hot_hot_keys: &str, media_section: &str) -> String {
        format!(
            r#"[[listen]]
transport = "udp"
address = "127.0.0.1:5060"

[[destination]]
name = "a"
address = "127.0.0.1:5070"

[[destination]]
name = "b"
address = "127.0.0.1:5080"

[[group]]
name = "both"
strategy = "parallel"
members = ["a", "b"]

{media_section}

[[route]]
name = "hot-hot"
match = {{ to = ["+15550100200"] }}
tiers = ["both"]
{hot_hot_keys}

[[route]]
name = "default"
destinations = ["a", "b"]
"#
        )
    }

    #[test]
    fn check_shows_each_routes_media_and_its_timeout() {
        let text = hot_hot_config(
            "media = \"relay\"\nmedia_timeout = \"10s\"",
            "[media]\ncarrier_address = \"127.0.0.1\"\nports = \"30000-30199\"",
        );
        let cfg = Config::parse(&text, "t.toml").unwrap();
        assert!(cfg.warnings.is_empty(), "{:#?}", cfg.warnings);
        let shown = routes_media(&cfg);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(
            lines,
            [
                "route \"hot-hot\": media relayed by pointsman (carrier side 127.0.0.1, cloud \
                 side 127.0.0.1, ports 30000-30199); an answered call without media for 10s is \
                 ended with BYE both ways",
                "route \"default\": media not relayed (the SDP goes through untouched: media \
                 flows between the carrier and the cloud)",
            ]
        );
        let cfg = Config::parse(
            &hot_hot_config(
                "media = \"relay\"\nmedia_timeout = \"0s\"",
                "[media]\ncarrier_address = \"127.0.0.1\"",
            ),
            "t.toml",
        )
        .unwrap();
        assert!(routes_media(&cfg).contains("no media timeout (media_timeout = \"0s\")"));
    }

    #[test]
    fn check_warns_of_a_hot_hot_route_whose_media_is_not_relayed() {
        let (result, warnings) = Config::parse_with_warnings(&hot_hot_config("", ""), "t.toml");
        assert!(result.is_ok());
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        let w = &warnings[0];
        assert_eq!((w.path.as_str(), w.line), ("route[0].tiers", Some(23)));
        assert!(
            w.message.contains(
                "hot-hot early media needs media = \"relay\": without it the carrier hears \
                 whichever cloud its phone follows and nothing switches when it fails"
            ),
            "{w}"
        );
        // Saying media = "off" is a decision, not an oversight.
        let (_, warnings) =
            Config::parse_with_warnings(&hot_hot_config("media = \"off\"", ""), "t.toml");
        assert!(warnings.is_empty(), "{warnings:#?}");
    }

    #[test]
    fn log_prints_the_filter_in_force_and_the_one_before() {
        use crate::logging::LogChange;
        let change = |filter: &str, previous: &str| LogChange {
            filter: filter.into(),
            previous: previous.into(),
        };
        assert_eq!(
            log_change_line(&change("pointsman=debug,info", "info")),
            "log filter: pointsman=debug,info (was info)"
        );
        assert_eq!(
            log_change_line(&change("info", "info")),
            "log filter: info (unchanged)"
        );
    }

    #[test]
    fn colour_only_on_a_terminal_and_never_under_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None), "a file or a pipe gets no escapes");
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, Some("1".into())));
        // no-color.org: an empty NO_COLOR does not count.
        assert!(colour(true, Some("".into())));
    }

    #[test]
    fn explain_takes_the_user_part_of_sip_and_tel_uris() {
        assert_eq!(user_part("+15550100911"), "+15550100911");
        assert_eq!(
            user_part("sip:+15550100911@carrier.example"),
            "+15550100911"
        );
        assert_eq!(user_part("SIPS:alice@example.com"), "alice");
        assert_eq!(
            user_part("tel:+1-555-010-0911;phone-context=x"),
            "+1-555-010-0911;phone-context=x"
        );
        assert_eq!(user_part(" 4420 "), "4420");
        assert_eq!(user_part("sip:"), "");
    }
}
