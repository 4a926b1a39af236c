//! Moves the program's own machine code onto 2 MB pages at start-up.
//!
//! Handling one SIP message runs code spread over a hundred or more 4 KB pages of the binary.
//! Whenever the CPU's TLB has been emptied (on a virtual machine: each time the hypervisor took
//! the CPU away, hundreds of times a second on a shared host), every one of those pages costs a
//! page walk before the message gets on: measured on the project's VM, touching 400 pages after
//! such a flush takes ~120 µs at the 99th percentile on 4 KB pages and ~5 µs on 2 MB pages. The
//! kernel maps a program's code from its file with 4 KB pages, so the code is copied into
//! anonymous memory the kernel backs with huge pages (transparent huge pages, `madvise` mode
//! suffices) and moved over the original with one `mremap`: the bytes at every address stay the
//! same, so code running meanwhile is not disturbed. Huge pages must start on a 2 MB boundary:
//! the binary is linked with its segments 2 MB apart (`build.rs`), so the unmapped gaps around
//! the code let the copy cover it whole, from the boundary below it to the one above.
//!
//! The price: profilers that read symbols through the file mapping (`perf`) see the moved
//! stretches as anonymous memory; `node.huge_text = false` keeps the file mapping.

use std::io;

/// The huge page size this module works with (x86-64 and aarch64 with 4 KB base pages).
pub const HUGE_PAGE: usize = 2 << 20;

/// What [`move_text_to_huge_pages`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Bytes of code now in anonymous memory (whole huge pages).
    pub bytes: usize,
    /// Of those, bytes the kernel actually backs with huge pages.
    pub huge: usize,
}

/// Moves the 2 MB-aligned part of this program's code onto huge pages. Call it before other
/// threads start. `Ok(None)`: nothing to do (code smaller than an aligned huge page, or
/// transparent huge pages off).
pub fn move_text_to_huge_pages() -> io::Result<Option<Moved>> {
    if !transparent_huge_pages_allowed() {
        return Ok(None);
    }
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let here = move_text_to_huge_pages as fn() -> io::Result<Option<Moved>> as usize;
    let Some(code) = code_mapping(&maps, here) else {
        return Err(io::Error::other("no executable mapping holds this code"));
    };
    let Some((from, to)) = huge_span(&code, HUGE_PAGE) else {
        return Ok(None);
    };
    let len = to - from;
    // SAFETY: each call below is a plain system call on memory this function maps itself, or
    // (the copy and the final mremap) on [from, to), which is mapped, readable code of this
    // program. The copy leaves its bytes unchanged at every address.
    unsafe {
        let reserved = libc::mmap(
            std::ptr::null_mut(),
            len + HUGE_PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if reserved == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let reserved = reserved as usize;
        let staging = reserved.next_multiple_of(HUGE_PAGE);
        // Give back the unaligned head and tail of the reservation.
        if staging > reserved {
            libc::munmap(reserved as *mut libc::c_void, staging - reserved);
        }
        let tail = reserved + len + HUGE_PAGE - (staging + len);
        if tail > 0 {
            libc::munmap((staging + len) as *mut libc::c_void, tail);
        }
        let fail = |e: io::Error| {
            libc::munmap(staging as *mut libc::c_void, len);
            Err(e)
        };
        if libc::madvise(staging as *mut libc::c_void, len, libc::MADV_HUGEPAGE) != 0 {
            return fail(io::Error::last_os_error());
        }
        // The code itself; what the span adds around it (unmapped before) stays zero.
        let (start, end) = (code.start.max(from), code.end.min(to));
        std::ptr::copy_nonoverlapping(
            start as *const u8,
            (staging + (start - from)) as *mut u8,
            end - start,
        );
        if libc::mprotect(
            staging as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_EXEC,
        ) != 0
        {
            return fail(io::Error::last_os_error());
        }
        let moved = libc::mremap(
            staging as *mut libc::c_void,
            len,
            len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            from as *mut libc::c_void,
        );
        if moved == libc::MAP_FAILED {
            return fail(io::Error::last_os_error());
        }
    }
    let huge = std::fs::read_to_string("/proc/self/smaps")
        .map(|smaps| anon_huge_bytes(&smaps, from))
        .unwrap_or(0);
    Ok(Some(Moved { bytes: len, huge }))
}

/// Whether the kernel may back `madvise`d memory with transparent huge pages.
fn transparent_huge_pages_allowed() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|s| !s.contains("[never]"))
}

/// The executable mapping that holds some address, and where its neighbours end and begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CodeMapping {
    start: usize,
    end: usize,
    /// End of the mapping below it (0 if none).
    below: usize,
    /// Start of the mapping above it (`usize::MAX` if none).
    above: usize,
}

/// The executable mapping in `maps` (the text of /proc/self/maps) that holds `address`.
fn code_mapping(maps: &str, address: usize) -> Option<CodeMapping> {
    let mappings: Vec<(usize, usize, bool)> = maps
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let (range, perms) = (fields.next()?, fields.next()?);
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            Some((start, end, perms.as_bytes().get(2) == Some(&b'x')))
        })
        .collect();
    let i = mappings
        .iter()
        .position(|&(start, end, exec)| exec && (start..end).contains(&address))?;
    let (start, end, _) = mappings[i];
    Some(CodeMapping {
        start,
        end,
        below: i.checked_sub(1).map_or(0, |b| mappings[b].1),
        above: mappings.get(i + 1).map_or(usize::MAX, |a| a.0),
    })
}

