//! The `voipmonitor.conf` file syntax: INI-like without a required section, `key = value`, keys
//! case-insensitive, `#`/`;` comment lines, an inline comment only where `#` follows whitespace, empty values
//! ignored, keys in sections other than `[general]` ignored, repeated keys kept in order.

use std::path::{Path, PathBuf};

/// One `key = value` line, with where it came from (errors name file and line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub file: PathBuf,
    pub line: usize,
}

/// A line that is neither a comment, a section header nor `key = value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub file: PathBuf,
    pub line: usize,
    pub text: String,
}

pub fn parse_text(file: &Path, text: &str) -> (Vec<Entry>, Vec<Skipped>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let mut in_general = true;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            let name = line.trim_start_matches('[').split(']').next().unwrap_or("").trim();
            in_general = name.eq_ignore_ascii_case("general");
            continue;
        }
        let Some(eq) = line.find('=') else {
            skipped.push(Skipped { file: file.into(), line: i + 1, text: line.to_string() });
            continue;
        };
        if !in_general {
            continue;
        }
        let key = line[..eq].trim().to_ascii_lowercase();
        let value = strip_inline_comment(&line[eq + 1..]).trim().to_string();
        if key.is_empty() {
            skipped.push(Skipped { file: file.into(), line: i + 1, text: line.to_string() });
            continue;
        }
        if value.is_empty() {
            continue;
        }
        out.push(Entry { key, value, file: file.into(), line: i + 1 });
    }
    (out, skipped)
}

/// `9514  # note` → `9514`; `a#b` stays (a `#` must follow a space or tab to start a comment).
fn strip_inline_comment(v: &str) -> &str {
    let b = v.as_bytes();
    for i in 1..b.len() {
        if b[i] == b'#' && (b[i - 1] == b' ' || b[i - 1] == b'\t') {
            return &v[..i];
        }
    }
    v
}

/// A yes/no value: yes/no, y/n, true/false, on/off, 1/0 in any case, or `None` for anything else. VoIPmonitor
/// reads only the first character (`y`/`1` true, the rest false), so `true` quietly meant no there; here a value
/// that is not one of these is refused instead of being read as no.
pub fn flag(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "yes" | "y" | "true" | "t" | "on" | "1" => Some(true),
        "no" | "n" | "false" | "f" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// The words `flag` takes, for error messages.
pub const FLAG_WORDS: &str = "yes/no, true/false, on/off or 1/0";

/// Port list: items separated by `,` `;` or spaces, ranges `a-b`.
pub fn ports(v: &str) -> Result<Vec<(u16, u16)>, String> {
    let mut out = Vec::new();
    for item in v.split([',', ';', ' ', '\t']).map(str::trim).filter(|s| !s.is_empty()) {
        let (a, b) = match item.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (item, item),
        };
        let a: u16 = a.parse().map_err(|_| format!("'{item}' is not a port or port range"))?;
        let b: u16 = b.parse().map_err(|_| format!("'{item}' is not a port or port range"))?;
        if a > b {
            return Err(format!("port range '{item}' runs backwards"));
        }
        out.push((a, b));
    }
    if out.is_empty() {
        return Err("empty port list".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_rules() {
        let text = "# comment\n; also\ninterface = eth0\nSIPPORT = 5060 # inline\nsipport=5070-5080;5090\n\
                    spooldir = /var/a#b\nmysqlpassword =\nno equals here\n[other]\nid_sensor = 9\n[general]\nutc = yes\n";
        let (e, skipped) = parse_text(Path::new("x.conf"), text);
        let kv: Vec<(&str, &str)> = e.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
        assert_eq!(
            kv,
            vec![
                ("interface", "eth0"),
                ("sipport", "5060"),
                ("sipport", "5070-5080;5090"),
                ("spooldir", "/var/a#b"),
                ("utc", "yes")
            ]
        );
        assert_eq!(e[1].line, 4);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].line, 8);
    }

    #[test]
    fn yes_and_ports() {
        for (v, want) in [("yes", true), ("Y", true), ("1", true), ("true", true), ("On", true), ("no", false)] {
            assert_eq!(flag(v), Some(want), "{v}");
        }
        for v in ["0", "off", "FALSE", "n"] {
            assert_eq!(flag(v), Some(false), "{v}");
        }
        for v in ["", "maybe", "yess", "2", "enabled"] {
            assert_eq!(flag(v), None, "{v}");
        }
        assert_eq!(ports("5060,5070-5072;80").unwrap(), vec![(5060, 5060), (5070, 5072), (80, 80)]);
        assert!(ports("50-40").is_err());
        assert!(ports("abc").is_err());
        assert!(ports("70000").is_err());
    }
}
