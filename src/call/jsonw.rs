//! A small JSON object writer for CDRs: keys in a fixed order, values appended straight into one string.
//! Building a `serde_json::Map` per call cost more than analysing the call's packets.

use std::fmt::Write;

/// A JSON value as a CDR field holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    I(i64),
    F(f64),
    B(bool),
    S(String),
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Val {
            fn from(v: $t) -> Val {
                Val::I(v as i64)
            }
        }
    )*};
}
from_int!(i64, i32, u64, u32, u16, u8, usize);

impl From<f64> for Val {
    fn from(v: f64) -> Val {
        Val::F(v)
    }
}
impl From<bool> for Val {
    fn from(v: bool) -> Val {
        Val::B(v)
    }
}
impl From<String> for Val {
    fn from(v: String) -> Val {
        Val::S(v)
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Val {
        Val::S(v.to_string())
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Val {
        Val::S(v.clone())
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Val {
        v.map_or(Val::Null, Into::into)
    }
}

/// Appends `s` as a JSON string literal.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

pub fn write_val(out: &mut String, v: &Val) {
    match v {
        Val::Null => out.push_str("null"),
        Val::I(i) => out.push_str(itoa::Buffer::new().format(*i)),
        Val::F(f) if !f.is_finite() => out.push_str("null"),
        // Shortest round-trip form, as serde_json prints floats (45.0, 0.019, 1e-7).
        Val::F(f) => out.push_str(ryu::Buffer::new().format_finite(*f)),
        Val::B(b) => out.push_str(if *b { "true" } else { "false" }),
        Val::S(s) => write_str(out, s),
    }
}

/// A JSON object under construction.
pub struct Obj {
    out: String,
    first: bool,
}

impl Obj {
    pub fn new(capacity: usize) -> Obj {
        let mut out = String::with_capacity(capacity);
        out.push('{');
        Obj { out, first: true }
    }

    fn key(&mut self, prefix: &str, k: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        if !prefix.is_empty() {
            self.out.push_str(prefix);
            self.out.push('_');
        }
        self.out.push_str(k);
        self.out.push_str("\":");
    }

    pub fn put(&mut self, k: &str, v: impl Into<Val>) {
        self.key("", k);
        write_val(&mut self.out, &v.into());
    }

    pub fn put_prefixed(&mut self, prefix: &str, k: &str, v: &Val) {
        self.key(prefix, k);
        write_val(&mut self.out, v);
    }

    /// A value that is already JSON (an array or object built with another `Obj`).
    pub fn put_raw(&mut self, k: &str, json: &str) {
        self.key("", k);
        self.out.push_str(json);
    }

    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_serde_json() {
        let mut o = Obj::new(64);
        o.put("a", 1u16);
        o.put("b", 4.5f64);
        o.put("c", 45.0f64);
        o.put("d", "x\"y\\z\n\u{1}é");
        o.put("e", None::<u8>);
        o.put("f", f64::NAN);
        o.put_raw("g", "[1,2]");
        let s = o.finish();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["d"], "x\"y\\z\n\u{1}é");
        assert_eq!(v["c"].as_f64(), Some(45.0));
        assert!(v["e"].is_null() && v["f"].is_null());
        assert!(s.contains("\"c\":45.0"));
    }
}
