//! The readable table of calls: one row per CDR, columns aligned whatever the lengths of users, addresses and
//! Call-IDs. A capture file's table is measured first and ordered by start time; a live capture's rows go out
//! as calls end, at fixed widths (long users cut with `…`, addresses widening the column rather than cut).

use std::io::Write;

use serde_json::{Map, Value};

use crate::call::cdr::Cdr;

/// What the columns mean, printed under every table (and in `--help`).
pub const LEGEND: &str =
    "Table columns. start: the INVITE's time; dur: seconds from the INVITE to the call's last packet; \
caller/called: the SIP users (From/To) and their signalling addresses; resp: last SIP response; bye: 0 not \
answered, 1 answered without BYE, 2 BYE unanswered, 3 BYE answered, 10x timeouts (docs/cdr.md); str: RTP \
streams; a: the stream the caller sends, b: the one the called side sends, as lost packets/max jitter in ms; \
mos: the call's lowest MOS (- without RTP)";

#[derive(Clone, Copy, PartialEq)]
enum Align {
    Left,
    Right,
}

struct Column {
    title: &'static str,
    align: Align,
    /// The width a live table starts with.
    live: usize,
    /// Live values longer than the width are cut (users) or widen the column (addresses, times).
    cut: bool,
}

const COLUMNS: [Column; 13] = [
    Column { title: "start", align: Align::Left, live: 26, cut: false },
    Column { title: "dur", align: Align::Right, live: 8, cut: false },
    Column { title: "caller", align: Align::Left, live: 16, cut: true },
    Column { title: "called", align: Align::Left, live: 16, cut: true },
    Column { title: "caller_ip", align: Align::Left, live: 15, cut: false },
    Column { title: "called_ip", align: Align::Left, live: 15, cut: false },
    Column { title: "resp", align: Align::Right, live: 4, cut: false },
    Column { title: "bye", align: Align::Right, live: 3, cut: false },
    Column { title: "str", align: Align::Right, live: 3, cut: false },
    Column { title: "a:lost/jit", align: Align::Right, live: 10, cut: false },
    Column { title: "b:lost/jit", align: Align::Right, live: 10, cut: false },
    Column { title: "mos", align: Align::Right, live: 3, cut: false },
    Column { title: "callid", align: Align::Left, live: 0, cut: false },
];

/// One CDR as table cells, with the start time to order by.
pub struct Row {
    start: crate::time::Nanos,
    cells: Vec<String>,
}

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(x)) if x.is_empty() => "-".into(),
        Some(Value::String(x)) => x.clone(),
        Some(x) => x.to_string(),
    }
}

fn num(j: &Map<String, Value>, k: &str) -> Option<f64> {
    j.get(k).and_then(Value::as_f64)
}

impl Row {
    pub fn of(c: &Cdr) -> Row {
        let j: Map<String, Value> = serde_json::from_str(&c.json).unwrap_or_default();
        let side = |p: &str| {
            if j.get(&format!("{p}_received")).is_some_and(|v| !v.is_null()) {
                format!("{}/{}", text(j.get(&format!("{p}_lost"))), text(j.get(&format!("{p}_maxjitter"))))
            } else {
                "-".into()
            }
        };
        let mos = ["a_mos_min_mult10", "b_mos_min_mult10"]
            .iter()
            .filter_map(|k| num(&j, k))
            .reduce(f64::min)
            .map_or("-".into(), |m| format!("{:.1}", m / 10.0));
        let cells = vec![
            text(j.get("calldate")),
            num(&j, "duration").map_or("-".into(), |d| format!("{d:.2}")),
            text(j.get("caller")),
            text(j.get("called")),
            text(j.get("sipcallerip")),
            text(j.get("sipcalledip")),
            text(j.get("lastSIPresponseNum")),
            text(j.get("bye")),
            c.streams.to_string(),
            side("a"),
            side("b"),
            mos,
            c.callid.clone(),
        ];
        Row { start: c.calldate, cells }
    }
}

fn cell(out: &mut impl Write, v: &str, width: usize, align: Align, last: bool) -> std::io::Result<()> {
    let len = v.chars().count();
    if last {
        return write!(out, "{v}");
    }
    let pad = width.saturating_sub(len);
    match align {
        Align::Left => write!(out, "{v}{:pad$}  ", ""),
        Align::Right => write!(out, "{:pad$}{v}  ", ""),
    }
}

