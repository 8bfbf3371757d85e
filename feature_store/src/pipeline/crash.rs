//! Fault injection for the crash-safety tests.

/// The fault-injection point a test may set with `AURUM_CRASH_AT`: the
/// process aborts there, as if killed, with no cleanup.
pub fn crash_point(point: &str) {
    static CRASH_AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = CRASH_AT.get_or_init(|| std::env::var("AURUM_CRASH_AT").ok());
    if at.as_deref() == Some(point) {
        eprintln!("AURUM_CRASH_AT={point}: aborting");
        std::process::abort();
    }
}
