//! Violation messages of the events the memo's shadow decides (`shadow.rs`): the same bytes as
//! `BatchProcessor._fact_violation` (auditor/stream/processor.py), the Python reference. Python
//! gives each violating template's message as JSON text cut at its per-event values (`parts`:
//! text, slot name, text, ..., text; the whole message and its truncated form); the values are
//! written here as `json.dumps` writes them (`ensure_ascii`).

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// The per-event values of a violation message, in `_MESSAGE_SLOTS` order.
pub const SLOTS: [&str; 11] = [
    "event_id", "source", "chain_id", "seq", "record_hash", "kind", "purpose", "recipient_type",
    "subject_pseudonym", "pseudonym_key_id", "occurred_at",
];
pub const SEQ: usize = 3;
pub const RECORD_HASH: usize = 4;
pub const KEY_ID: usize = 9;

/// A message template: `texts[0] slot[0] texts[1] ... texts[n]`.
pub struct Template {
    texts: Vec<String>,
    slots: Vec<usize>,
}

impl Template {
    /// From `[text, slot name, text, ..., text]` (None: a name that is not a slot).
    pub fn new(parts: &[String]) -> Option<Template> {
        if parts.len() % 2 != 1 {
            return None;
        }
        let mut texts = Vec::with_capacity(parts.len() / 2 + 1);
        let mut slots = Vec::with_capacity(parts.len() / 2);
        for (i, p) in parts.iter().enumerate() {
            if i % 2 == 0 {
                texts.push(p.clone());
            } else {
                slots.push(SLOTS.iter().position(|s| s == p)?);
            }
        }
        Some(Template { texts, slots })
    }

    /// The message with `vals(slot)` (JSON text) at each slot.
    pub fn render<'a>(&self, vals: impl Fn(usize) -> &'a [u8], out: &mut Vec<u8>) {
        for (text, &slot) in self.texts.iter().zip(&self.slots) {
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(vals(slot));
        }
        out.extend_from_slice(self.texts.last().expect("one text more than slots").as_bytes());
    }
}

/// A violating decision's message, whole and truncated, and the Python lists it was made from
/// (kept: the shadow shares one `Messages` between the entries taught with the same lists).
pub struct Messages {
    pub full: Template,
    pub cut: Template,
    pub lists: (Py<PyAny>, Py<PyAny>),
}

impl Messages {
    /// The bytes it holds (roughly).
    pub fn size(&self) -> usize {
        [&self.full, &self.cut].iter().map(|t| t.texts.iter().map(|x| x.len() + 24).sum::<usize>() + 8 * t.slots.len()).sum()
    }
}

/// What the shadow knows of a violating decision: its message, and the violation metric labels
/// of its events (one tuple per violation).
pub struct Violation {
    pub messages: Arc<Messages>,
    pub labels: Py<PyTuple>,
}

/// One violating event's values as JSON text (`ends[i]`: where slot `i`'s text ends in `text`;
/// seq, record hash and key id are written when the record is sealed) and its message key.
pub struct Values {
    pub text: Vec<u8>,
    pub ends: [usize; 11],
    pub key: Vec<u8>,
}

impl Values {
    pub fn new(key: &str) -> Values {
        Values { text: Vec::with_capacity(256), ends: [0; 11], key: key.as_bytes().to_vec() }
    }

    /// The next slot's value (slots are written in order; one not written is empty).
    pub fn set(&mut self, slot: usize, value: Option<&str>) {
        match value {
            Some(s) => json_str(s, &mut self.text),
            None => self.text.extend_from_slice(b"null"),
        }
        let end = self.text.len();
        for e in &mut self.ends[slot..] {
            *e = end;
        }
    }

    pub fn get(&self, slot: usize) -> &[u8] {
        let start = if slot == 0 { 0 } else { self.ends[slot - 1] };
        &self.text[start..self.ends[slot]]
    }
}

/// `json.encoder.encode_basestring_ascii(s)`: `s` quoted, `"` `\` and the usual controls as
/// two-character escapes, everything else outside `' '..='~'` as `\uXXXX` (lowercase hex; a
/// surrogate pair above the BMP).
pub fn json_str(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let unit = |u: u32, out: &mut Vec<u8>| {
        out.extend_from_slice(b"\\u");
        for shift in [12, 8, 4, 0] {
            out.push(HEX[((u >> shift) & 15) as usize]);
        }
    };
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            ' '..='~' => out.push(c as u8),
            _ => {
                let u = c as u32;
                if u >= 0x10000 {
                    let v = u - 0x10000;
                    unit(0xd800 | (v >> 10), out);
                    unit(0xdc00 | (v & 0x3ff), out);
                } else {
                    unit(u, out);
                }
            }
        }
    }
    out.push(b'"');
}

/// `(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).isoformat()` for a time in
/// years 1 to 9999 (None outside them).
pub fn isoformat(us: i64) -> Option<String> {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    // days since 1970-01-01 to the civil date (H. Hinnant's algorithm, proleptic Gregorian)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(1..=9999).contains(&year) {
        return None;
    }
    let (h, m, s) = (rest / 3600, rest / 60 % 60, rest % 60);
    Some(if micros == 0 {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}+00:00")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{micros:06}+00:00")
    })
}

/// `json.encoder.encode_basestring_ascii(s)` (for the tests that compare it with Python's).
#[pyfunction]
pub fn json_ascii(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len() + 2);
    json_str(s, &mut out);
    String::from_utf8(out).expect("ASCII")
}

/// The isoformat of a UTC time in microseconds since the epoch (for the tests).
#[pyfunction]
pub fn iso_micros(us: i64) -> PyResult<String> {
    isoformat(us).ok_or_else(|| PyValueError::new_err("a time outside years 1 to 9999"))
}
