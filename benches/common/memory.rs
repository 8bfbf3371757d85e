//! Process memory as Linux reports it, for the bench binaries (included
//! with `#[path]`; each bench uses some of it).
#![allow(dead_code)]

/// Resets the peak resident set (VmHWM) to the current one.
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The peak resident set since the last reset, in bytes.
pub fn peak_bytes() -> u64 {
    status_kib("VmHWM:") * 1024
}

/// The current resident set, in bytes.
pub fn resident_bytes() -> u64 {
    status_kib("VmRSS:") * 1024
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
}
