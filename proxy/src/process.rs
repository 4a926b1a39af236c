//! The process's own series: what runs (`pointsman_build_info`), for how long
//! (`pointsman_uptime_seconds`, `process_start_time_seconds`), what it costs
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`) and how its config
//! reloads went (`pointsman_reloads_total`, `pointsman_last_reload_success`,
//! `pointsman_last_reload_timestamp_seconds`). The `process_*` series have the names and
//! meanings of the Prometheus client libraries' process collector, so what is built on those
//! works unchanged.
//!
//! Every series is registered once, at start, on the node's recorder, so each is in the first
//! scrape. The process figures are read from `/proc/self` when `/metrics` is scraped
//! ([`ProcessMetrics::refresh`]), never by a thread or a timer of their own; the parsers
//! ([`parse_stat`], [`parse_boot_time`], [`parse_max_open_files`]) take text and return `None`
//! on anything they do not expect. Where `/proc` cannot be read (not Linux, a sandbox without
//! it) those series keep their last value, 0 before any read.
//!
//! One difference from the client libraries: `process_cpu_seconds_total` is exported as a gauge,
//! because the exporter's counters hold whole numbers; `rate()` reads it the same.
//!
//! It must not: run on the SIP path, keep a thread, or panic on what `/proc` says.

use ::metrics::{Counter, Gauge, Key, KeyName, Label, Metadata, Recorder, SharedString};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Metric names.
pub mod name {
    pub const BUILD_INFO: &str = "pointsman_build_info";
    pub const UPTIME: &str = "pointsman_uptime_seconds";
    pub const START_TIME: &str = "process_start_time_seconds";
    pub const CPU: &str = "process_cpu_seconds_total";
    pub const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
    pub const VIRTUAL_MEMORY: &str = "process_virtual_memory_bytes";
    pub const OPEN_FDS: &str = "process_open_fds";
    pub const MAX_FDS: &str = "process_max_fds";
    pub const RELOADS: &str = "pointsman_reloads_total";
    pub const LAST_RELOAD_SUCCESS: &str = "pointsman_last_reload_success";
    pub const LAST_RELOAD_TIMESTAMP: &str = "pointsman_last_reload_timestamp_seconds";
}

/// The `result` label values of `pointsman_reloads_total`.
pub const RELOAD_RESULTS: [&str; 2] = ["ok", "refused"];

/// Every gauge (all but the reload counter): its name and help text.
const GAUGES: [(&str, &str); 10] = [
    (
        name::BUILD_INFO,
        "Always 1; the version label says which pointsman runs",
    ),
    (
        name::UPTIME,
        "Seconds since the node started (GET /node's uptime)",
    ),
    (
        name::START_TIME,
        "Start time of the process since the Unix epoch, in seconds",
    ),
    (
        name::CPU,
        "User and system CPU time spent by the process, in seconds (a counter, exported as a gauge \
         because it is fractional)",
    ),
    (
        name::RESIDENT_MEMORY,
        "Resident memory size of the process, in bytes",
    ),
    (
        name::VIRTUAL_MEMORY,
        "Virtual memory size of the process, in bytes",
    ),
    (name::OPEN_FDS, "Open file descriptors of the process"),
    (
        name::MAX_FDS,
        "The process's limit of open file descriptors (soft RLIMIT_NOFILE)",
    ),
    (
        name::LAST_RELOAD_SUCCESS,
        "1 if the last config reload took effect (or none was tried since start), 0 if it was \
         refused and the rules before it still run",
    ),
    (
        name::LAST_RELOAD_TIMESTAMP,
        "When the config was last loaded or a reload refused (the start counts), seconds since \
         the Unix epoch",
    ),
];

const RELOADS_HELP: &str =
    "Config reloads (SIGHUP or POST /reload), by result: ok (the new rules run) or refused";

const METADATA: Metadata<'static> =
    Metadata::new(module_path!(), ::metrics::Level::INFO, Some(module_path!()));

/// The handles of the process's series, and what turning `/proc`'s units into them needs.
pub struct ProcessMetrics {
    started: Instant,
    units: Option<Units>,
    uptime: Gauge,
    cpu: Gauge,
    resident_memory: Gauge,
    virtual_memory: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    /// Indexed like [`RELOAD_RESULTS`].
    reloads: [Counter; 2],
    last_reload_success: Gauge,
    last_reload_timestamp: Gauge,
}

/// The kernel's units in `/proc/self/stat`.
#[derive(Clone, Copy, Debug)]
struct Units {
    /// Clock ticks per second (`_SC_CLK_TCK`).
    ticks_per_second: f64,
    /// Bytes per page (`_SC_PAGESIZE`).
    page_size: f64,
}

impl Units {
    fn of_this_system() -> Option<Units> {
        // SAFETY: sysconf(3) only reads a system setting; it takes and returns plain integers.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        (ticks > 0 && page > 0).then_some(Units {
            ticks_per_second: ticks as f64,
            page_size: page as f64,
        })
    }
}

impl ProcessMetrics {
    /// Describes and registers every series on `recorder`: `pointsman_build_info` at 1, the
    /// start time, the reload series as after a successful load now (the start's), and the
    /// process figures as `/proc` says now. `started`: when the node started (its uptime's
    /// origin).
    pub fn register(recorder: &dyn Recorder, started: Instant) -> ProcessMetrics {
        for (metric, help) in GAUGES {
            recorder.describe_gauge(
                KeyName::from_const_str(metric),
                None,
                SharedString::const_str(help),
            );
        }
        recorder.describe_counter(
            KeyName::from_const_str(name::RELOADS),
            None,
            SharedString::const_str(RELOADS_HELP),
        );
        let gauge = |metric: &'static str| {
            recorder.register_gauge(&Key::from_static_name(metric), &METADATA)
        };
        let build = Key::from_parts(
            name::BUILD_INFO,
            vec![Label::new("version", env!("CARGO_PKG_VERSION"))],
        );
        recorder.register_gauge(&build, &METADATA).set(1.0);
        let units = Units::of_this_system();
        let start_time = units
            .and_then(process_start_time)
            .unwrap_or_else(|| unix_seconds(SystemTime::now()) - started.elapsed().as_secs_f64());
        gauge(name::START_TIME).set(start_time);
        let metrics = ProcessMetrics {
            started,
            units,
            uptime: gauge(name::UPTIME),
            cpu: gauge(name::CPU),
            resident_memory: gauge(name::RESIDENT_MEMORY),
            virtual_memory: gauge(name::VIRTUAL_MEMORY),
            open_fds: gauge(name::OPEN_FDS),
            max_fds: gauge(name::MAX_FDS),
            reloads: RELOAD_RESULTS.map(|result| {
                let key = Key::from_parts(name::RELOADS, vec![Label::new("result", result)]);
                recorder.register_counter(&key, &METADATA)
            }),
            last_reload_success: gauge(name::LAST_RELOAD_SUCCESS),
            last_reload_timestamp: gauge(name::LAST_RELOAD_TIMESTAMP),
        };
        metrics.last_reload_success.set(1.0);
        metrics
            .last_reload_timestamp
            .set(unix_seconds(SystemTime::now()));
        metrics.refresh();
        metrics
    }

    /// Reads the uptime and `/proc/self` into the gauges (on each scrape). What cannot be read
    /// keeps its last value.
    pub fn refresh(&self) {
        self.uptime.set(self.started.elapsed().as_secs_f64());
        let stat = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|text| parse_stat(&text));
        if let (Some(stat), Some(units)) = (stat, self.units) {
            self.cpu
                .set(stat.utime.saturating_add(stat.stime) as f64 / units.ticks_per_second);
            self.resident_memory
                .set(stat.rss_pages as f64 * units.page_size);
            self.virtual_memory.set(stat.vsize as f64);
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            // The descriptor that reads the directory is counted too, as the client libraries do.
            self.open_fds.set(entries.count() as f64);
        }
        if let Some(max) = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|text| parse_max_open_files(&text))
        {
            self.max_fds.set(max as f64);
        }
    }

    /// Counts a reload (`ok`: it took effect) and sets the last reload's result and time.
    pub fn reloaded(&self, ok: bool) {
        self.reloads[usize::from(!ok)].increment(1);
        self.last_reload_success.set(if ok { 1.0 } else { 0.0 });
        self.last_reload_timestamp
            .set(unix_seconds(SystemTime::now()));
    }
}

/// Seconds since the Unix epoch (0 for a clock before it).
fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// When this process started, in seconds since the Unix epoch: the boot time plus the start in
/// ticks after boot.
fn process_start_time(units: Units) -> Option<f64> {
    let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let boot = parse_boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
    Some(boot as f64 + stat.starttime as f64 / units.ticks_per_second)
}

/// What this module reads from `/proc/self/stat` (proc(5)), in the kernel's units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// CPU time in user mode, in clock ticks (field 14).
    pub utime: u64,
    /// CPU time in kernel mode, in clock ticks (field 15).
    pub stime: u64,
    /// Start time after boot, in clock ticks (field 22).
    pub starttime: u64,
    /// Virtual memory size, in bytes (field 23).
    pub vsize: u64,
    /// Resident set size, in pages (field 24).
    pub rss_pages: u64,
}

/// Parses the one line of `/proc/PID/stat`. The command name (field 2) is in parentheses and
/// may hold spaces and parentheses itself, so the fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let after_name = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = after_name.split_ascii_whitespace().collect();
    // fields[0] is field 3 (the state).
    let field = |n: usize| -> Option<u64> { fields.get(n.checked_sub(3)?)?.parse().ok() };
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
        vsize: field(23)?,
        // Signed in the kernel (%ld); never negative for a live process.
        rss_pages: fields.get(24 - 3)?.parse::<i64>().ok()?.max(0) as u64,
    })
}

/// The boot time in seconds since the Unix epoch: the `btime` line of `/proc/stat`.
pub fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime")?.trim().parse().ok())
}

/// The soft limit of open files from `/proc/PID/limits`; `None` when unlimited or unreadable.
pub fn parse_max_open_files(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_ascii_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line, with a command name that has a space and a parenthesis in it.
    const STAT: &str = "4242 (pointsman (x) y) S 1 4242 4242 0 -1 4194560 9573 0 0 0 \
        1234 567 0 0 20 0 9 0 987654 1234567890 4321 18446744073709551615 1 1 0 0 0 0 0 4096 \
        17920 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn stat_gives_cpu_ticks_start_and_memory() {
        assert_eq!(
            parse_stat(STAT),
            Some(Stat {
                utime: 1234,
                stime: 567,
                starttime: 987_654,
                vsize: 1_234_567_890,
                rss_pages: 4321,
            })
        );
    }

    #[test]
    fn a_stat_line_that_is_cut_short_or_garbled_gives_nothing() {
        for bad in [
            "",
            "4242 (pointsman",
            "4242 (pointsman) S 1 2 3",
            "4242 pointsman S 1 4242 4242 0 -1 4194560 9573 0 0 0 1234 567 0 0 20 0 9 0 987654",
            &STAT.replace(" 1234 567 ", " 12x4 567 "),
            &STAT.replace(" 987654 ", " -5 "),
            "(\u{1F600}) ) ) )",
        ] {
            assert_eq!(parse_stat(bad), None, "{bad:?}");
        }
        // A negative RSS (never for a live process) is taken as 0, not an error.
        let negative = STAT.replace(" 1234567890 4321 ", " 1234567890 -3 ");
        assert_eq!(parse_stat(&negative).map(|s| s.rss_pages), Some(0));
    }

    #[test]
    fn boot_time_is_the_btime_line() {
        let text = "cpu  1 2 3 4\ncpu0 1 2 3 4\nintr 5 6\nctxt 99\nbtime 1700000000\n\
                    processes 12\n";
        assert_eq!(parse_boot_time(text), Some(1_700_000_000));
        assert_eq!(parse_boot_time("cpu 1 2\nctxt 3\n"), None);
        assert_eq!(parse_boot_time("btime soon\n"), None);
    }

    #[test]
    fn max_open_files_is_the_soft_limit() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            1024                 524288               files     \n\
                    Max locked memory         8388608              8388608              bytes     \n";
        assert_eq!(parse_max_open_files(text), Some(1024));
        let unlimited = text.replace(
            "1024                 524288",
            "unlimited            unlimited",
        );
        assert_eq!(parse_max_open_files(&unlimited), None);
        assert_eq!(parse_max_open_files("Max processes 10 10\n"), None);
        assert_eq!(parse_max_open_files(""), None);
    }

    /// The rendered value of the series `series` (name and labels as exported).
    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    }

    #[test]
    fn every_series_is_there_from_the_start_with_its_help() {
        let (m, h) = crate::exporter::local::<&str, &str>(&[], &[]);
        let started = Instant::now();
        let process = ProcessMetrics::register(m.recorder(), started);
        let text = h.render();
        for (metric, _) in GAUGES {
            assert!(
                text.contains(&format!("# HELP {metric} ")),
                "{metric}:\n{text}"
            );
        }
        assert!(text.contains(&format!("# HELP {} {RELOADS_HELP}\n", name::RELOADS)));
        assert_eq!(
            value(
                &text,
                &format!(
                    "pointsman_build_info{{version=\"{}\"}}",
                    env!("CARGO_PKG_VERSION")
                )
            ),
            1.0
        );
        assert_eq!(value(&text, "pointsman_reloads_total{result=\"ok\"}"), 0.0);
        assert_eq!(
            value(&text, "pointsman_reloads_total{result=\"refused\"}"),
            0.0
        );
        assert_eq!(value(&text, "pointsman_last_reload_success"), 1.0);
        let now = unix_seconds(SystemTime::now());
        let loaded = value(&text, "pointsman_last_reload_timestamp_seconds");
        assert!((now - 60.0..=now).contains(&loaded), "{loaded} vs {now}");
        let start = value(&text, "process_start_time_seconds");
        assert!(start <= now && start > now - 86_400.0 * 365.0, "{start}");
        // This test process's own figures, read from /proc.
        assert!(
            value(&text, "process_resident_memory_bytes") > 1e6,
            "{text}"
        );
        assert!(value(&text, "process_virtual_memory_bytes") > 1e6, "{text}");
        assert!(value(&text, "process_cpu_seconds_total") >= 0.0);
        assert!(value(&text, "process_open_fds") >= 3.0, "{text}");
        assert!(value(&text, "process_max_fds") >= 3.0, "{text}");

        // Uptime and CPU grow with each refresh (CPU in clock ticks: burn until one passes, on a
        // machine busy with other work too).
        let (cpu, uptime) = (
            value(&text, "process_cpu_seconds_total"),
            value(&text, "pointsman_uptime_seconds"),
        );
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        let later = loop {
            let burn = Instant::now();
            while burn.elapsed() < std::time::Duration::from_millis(20) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            process.refresh();
            let later = h.render();
            if value(&later, "process_cpu_seconds_total") > cpu {
                break later;
            }
            assert!(Instant::now() < deadline, "CPU time never grew:\n{later}");
        };
        assert!(
            value(&later, "pointsman_uptime_seconds") > uptime,
            "{later}"
        );
    }

    #[test]
    fn reloads_are_counted_by_result_and_the_last_one_is_kept() {
        let (m, h) = crate::exporter::local::<&str, &str>(&[], &[]);
        let process = ProcessMetrics::register(m.recorder(), Instant::now());
        process.reloaded(true);
        process.reloaded(false);
        process.reloaded(false);
        let text = h.render();
        assert_eq!(value(&text, "pointsman_reloads_total{result=\"ok\"}"), 1.0);
        assert_eq!(
            value(&text, "pointsman_reloads_total{result=\"refused\"}"),
            2.0
        );
        assert_eq!(value(&text, "pointsman_last_reload_success"), 0.0);
        process.reloaded(true);
        assert_eq!(value(&h.render(), "pointsman_last_reload_success"), 1.0);
    }
}
