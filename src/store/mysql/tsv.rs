//! Rows in the text form `LOAD DATA` reads by default: fields separated by tabs, one row per line, `\N` for NULL,
//! and backslash, tab, newline, carriage return and NUL escaped with a backslash. The parser thread renders each
//! CDR's rows in this form once, so the writer only splices in the ids the database gives; for servers without
//! LOAD DATA the same text is split back into statement parameters.

use std::io::Write;

use mysql_async::Value;

/// Fields of one row being rendered: each call adds a field, the tab before it included.
#[derive(Debug, Default, Clone)]
pub struct Fields {
    pub text: Vec<u8>,
    started: bool,
}

impl Fields {
    pub fn with_capacity(n: usize) -> Self {
        Fields { text: Vec::with_capacity(n), started: false }
    }

    fn next(&mut self) -> &mut Vec<u8> {
        if self.started {
            self.text.push(b'\t');
        }
        self.started = true;
        &mut self.text
    }

    pub fn null(&mut self) {
        self.next().extend_from_slice(b"\\N");
    }

    pub fn int(&mut self, v: i64) {
        let mut b = itoa::Buffer::new();
        self.next().extend_from_slice(b.format(v).as_bytes());
    }

    pub fn uint(&mut self, v: u64) {
        let mut b = itoa::Buffer::new();
        self.next().extend_from_slice(b.format(v).as_bytes());
    }

    /// A number with three decimals (`decimal(9,3)` columns).
    pub fn fixed3(&mut self, v: f64) {
        let out = self.next();
        let _ = write!(out, "{v:.3}");
    }

    pub fn bytes(&mut self, b: &[u8]) {
        escape(self.next(), b);
    }

    /// An empty field whose value is filled in later; returns where it goes.
    pub fn hole(&mut self) -> usize {
        self.next().len()
    }

    /// Ends a row of a multi-row buffer: the next field starts a new line.
    pub fn end_row(&mut self) {
        self.text.push(b'\n');
        self.started = false;
    }
}

pub fn escape(out: &mut Vec<u8>, b: &[u8]) {
    let mut from = 0;
    for (i, &c) in b.iter().enumerate() {
        let e: &[u8] = match c {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            0 => b"\\0",
            _ => continue,
        };
        out.extend_from_slice(&b[from..i]);
        out.extend_from_slice(e);
        from = i + 1;
    }
    out.extend_from_slice(&b[from..]);
}

/// Appends a number (the `cdr_ID` a child row starts with).
pub fn push_uint(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// The fields of one line (without its newline) as statement parameters: `\N` is NULL, everything else text
/// (the server converts it to the column's type as it does for the same text in LOAD DATA).
pub fn values(line: &[u8]) -> Vec<Value> {
    line.split(|&c| c == b'\t')
        .map(|f| {
            if f == b"\\N" {
                return Value::NULL;
            }
            let mut v = Vec::with_capacity(f.len());
            let mut it = f.iter();
            while let Some(&c) = it.next() {
                if c != b'\\' {
                    v.push(c);
                    continue;
                }
                match it.next() {
                    Some(b't') => v.push(b'\t'),
                    Some(b'n') => v.push(b'\n'),
                    Some(b'r') => v.push(b'\r'),
                    Some(b'0') => v.push(0),
                    Some(&o) => v.push(o),
                    None => v.push(b'\\'),
                }
            }
            Value::Bytes(v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let mut f = Fields::default();
        f.int(-5);
        f.null();
        f.bytes(b"a\tb\\c\nd\0e\rf");
        f.fixed3(1.23456);
        let at = f.hole();
        f.uint(7);
        assert_eq!(&f.text[..], b"-5\t\\N\ta\\tb\\\\c\\nd\\0e\\rf\t1.235\t\t7");
        assert_eq!(at, f.text.len() - 2);
        let v = values(&f.text);
        assert_eq!(
            v,
            vec![
                Value::Bytes(b"-5".to_vec()),
                Value::NULL,
                Value::Bytes(b"a\tb\\c\nd\0e\rf".to_vec()),
                Value::Bytes(b"1.235".to_vec()),
                Value::Bytes(vec![]),
                Value::Bytes(b"7".to_vec()),
            ]
        );
        f.end_row();
        f.uint(1);
        assert_eq!(&f.text[f.text.len() - 3..], b"7\n1");
    }
}
