//! Packet time: nanoseconds since the Unix epoch, and the calendar conversions the CDR and the spool need.
//!
//! All timers run on packet time, so an offline run is exact and repeatable; nothing here reads the wall clock.

/// Nanoseconds since 1970-01-01T00:00:00Z.
pub type Nanos = i64;

pub const NANOS_PER_SEC: i64 = 1_000_000_000;

pub fn secs(s: i64) -> Nanos {
    s.saturating_mul(NANOS_PER_SEC)
}

/// Seconds as f64 (CDR durations and JSON).
pub fn as_secs_f64(n: Nanos) -> f64 {
    n as f64 / NANOS_PER_SEC as f64
}

/// Milliseconds as f64 (jitter arithmetic).
pub fn as_millis_f64(n: Nanos) -> f64 {
    n as f64 / 1_000_000.0
}

/// CPU seconds the calling thread has used (CLOCK_THREAD_CPUTIME_ID), for per-core rates.
pub fn thread_cpu_secs() -> f64 {
    crate::os::thread_cpu_time().map(|d| d.as_secs() as f64 + d.subsec_nanos() as f64 / 1e9).unwrap_or(0.0)
}

/// Seconds of the monotonic clock (CLOCK_MONOTONIC): liveness stamps that wall-clock steps must not move.
pub fn monotonic_secs() -> i64 {
    crate::os::monotonic().map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A broken-down calendar time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
}

/// Days since the epoch → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since the epoch, the inverse of `civil_from_days` (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The calendar day after (y, m, d).
pub fn next_day(y: i32, m: u32, d: u32) -> (i32, u32, u32) {
    let (y, m, d) = civil_from_days(days_from_civil(y as i64, m, d) + 1);
    (y as i32, m, d)
}

pub fn civil_utc(t: Nanos) -> Civil {
    let secs = t.div_euclid(NANOS_PER_SEC);
    let sub = t.rem_euclid(NANOS_PER_SEC);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        month,
        day,
        hour: (sod / 3600) as u32,
        minute: ((sod % 3600) / 60) as u32,
        second: (sod % 60) as u32,
        micros: (sub / 1000) as u32,
    }
}

/// Calendar time in UTC (`utc = yes`) or in the host's local time, as the spool, the database and the CDR log
/// name days and minutes.
/// The host clock, in nanoseconds since the epoch.
pub fn wall_clock() -> Nanos {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

pub fn civil(t: Nanos, utc: bool) -> Civil {
    if utc {
        civil_utc(t)
    } else {
        civil_local(t)
    }
}

/// Local time of the host (the spool's directory names follow it unless `utc = yes`).
pub fn civil_local(t: Nanos) -> Civil {
    let secs = t.div_euclid(NANOS_PER_SEC);
    let sub = t.rem_euclid(NANOS_PER_SEC);
    let Ok(tm) = crate::os::localtime(secs) else { return civil_utc(t) };
    Civil {
        year: tm.tm_year as i64 + 1900,
        month: (tm.tm_mon + 1) as u32,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        minute: tm.tm_min as u32,
        second: tm.tm_sec as u32,
        micros: (sub / 1000) as u32,
    }
}

/// RFC 3339 in UTC with microseconds, e.g. `2024-01-02T03:04:05.123456Z`.
pub fn rfc3339_utc(t: Nanos) -> String {
    let c = civil_utc(t);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", c.year, c.month, c.day, c.hour, c.minute, c.second, c.micros)
}

/// RFC 3339 UTC (`2023-11-14T22:13:20.250000Z`) → nanoseconds since the epoch.
pub fn parse_rfc3339_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = s.get(19..)?.trim_end_matches('Z');
    let nanos = match frac.strip_prefix('.') {
        Some(f) if !f.is_empty() && f.len() <= 9 => f.parse::<i64>().ok()? * 10i64.pow(9 - f.len() as u32),
        _ => 0,
    };
    let days = days_from_civil(y, u32::try_from(mo).ok()?, u32::try_from(d).ok()?);
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) * 1_000_000_000) + nanos)
}

/// A time a sender wrote (a HEP header's, an IPFIX record's, a mirrored packet's), held within `window` of
/// when it was received: a sender's clock may be off, but one that reads 1970 or 2106 (no RTC, no NTP, a
/// corrupt header) would put its calls' times, spool folders and database partitions anywhere and leave their
/// timers meaningless. A time outside the window is moved to its edge, so that the sender's packets keep the
/// receive time's order and spacing there. A window of 0 or less takes the sender's time as it is.
pub fn clamp_to_receive(sender_ts: Nanos, received: Nanos, window: Nanos) -> Nanos {
    if window <= 0 {
        return sender_ts;
    }
    sender_ts.clamp(received.saturating_sub(window), received.saturating_add(window))
}

/// Round nanoseconds to whole microseconds (CDR times and durations carry microseconds).
pub fn round_micros(n: Nanos) -> Nanos {
    let us = (n as i128 * 2 + 1000).div_euclid(2000) as i64;
    us * 1000
}

/// A duration in seconds rounded to microseconds, as the CDR prints it.
pub fn dur_secs(n: Nanos) -> f64 {
    round_micros(n) as f64 / NANOS_PER_SEC as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_next_day() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2023, 11, 14), 19_675);
        for z in [-800_000, -1, 0, 59, 60, 19_675, 2_000_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(next_day(2024, 2, 28), (2024, 2, 29));
        assert_eq!(next_day(2023, 2, 28), (2023, 3, 1));
        assert_eq!(next_day(2026, 12, 31), (2027, 1, 1));
    }

    #[test]
    fn epoch_and_known_dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000000Z");
        // 2005-09-09 12:02:25.330945 UTC, the first packet of a corpus capture.
        let t = 1_126_267_345 * NANOS_PER_SEC + 330_945_000;
        assert_eq!(rfc3339_utc(t), "2005-09-09T12:02:25.330945Z");
        // Leap day and negative times.
        assert_eq!(rfc3339_utc(secs(951_782_400)), "2000-02-29T00:00:00.000000Z");
        assert_eq!(rfc3339_utc(-1_000), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn sender_times_held_near_the_receive_time() {
        let rx = secs(1_800_000_000);
        let day = secs(86_400);
        // Within the window: the sender's own time, skew and all.
        assert_eq!(clamp_to_receive(rx - secs(60), rx, day), rx - secs(60));
        assert_eq!(clamp_to_receive(rx + secs(3600), rx, day), rx + secs(3600));
        assert_eq!(clamp_to_receive(rx - day, rx, day), rx - day);
        // A clock at 1970 or far ahead: the window's edge.
        assert_eq!(clamp_to_receive(0, rx, day), rx - day);
        assert_eq!(clamp_to_receive(secs(4_294_967_295), rx, day), rx + day);
        assert_eq!(clamp_to_receive(i64::MIN, rx, day), rx - day);
        // No overflow at the ends of the range; no window: as sent.
        assert_eq!(clamp_to_receive(i64::MAX, i64::MAX - 5, day), i64::MAX);
        assert_eq!(clamp_to_receive(i64::MIN, i64::MIN + 5, day), i64::MIN);
        assert_eq!(clamp_to_receive(7, rx, 0), 7);
    }

    #[test]
    fn rounding() {
        assert_eq!(round_micros(1_499), 1_000);
        assert_eq!(round_micros(1_500), 2_000);
        assert_eq!(dur_secs(8_499_500_400), 8.4995);
    }
}
