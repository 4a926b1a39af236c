//! What a worker thread asks of the kernel's scheduler so that a datagram is served at once.
//!
//! A SIP message needs a few microseconds of a worker, but on a busy machine the worker waits
//! for whatever else holds the CPU when the datagram wakes it: under the default fair policy a
//! task that just woke does not preempt one whose time slice has not run out, so the wait can be
//! a whole slice (milliseconds). Two remedies:
//!
//! - a short slice (Linux 6.12 and later, EEVDF): the worker asks for slices of `slice` rather
//!   than the default (about 1–3 ms). Its virtual deadlines come sooner, so on wake-up it
//!   preempts a task with a longer slice. Its share of the CPU is unchanged (that is the
//!   weight, i.e. nice), it needs no privilege, and older kernels ignore it.
//! - SCHED_FIFO: the worker runs ahead of every ordinary task. Needs CAP_SYS_NICE, and a
//!   runaway worker could starve the machine (the kernel keeps 5 % for others), so it is opt-in.

use std::io;
use std::time::Duration;

/// Slices the kernel accepts for a fair task (it clamps anything outside).
pub const SLICE_RANGE: (Duration, Duration) =
    (Duration::from_micros(100), Duration::from_millis(100));

/// Asks for time slices of `slice` for the calling thread, keeping its policy and nice value.
/// Returns the slice the kernel then reports, or `None` when it reports none (a kernel before
/// 6.12, where the request is accepted and ignored).
pub fn set_slice(slice: Duration) -> io::Result<Option<Duration>> {
    let mut attr = get_attr()?;
    if attr.sched_policy != libc::SCHED_OTHER as u32
        && attr.sched_policy != libc::SCHED_BATCH as u32
    {
        return Err(io::Error::other(
            "the thread is not under the fair scheduler",
        ));
    }
    attr.sched_runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
    // SAFETY: pid 0 is the calling thread; `attr` is a valid sched_attr whose size field says so.
    if unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0,
            &attr as *const libc::sched_attr,
            0,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let now = get_attr()?;
    Ok((now.sched_runtime > 0).then(|| Duration::from_nanos(now.sched_runtime)))
}

fn get_attr() -> io::Result<libc::sched_attr> {
    let size = std::mem::size_of::<libc::sched_attr>();
    // SAFETY: sched_attr is plain integers, for which all zeroes is a valid value.
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    attr.size = size as u32;
    // SAFETY: pid 0 is the calling thread; the kernel writes at most `size` bytes into `attr`.
    if unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut libc::sched_attr,
            size as libc::c_uint,
            0,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // The kernel writes its own struct size here; `set_slice` hands the struct back as ours.
    attr.size = size as u32;
    Ok(attr)
}

/// Puts the calling thread under SCHED_FIFO at `priority`: a datagram then wakes it ahead of
/// ordinary processes on a busy machine. Refused without CAP_SYS_NICE (the thread then runs as
/// before).
pub fn set_realtime(priority: u8) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for SCHED_FIFO.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_slice_is_granted_to_the_calling_thread_alone_where_the_kernel_has_them() {
        std::thread::spawn(|| {
            let before = get_attr().expect("sched_getattr");
            let granted = set_slice(Duration::from_micros(300)).expect("sched_setattr");
            let after = get_attr().expect("sched_getattr");
            assert_eq!(after.sched_policy, before.sched_policy);
            assert_eq!(after.sched_nice, before.sched_nice);
            if let Some(slice) = granted {
                assert_eq!(slice, Duration::from_micros(300));
            }
            granted
        })
        .join()
        .expect("thread");
        // Another thread of the process keeps its own slice.
        let here = get_attr().expect("sched_getattr");
        assert_ne!(here.sched_runtime, 300_000);
    }
}
