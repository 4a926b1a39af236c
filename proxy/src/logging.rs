//! The process's logs: the one `tracing` subscriber (stderr, text or JSON lines) and its filter,
//! which an operator changes while the process runs (`POST /log`, `pointsman log debug`) without
//! a restart.
//!
//! The filter starts from `POINTSMAN_LOG` (a `tracing` `EnvFilter`; `info` when it is unset,
//! empty or invalid) and sits in a `reload` layer: [`set`] swaps it for every thread at once,
//! and `tracing` rebuilds its per-callsite interest, so a `debug!` that was skipped for free
//! logs from the next event on. A filter set at run time is judged strictly ([`parse`]): every
//! directive must parse, and a bare word must be a level (`EnvFilter` would read `debgu` as a
//! target and silence everything else); a refused filter changes nothing.
//!
//! It must not: log on the SIP path itself, or hold its lock while logging.

use std::sync::{Mutex, OnceLock};
use tracing_subscriber::filter::{Directive, EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Registry;

/// The environment variable the filter starts from.
pub const ENV: &str = "POINTSMAN_LOG";
/// The filter when [`ENV`] is unset, empty or invalid.
pub const DEFAULT: &str = "info";

/// The filter in force and the handle that replaces it.
struct Control {
    handle: reload::Handle<EnvFilter, Registry>,
    /// The filter's text as it was set (normalised by [`parse`]); the lock also serialises
    /// concurrent changes.
    text: Mutex<String>,
}

static CONTROL: OnceLock<Control> = OnceLock::new();

/// A change of the log filter.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogChange {
    /// The filter now in force.
    pub filter: String,
    /// The one it replaced.
    pub previous: String,
}

/// Why the log filter was not changed (or cannot be shown).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The text is not a filter; the one in force stays.
    #[error("{0}")]
    Invalid(String),
    /// This process's logs were not set up by [`init`] (an embedded node, a test).
    #[error(
        "this process's log filter cannot be changed: its logs were not set up by `pointsman run`"
    )]
    Unavailable,
}

/// Installs the process's subscriber: logs to stderr, JSON lines when `json`, ANSI colours when
/// `ansi`, filtered by [`ENV`] through a reloadable filter. Once per process; later calls (and
/// a subscriber already installed by someone else) leave the first in place.
pub fn init(json: bool, ansi: bool) {
    let (text, filter, invalid) = from_env(std::env::var(ENV).ok());
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = if json {
        registry.with(fmt.json()).try_init()
    } else {
        registry.with(fmt).try_init()
    };
    if installed.is_ok() {
        let _ = CONTROL.set(Control {
            handle,
            text: Mutex::new(text),
        });
        if let Some(error) = invalid {
            tracing::warn!(%error, "{ENV} is not a valid filter: logging at {DEFAULT}");
        }
    }
}

/// The start filter from the value of [`ENV`]: its text, the filter, and why the value was not
/// taken (then it is [`DEFAULT`]). The variable takes what `EnvFilter` takes (a bare word is a
/// target there, as in `RUST_LOG`).
fn from_env(value: Option<String>) -> (String, EnvFilter, Option<String>) {
    let text = value.as_deref().map(normalise).unwrap_or_default();
    if text.is_empty() {
        return (DEFAULT.into(), EnvFilter::new(DEFAULT), None);
    }
    match EnvFilter::builder().parse(&text) {
        Ok(filter) => (text, filter, None),
        Err(e) => (
            DEFAULT.into(),
            EnvFilter::new(DEFAULT),
            Some(format!("{text:?}: {e}")),
        ),
    }
}

