//! The load bench's report script (benches/load/report.py, Python standard library only): its
//! timeline picture of a run, from SIPp statistics files written the way the bench's SIPp writes
//! them (`-trace_stat -fd 1`: cumulative counts, a row a second).

use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .join("benches/load/report.py")
}

/// A SIPp statistics file: `column` counts `per_second(t)` calls in second `t`, for `seconds`.
fn stat_file(path: &Path, columns: &[(&str, &dyn Fn(u32) -> u32)], seconds: u32) {
    let mut text = String::from("ElapsedTime(C)");
    for (name, _) in columns {
        text.push(';');
        text.push_str(name);
    }
    text.push_str(";\n");
    let mut totals = vec![0u32; columns.len()];
    for t in 0..=seconds {
        text.push_str(&format!("00:00:{t:02}:000000"));
        for (i, (_, rate)) in columns.iter().enumerate() {
            if t > 0 {
                totals[i] += rate(t);
            }
            text.push_str(&format!(";{}", totals[i]));
        }
        text.push_str(";\n");
    }
    std::fs::write(path, text).expect("write a statistics file");
}

#[test]
fn a_runs_timeline_has_a_line_per_series_with_a_point_a_second_and_the_failover_in_it() {
    let dir = std::env::temp_dir().join(format!("pointsman-bench-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    // 10 s at 100 calls/s: the primary takes them for 6 s, then the secondary; 5 fail at 7 s.
    stat_file(
        &dir.join("primary.csv"),
        &[("IncomingCall(C)", &|t| if t <= 6 { 100 } else { 0 })],
        10,
    );
    stat_file(
        &dir.join("secondary.csv"),
        &[("IncomingCall(C)", &|t| if t > 6 { 100 } else { 0 })],
        10,
    );
    stat_file(
        &dir.join("uac.csv"),
        &[
            ("SuccessfulCall(C)", &|t| if t == 7 { 95 } else { 100 }),
            ("FailedCall(C)", &|t| if t == 7 { 5 } else { 0 }),
        ],
        10,
    );
    let out = Command::new("python3")
        .arg(script())
        .arg("timeline")
        .arg(&dir)
        .output()
        .expect("python3 runs (Debian package python3)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = String::from_utf8(out.stdout).expect("text");
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    // The points of each series: (x, y), y growing downwards.
    let series = |label: &str| -> Vec<(f64, f64)> {
        let line = svg
            .lines()
            .find(|l| l.contains(&format!("data-label=\"{label}\"")))
            .unwrap_or_else(|| panic!("no line for {label:?}:\n{svg}"));
        let points = line
            .split("points=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("points");
        points
            .split_whitespace()
            .map(|p| {
                let (x, y) = p.split_once(',').expect("x,y");
                (x.parse().expect("x"), y.parse().expect("y"))
            })
            .collect()
    };
    let primary = series("INVITEs to the primary");
    let secondary = series("INVITEs to the secondary");
    let failed = series("calls failed");
    assert_eq!((primary.len(), secondary.len(), failed.len()), (10, 10, 10));
    // The failover: the primary's line drops to the floor where the secondary's rises.
    let (floor, high) = (primary[9].1, primary[0].1);
    assert!(high < floor, "100/s is drawn above 0/s");
    assert_eq!(secondary[0].1, floor);
    assert_eq!(secondary[9].1, high);
    assert_eq!(primary[6].1, floor);
    // The failures: one bump, at 7 s.
    let bumps: Vec<usize> = (0..10).filter(|&i| failed[i].1 < floor).collect();
    assert_eq!(bumps, [6]);
}