/// The span of whole huge pages to put `code` on: out to the `align` boundaries around it where
/// nothing else is mapped up to them, else in to the boundaries inside it. `None` if empty.
fn huge_span(code: &CodeMapping, align: usize) -> Option<(usize, usize)> {
    let down = code.start - code.start % align;
    let from = if down >= code.below {
        down
    } else {
        code.start.checked_next_multiple_of(align)?
    };
    let to = match code.end.checked_next_multiple_of(align) {
        Some(up) if up <= code.above => up,
        _ => code.end - code.end % align,
    };
    (to > from).then_some((from, to))
}

/// `AnonHugePages` of the mapping that starts at `start`, in bytes, from the text of
/// /proc/self/smaps.
fn anon_huge_bytes(smaps: &str, start: usize) -> usize {
    let header = format!("{start:x}-");
    smaps
        .lines()
        .skip_while(|l| !l.starts_with(&header))
        .skip(1)
        .take_while(|l| !l.contains('-') || l.contains(':'))
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: usize = 1 << 20;

    fn code(start: usize, end: usize, below: usize, above: usize) -> CodeMapping {
        CodeMapping {
            start,
            end,
            below,
            above,
        }
    }

    #[test]
    fn the_span_reaches_out_to_the_boundaries_where_nothing_else_is_mapped() {
        // The layout of the binary linked 2 MB apart: gaps on both sides of the code.
        assert_eq!(
            huge_span(&code(0x3b0000, 0x910000, 0x1b1000, 0xb0f000), HUGE_PAGE),
            Some((2 * MB, 10 * MB))
        );
        // A neighbour inside the boundary: that side stops at the boundary inside the code.
        assert_eq!(
            huge_span(&code(0x3b0000, 0x910000, 0x3a0000, 0x920000), HUGE_PAGE),
            Some((4 * MB, 8 * MB))
        );
        // Already aligned.
        assert_eq!(
            huge_span(&code(4 * MB, 8 * MB, 4 * MB, 8 * MB), HUGE_PAGE),
            Some((4 * MB, 8 * MB))
        );
        // Small code hemmed in by neighbours: nothing.
        assert_eq!(
            huge_span(
                &code(4 * MB + 4096, 5 * MB, 4 * MB, 5 * MB + 4096),
                HUGE_PAGE
            ),
            None
        );
        // At the top of the address space there is no boundary above: the end comes in.
        let top = usize::MAX - MB + 1;
        assert_eq!(
            huge_span(&code(top - 3 * MB, top - 4096, 0, usize::MAX), HUGE_PAGE),
            Some((top - 3 * MB, top - MB))
        );
    }

    #[test]
    fn the_code_mapping_is_found_by_an_address_inside_it_with_its_neighbours() {
        let maps = "\
55d0a0000000-55d0a01b1000 r--p 00000000 fe:00 12 /usr/bin/pointsman
55d0a03b0000-55d0a0910000 r-xp 001b0000 fe:00 12 /usr/bin/pointsman
55d0a0b0f000-55d0a0b39000 rw-p 0070f000 fe:00 12 /usr/bin/pointsman
7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0 [stack]
";
        assert_eq!(
            code_mapping(maps, 0x55d0a0500000),
            Some(code(
                0x55d0a03b0000,
                0x55d0a0910000,
                0x55d0a01b1000,
                0x55d0a0b0f000
            ))
        );
        // Readable but not executable, or outside every mapping: none.
        assert_eq!(code_mapping(maps, 0x55d0a0000100), None);
        assert_eq!(code_mapping(maps, 0x1000), None);
        assert_eq!(code_mapping("garbage\n\n", 0x1000), None);
        // The first and only mapping: open on both sides.
        assert_eq!(
            code_mapping("400000-600000 r-xp 0 0:0 0\n", 0x500000),
            Some(code(0x400000, 0x600000, 0, usize::MAX))
        );
    }

    #[test]
    fn huge_page_bytes_are_read_from_the_mappings_own_entry() {
        let smaps = "\
55d0a0200000-55d0a0600000 r-xp 00000000 00:00 0
Size:               4096 kB
AnonHugePages:      4096 kB
55d0a0600000-55d0a071b000 r-xp 00600000 fe:00 12 /usr/bin/pointsman
Size:               1132 kB
AnonHugePages:         0 kB
";
        assert_eq!(anon_huge_bytes(smaps, 0x55d0a0200000), 4 << 20);
        assert_eq!(anon_huge_bytes(smaps, 0x55d0a0600000), 0);
        assert_eq!(anon_huge_bytes(smaps, 0x1000), 0);
    }

    #[test]
    fn moved_code_still_runs_and_sits_on_huge_pages_where_the_kernel_has_them() {
        // In a child process: the move is meant for a process that has not started threads.
        let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "hugetext::tests::child_moves_its_text",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("POINTSMAN_HUGETEXT_CHILD", "1")
            .output()
            .expect("child");
        let out = String::from_utf8_lossy(&status.stdout);
        assert!(status.status.success(), "{out}");
        assert!(out.contains("1 passed"), "{out}");
    }

    #[test]
    fn child_moves_its_text() {
        if std::env::var_os("POINTSMAN_HUGETEXT_CHILD").is_none() {
            return;
        }
        let before: u64 = (1..=20u64).map(|n| n * n).sum();
        let moved = move_text_to_huge_pages().expect("move");
        // Code in the moved stretch still runs: the formatting, the test harness after it.
        let after: u64 = (1..=20u64).map(|n| n * n).sum();
        assert_eq!(before, after);
        if let Some(m) = moved {
            assert!(m.bytes >= HUGE_PAGE && m.bytes % HUGE_PAGE == 0, "{m:?}");
            assert!(m.huge <= m.bytes, "{m:?}");
            println!("moved {m:?}");
        }
    }
}
