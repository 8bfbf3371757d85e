//! Durations as the project file writes them: `90s`, `30m`, `1h`, `7d`,
//! `2w`.

use std::time::Duration;

/// Parses a duration such as `90s`, `30m`, `1h`, `7d` or `2w`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let unit_seconds: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    // Ten years at most: windows and TTLs longer than that are mistakes,
    // and the bound keeps every microsecond computation far from overflow.
    let seconds = n.checked_mul(unit_seconds)?;
    (n > 0 && seconds <= 3_650 * 86_400).then(|| Duration::from_secs(seconds))
}

/// Formats a duration the way [`parse_duration`] reads it, in the largest
/// whole unit up to days (feature names say `7d`, not `1w`).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s.is_multiple_of(size) && s >= size {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}
