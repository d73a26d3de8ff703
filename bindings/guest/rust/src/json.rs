//! A tiny JSON writer: just enough to write `train_start`'s configuration object, with
//! correct string escaping (the crate has no dependencies, so no serde).

use core::fmt::Write;

/// A JSON value of a configuration entry.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// Written with the shortest representation that reads back as the same `f64`. A
    /// non-finite number has no JSON form and is written as `null` (the host then rejects
    /// the key as having the wrong type, naming it).
    Float(f64),
    Str(String),
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v as i64)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(v as i64)
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Float(v as f64)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}

/// Appends `s` to `out` as a JSON string literal: quotes, backslashes and every control
/// character (U+0000..U+001F, and U+007F for readability) escaped; all other characters,
/// non-ASCII included, are written as their UTF-8 bytes, which JSON allows.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `v` to `out` as JSON.
pub fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{}", i);
        }
        Value::Float(f) if f.is_finite() => {
            // Debug formatting is the shortest string that round-trips ("0.001", "1e-20",
            // "3.0"), and each such form is a valid JSON number.
            let _ = write!(out, "{:?}", f);
        }
        Value::Float(_) => out.push_str("null"),
        Value::Str(s) => write_string(out, s),
    }
}

/// An ordered JSON object; setting a key again replaces its value in place.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Object {
    entries: Vec<(String, Value)>,
}

impl Object {
    pub fn new() -> Self {
        Object { entries: Vec::new() }
    }

    pub fn set(&mut self, key: &str, value: Value) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key.to_string(), value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn remove(&mut self, key: &str) {
        self.entries.retain(|(k, _)| k != key);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The object as compact JSON text: `{"steps":20,"lr":0.001}`.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_string(&mut out, k);
            out.push(':');
            write_value(&mut out, v);
        }
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> String {
        let mut o = String::new();
        write_string(&mut o, x);
        o
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(s("plain"), "\"plain\"");
        assert_eq!(s("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(s("l1\nl2\r\t"), "\"l1\\nl2\\r\\t\"");
        assert_eq!(s("\u{0}\u{1f}\u{7f}\u{08}\u{0c}"), "\"\\u0000\\u001f\\u007f\\b\\f\"");
        assert_eq!(s("/runs/été ☃"), "\"/runs/été ☃\"");
    }

    #[test]
    fn numbers_round_trip() {
        let mut o = Object::new();
        o.set("a", Value::Float(0.001));
        o.set("b", Value::Float(1e-20));
        o.set("c", Value::Float(3.0));
        o.set("d", Value::Int(-7));
        o.set("e", Value::Float(f64::NAN));
        o.set("f", Value::Bool(true));
        o.set("g", Value::Null);
        assert_eq!(o.to_json(), "{\"a\":0.001,\"b\":1e-20,\"c\":3.0,\"d\":-7,\"e\":null,\"f\":true,\"g\":null}");
        let text = format!("{:?}", 0.1f64 + 0.2f64);
        assert_eq!(text.parse::<f64>().unwrap(), 0.1f64 + 0.2f64);
    }

    #[test]
    fn setting_again_replaces_in_place() {
        let mut o = Object::new();
        o.set("steps", Value::Int(1));
        o.set("lr", Value::Float(0.5));
        o.set("steps", Value::Int(2));
        assert_eq!(o.to_json(), "{\"steps\":2,\"lr\":0.5}");
        o.remove("steps");
        assert_eq!(o.to_json(), "{\"lr\":0.5}");
        assert_eq!(Object::new().to_json(), "{}");
    }
}