fn line(out: &mut impl Write, cells: &[&str], widths: &[usize]) -> std::io::Result<()> {
    for (i, v) in cells.iter().enumerate() {
        cell(out, v, widths[i], COLUMNS[i].align, i + 1 == cells.len())?;
    }
    writeln!(out)
}

/// A whole run's table: ordered by start time (then Call-ID), each column as wide as its widest value.
pub fn write_all(out: &mut impl Write, cdrs: &[Cdr]) -> std::io::Result<()> {
    let mut rows: Vec<Row> = cdrs.iter().map(Row::of).collect();
    rows.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.cells[12].cmp(&b.cells[12])));
    let mut widths: Vec<usize> = COLUMNS.iter().map(|c| c.title.len()).collect();
    for r in &rows {
        for (w, v) in widths.iter_mut().zip(&r.cells) {
            *w = (*w).max(v.chars().count());
        }
    }
    line(out, &COLUMNS.map(|c| c.title), &widths)?;
    for r in &rows {
        let cells: Vec<&str> = r.cells.iter().map(String::as_str).collect();
        line(out, &cells, &widths)?;
    }
    Ok(())
}

/// A live table: fixed widths from the start, rows as calls end.
pub struct Live {
    widths: Vec<usize>,
}

impl Live {
    pub fn header(out: &mut impl Write) -> std::io::Result<Live> {
        let widths: Vec<usize> = COLUMNS.iter().map(|c| c.live.max(c.title.len())).collect();
        line(out, &COLUMNS.map(|c| c.title), &widths)?;
        Ok(Live { widths })
    }

    pub fn row(&mut self, out: &mut impl Write, c: &Cdr) -> std::io::Result<()> {
        let r = Row::of(c);
        let mut cells = Vec::with_capacity(r.cells.len());
        for (i, v) in r.cells.iter().enumerate() {
            let w = self.widths[i];
            let len = v.chars().count();
            if len > w && COLUMNS[i].cut {
                let mut s: String = v.chars().take(w.saturating_sub(1)).collect();
                s.push('…');
                cells.push(s);
            } else {
                self.widths[i] = w.max(len);
                cells.push(v.clone());
            }
        }
        let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
        line(out, &cells, &self.widths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cdr(callid: &str, start: &str, caller: &str, dur: f64) -> Cdr {
        let json = serde_json::json!({
            "callid": callid, "calldate": start, "duration": dur, "caller": caller, "called": "500",
            "sipcallerip": "10.0.0.1", "sipcalledip": "2001:db8::1", "lastSIPresponseNum": 200, "bye": 3,
            "a_received": 10, "a_lost": 1, "a_maxjitter": 4, "a_mos_min_mult10": 43, "b_mos_min_mult10": 41,
        });
        let at = if start.contains(":09") { 9_000_000_000 } else { 1_000_000_000 };
        Cdr { calldate: at, callend: at, callid: callid.into(), json: json.to_string(), streams: 2 }
    }

    #[test]
    fn columns_line_up_and_rows_go_by_start() {
        let cdrs = [
            cdr("late", "2024-01-01T00:00:09Z", "a-very-long-caller-name-indeed", 5.0),
            cdr("early", "2024-01-01T00:00:01Z", "1", 12.3456),
        ];
        let mut out = Vec::new();
        write_all(&mut out, &cdrs).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].ends_with("early") && lines[2].ends_with("late"), "{text}");
        // Every column starts at the same place on every line.
        let at = |l: &str, w: &str| l.find(w).unwrap();
        assert_eq!(at(lines[0], "called "), at(lines[1], "500 "));
        assert_eq!(at(lines[1], "500 "), at(lines[2], "500 "));
        assert_eq!(lines[1].len() - "early".len(), lines[2].len() - "late".len(), "{text}");
        assert!(lines[1].contains("12.35") && lines[2].contains(" 5.00 "), "{text}");
        assert!(lines[1].contains("1/4") && lines[1].contains("4.1"), "{text}");
    }

    #[test]
    fn a_live_table_cuts_long_users_and_keeps_its_columns() {
        let mut out = Vec::new();
        let mut t = Live::header(&mut out).unwrap();
        t.row(&mut out, &cdr("x", "2024-01-01T00:00:01.000000Z", "a-very-long-caller-name-indeed", 1.0)).unwrap();
        t.row(&mut out, &cdr("y", "2024-01-01T00:00:02.000000Z", "2", 1.0)).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains('…'), "{text}");
        assert_eq!(lines[1].chars().count() - 1, lines[2].chars().count() - 1, "{text}");
    }
}