/// The directives of `text` without blanks around them or empty ones: `" a=debug, info,"` is
/// `a=debug,info`.
fn normalise(text: &str) -> String {
    text.split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

/// Judges a filter set at run time: a level (`debug`) or `EnvFilter` directives separated by
/// commas (`pointsman_protocol=debug,info`). Returns its normalised text and the filter, or
/// what is wrong with it, naming the directive.
pub fn parse(text: &str) -> Result<(String, EnvFilter), LogError> {
    let normalised = normalise(text);
    if normalised.is_empty() {
        return Err(LogError::Invalid(
            "no filter given: send a level (trace, debug, info, warn, error, off) or \
             directives such as pointsman_protocol=debug,info"
                .into(),
        ));
    }
    for directive in normalised.split(',') {
        let bare = !directive.contains(['=', '[']);
        if bare && directive.parse::<LevelFilter>().is_err() {
            return Err(LogError::Invalid(format!(
                "invalid log filter {normalised:?}: {directive:?} is not a level (trace, debug, \
                 info, warn, error, off); a target's level is written TARGET=LEVEL"
            )));
        }
        if let Err(e) = directive.parse::<Directive>() {
            return Err(LogError::Invalid(format!(
                "invalid log filter {normalised:?}: {directive:?}: {e}"
            )));
        }
    }
    let filter = EnvFilter::builder()
        .parse(&normalised)
        .map_err(|e| LogError::Invalid(format!("invalid log filter {normalised:?}: {e}")))?;
    Ok((normalised, filter))
}

/// The filter in force, as it was set.
pub fn current() -> Result<String, LogError> {
    let control = CONTROL.get().ok_or(LogError::Unavailable)?;
    Ok(control
        .text
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone())
}

/// Replaces the filter for every thread at once; an invalid `text` changes nothing. The change
/// is logged once at info ("log level changed", from, to): under the old filter when that one
/// shows it, else under the new one.
pub fn set(text: &str) -> Result<LogChange, LogError> {
    let control = CONTROL.get().ok_or(LogError::Unavailable)?;
    let (filter_text, filter) = parse(text)?;
    let mut current = control.text.lock().unwrap_or_else(|p| p.into_inner());
    let previous = current.clone();
    let changed = previous != filter_text;
    // An info line is shown by at least one of the two filters unless neither shows info.
    let shown_before = changed && tracing::enabled!(tracing::Level::INFO);
    if shown_before {
        tracing::info!(from = %previous, to = %filter_text, "log level changed");
    }
    control
        .handle
        .reload(filter)
        .map_err(|_| LogError::Unavailable)?;
    if changed && !shown_before {
        tracing::info!(from = %previous, to = %filter_text, "log level changed");
    }
    current.clone_from(&filter_text);
    Ok(LogChange {
        filter: filter_text,
        previous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_or_directives_are_taken_and_normalised() {
        for (given, normalised) in [
            ("debug", "debug"),
            (" DEBUG \n", "DEBUG"),
            (
                "pointsman_protocol=debug,info",
                "pointsman_protocol=debug,info",
            ),
            (" pointsman=trace , warn ,", "pointsman=trace,warn"),
            ("pointsman::node=debug", "pointsman::node=debug"),
            ("off", "off"),
            ("4", "4"),
            ("[call]=debug", "[call]=debug"),
            (
                "pointsman[reload]=trace,info",
                "pointsman[reload]=trace,info",
            ),
        ] {
            let (text, _) = parse(given).unwrap_or_else(|e| panic!("{given:?}: {e}"));
            assert_eq!(text, normalised, "{given:?}");
        }
    }

    #[test]
    fn a_bad_filter_is_refused_naming_the_directive() {
        let e = parse("debgu").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid log filter \"debgu\": \"debgu\" is not a level (trace, debug, info, warn, \
             error, off); a target's level is written TARGET=LEVEL"
        );
        let e = parse("info,pointsman=lots").unwrap_err().to_string();
        assert!(
            e.starts_with("invalid log filter \"info,pointsman=lots\": \"pointsman=lots\": "),
            "{e}"
        );
        for bad in ["", " , ", "=debug,*", "pointsman[=debug", "!", "info,-"] {
            assert!(
                matches!(parse(bad), Err(LogError::Invalid(_))),
                "{bad:?} taken"
            );
        }
        assert!(parse("")
            .unwrap_err()
            .to_string()
            .starts_with("no filter given"));
    }

    #[test]
    fn the_start_filter_is_the_variable_or_info() {
        let text = |value: Option<&str>| from_env(value.map(String::from)).0;
        assert_eq!(text(None), "info");
        assert_eq!(text(Some("")), "info");
        assert_eq!(text(Some(" debug ")), "debug");
        // As RUST_LOG: a bare word is a target there.
        assert_eq!(text(Some("pointsman")), "pointsman");
        let (text, _, invalid) = from_env(Some("pointsman=lots".into()));
        assert_eq!(text, "info");
        assert!(invalid.is_some_and(|e| e.starts_with("\"pointsman=lots\": ")));
    }

    #[test]
    fn without_the_subscriber_nothing_changes() {
        // Unit tests install no subscriber through `init`.
        assert_eq!(current(), Err(LogError::Unavailable));
        assert_eq!(set("debug"), Err(LogError::Unavailable));
    }
}
