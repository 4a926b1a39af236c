//! Tells the scheduler tests whether this kernel shows each task's slice (`se.slice` in
//! `/proc/<pid>/sched`: Linux 6.12+ with scheduler debug). Where it does not, they are ignored
//! with that reason, visibly, rather than passing unchecked.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kernel_shows_task_slice)");
    println!("cargo::rerun-if-changed=build.rs");
    let shows = std::fs::read_to_string("/proc/self/sched")
        .map(|s| s.lines().any(|l| l.starts_with("se.slice")))
        .unwrap_or(false);
    if shows {
        println!("cargo::rustc-cfg=kernel_shows_task_slice");
    }
}
