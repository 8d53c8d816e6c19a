//! Typed values of config keys: numbers with their bounds, seconds, modes, CPU lists, compression names.

use super::parse::Entry;
use super::{Compress, ConfigError};
use tracing::warn;

/// VoIPmonitor's named values match by case-insensitive prefix (`h` and `header` both mean header).
pub(super) fn prefix_of(v: &str, word: &str) -> bool {
    !v.is_empty() && word.len() >= v.len() && word[..v.len()].eq_ignore_ascii_case(v)
}

pub(super) fn seconds(e: &Entry) -> Result<u32, ConfigError> {
    e.value.parse::<u32>().map_err(|_| bad(e, "expected a whole number of seconds".into()))
}

/// A CPU list as taskset and the kernel write it: `2,3`, `4-7`, `0-1,6`.
pub fn cpu_list(v: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for item in v.split([',', ' ']).map(str::trim).filter(|s| !s.is_empty()) {
        let (a, b) = item.split_once('-').unwrap_or((item, item));
        let a: usize = a.trim().parse().map_err(|_| format!("'{item}' is not a CPU number or range"))?;
        let b: usize = b.trim().parse().map_err(|_| format!("'{item}' is not a CPU number or range"))?;
        if a > b || b >= 1024 {
            return Err(format!("CPU range '{item}' is not valid"));
        }
        out.extend(a..=b);
    }
    Ok(out)
}

/// An octal permission mode (`0640`, `640`) that keeps at least the bits of `owner`.
pub(super) fn mode(e: &Entry, owner: u32) -> Result<u32, ConfigError> {
    let m = u32::from_str_radix(e.value.trim_start_matches("0o"), 8)
        .map_err(|_| bad(e, "expected an octal mode such as 0640".into()))?;
    if m > 0o777 {
        return Err(bad(e, "expected permission bits only (at most 0777)".into()));
    }
    if m & owner != owner {
        return Err(bad(e, format!("the owner needs {owner:04o} (voxtap reads and appends what it creates)")));
    }
    Ok(m)
}

pub(super) fn number(e: &Entry, min: u32, max: u32) -> Result<u32, ConfigError> {
    let n: u32 = e.value.parse().map_err(|_| bad(e, "expected a whole number".into()))?;
    if n < min || n > max {
        return Err(bad(e, format!("must be between {min} and {max}")));
    }
    Ok(n)
}

/// `pcap_dump_zip*`: none, gzip or zstd. VoIPmonitor's own LZO and LZ4 formats are written as zstd (as fast,
/// and readable by every pcap tool), with a warning.
pub(super) fn zip_value(e: &Entry) -> Result<Compress, ConfigError> {
    let v = e.value.to_ascii_lowercase();
    match v.as_str() {
        "no" | "n" | "0" | "compress_na" | "false" => Ok(Compress::None),
        "gzip" | "g" | "gz" | "zip" | "z" | "yes" | "y" | "1" => Ok(Compress::Gzip),
        "zstd" => Ok(Compress::Zstd),
        "lzo" | "lz4" | "snappy" => {
            warn!(file = %e.file.display(), line = e.line, key = %e.key, value = %e.value, "not supported: files are zstd-compressed instead");
            Ok(Compress::Zstd)
        }
        _ => Err(bad(e, "expected no, gzip, zstd, lzo or lz4".into())),
    }
}

/// `tar_compress_*`: as VoIPmonitor reads it, `zip`/`gzip` mean zstd and only `gzipforce` gives a `.tar.gz`;
/// `lzma` (`.tar.xz`) is written as zstd, with a warning.
pub(super) fn tar_zip_value(e: &Entry) -> Result<Compress, ConfigError> {
    let v = e.value.to_ascii_lowercase();
    match v.as_str() {
        "no" | "n" | "0" | "false" => Ok(Compress::None),
        "zstd" | "zip" | "z" | "gzip" | "g" | "yes" | "y" | "1" => Ok(Compress::Zstd),
        "gzipforce" => Ok(Compress::Gzip),
        "lzma" | "l" => {
            warn!(file = %e.file.display(), line = e.line, key = %e.key, value = %e.value, "not supported: the archive is zstd-compressed (.tar.zst) instead");
            Ok(Compress::Zstd)
        }
        _ => Err(bad(e, "expected no, zstd, gzipforce or lzma".into())),
    }
}

pub(super) fn fraction(e: &Entry, min: f64, max: f64) -> Result<f64, ConfigError> {
    let n: f64 = e.value.parse().map_err(|_| bad(e, "expected a number".into()))?;
    if !(min..=max).contains(&n) {
        return Err(bad(e, format!("must be between {min} and {max}")));
    }
    Ok(n)
}

/// A yes/no key's value, or an error naming the words it takes (never a silent no).
pub(super) fn yes(e: &Entry) -> Result<bool, ConfigError> {
    super::parse::flag(&e.value).ok_or_else(|| bad(e, format!("expected {}", super::parse::FLAG_WORDS)))
}

pub(super) fn bad(e: &Entry, why: String) -> ConfigError {
    ConfigError::BadValue { file: e.file.clone(), line: e.line, key: e.key.clone(), why }
}
