//! How the CLI prints data: JSON (the default of every command but `status`) or a readable
//! table (`--output table`, the default of `status`). The table is derived from the same
//! JSON, so both always carry the same facts.

use crate::hygiene::WipingBuf;
use serde_json::Value;
use std::fmt::{self, Write};
use std::sync::OnceLock;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Pretty-printed JSON.
    Json,
    /// Aligned columns and `key: value` lines.
    Table,
}

static FORMAT: OnceLock<Format> = OnceLock::new();

/// Sets the format for this process (once, before anything prints).
pub fn set(f: Format) {
    let _ = FORMAT.set(f);
}

/// The format in force.
pub fn get() -> Format {
    FORMAT.get().copied().unwrap_or(Format::Json)
}

/// Renders a value in the format in force, into a buffer that leaves no copy behind (a
/// result may carry a plaintext: `kms decrypt`, `generate-data-key`). No temporary string
/// holds any of its values on the way.
pub fn render(v: &Value) -> WipingBuf {
    match get() {
        Format::Json => json(v),
        Format::Table => table(v),
    }
}

/// Pretty-printed JSON, as `serde_json::to_string_pretty` writes it.
pub fn json(v: &Value) -> WipingBuf {
    let mut out = WipingBuf::new();
    if serde_json::to_writer_pretty(&mut out, v).is_err() {
        // Writing to memory does not fail; should serde_json ever, the compact form.
        out.truncate(0);
        let _ = write!(out, "{v}");
    }
    out
}

/// Writes a scalar as one table cell.
fn write_scalar(out: &mut impl fmt::Write, v: &Value) -> fmt::Result {
    match v {
        Value::Null => out.write_str("-"),
        Value::String(s) => out.write_str(s),
        Value::Bool(b) => out.write_str(if *b { "yes" } else { "no" }),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => write!(out, "{f:.1}"),
            _ => write!(out, "{n}"),
        },
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.write_str(",")?;
                }
                write_scalar(out, x)?;
            }
            Ok(())
        }
        other => write!(out, "{other}"),
    }
}

/// Counts the characters written to it.
#[derive(Default)]
struct Chars(usize);

impl fmt::Write for Chars {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.chars().count();
        Ok(())
    }
}

fn scalar_width(v: &Value) -> usize {
    let mut c = Chars::default();
    let _ = write_scalar(&mut c, v);
    c.0
}

fn is_rows(v: &Value) -> bool {
    matches!(v, Value::Array(a) if a.iter().all(Value::is_object))
}

/// A readable rendering: an array of objects as aligned columns (headers in capitals), an
/// object as `key: value` lines with its lists of objects as indented tables.
pub fn table(v: &Value) -> WipingBuf {
    let mut out = WipingBuf::new();
    // Writing to memory does not fail.
    let _ = write_value(&mut out, v, 0);
    out.trim_end_from(0);
    out
}

fn spaces(out: &mut WipingBuf, n: usize) -> fmt::Result {
    write!(out, "{:n$}", "")
}

fn write_value(out: &mut WipingBuf, v: &Value, indent: usize) -> fmt::Result {
    match v {
        Value::Array(rows) if is_rows(v) => {
            if rows.is_empty() {
                spaces(out, indent)?;
                return out.write_str("(none)\n");
            }
            let mut cols: Vec<String> = Vec::new();
            for r in rows {
                if let Value::Object(m) = r {
                    for k in m.keys() {
                        if !cols.contains(k) {
                            cols.push(k.clone());
                        }
                    }
                }
            }
            // Names and ids first, the rest in key order.
            cols.sort_by_key(|c| match c.as_str() {
                "name" => 0,
                "id" => 1,
                _ => 2,
            });
            let heads: Vec<String> = cols.iter().map(|c| c.to_uppercase()).collect();
            let widths: Vec<usize> = cols
                .iter()
                .zip(&heads)
                .map(|(c, h)| {
                    rows.iter()
                        .map(|r| scalar_width(&r[c.as_str()]))
                        .chain([h.len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            // The header line, then one line per row; each cell left-aligned in its column,
            // the line's trailing blanks cut.
            for row in std::iter::once(None).chain(rows.iter().map(Some)) {
                spaces(out, indent)?;
                let start = out.len();
                for (i, (c, w)) in cols.iter().zip(&widths).enumerate() {
                    if i > 0 {
                        out.write_str("  ")?;
                    }
                    let used = match row {
                        None => {
                            out.write_str(&heads[i])?;
                            heads[i].chars().count()
                        }
                        Some(r) => {
                            write_scalar(out, &r[c.as_str()])?;
                            scalar_width(&r[c.as_str()])
                        }
                    };
                    spaces(out, w.saturating_sub(used))?;
                }
                out.trim_end_from(start);
                out.write_str("\n")?;
            }
            Ok(())
        }
        Value::Object(m) => {
            let w = m
                .iter()
                .filter(|(_, x)| !is_rows(x) && !x.is_object())
                .map(|(k, _)| k.len() + 1)
                .max()
                .unwrap_or(0);
            // Plain fields first, then the nested tables.
            for (k, x) in m.iter().filter(|(_, x)| !is_rows(x) && !x.is_object()) {
                spaces(out, indent)?;
                write!(out, "{:<w$} ", format!("{k}:"))?;
                write_scalar(out, x)?;
                out.write_str("\n")?;
            }
            for (k, x) in m.iter().filter(|(_, x)| is_rows(x) || x.is_object()) {
                spaces(out, indent)?;
                writeln!(out, "{k}:")?;
                write_value(out, x, indent + 2)?;
            }
            Ok(())
        }
        other => {
            spaces(out, indent)?;
            write_scalar(out, other)?;
            out.write_str("\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(b: WipingBuf) -> String {
        String::from_utf8(b.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn rows_become_aligned_columns() {
        let t = text(table(&json!([
            {"id": "key-1", "alias": "photos", "current_version": 2},
            {"id": "key-22", "alias": null, "current_version": 1},
        ])));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "ID      ALIAS   CURRENT_VERSION");
        assert_eq!(lines[1], "key-1   photos  2");
        assert_eq!(lines[2], "key-22  -       1");
    }

    #[test]
    fn objects_become_lines_with_nested_tables() {
        let t = text(table(&json!({
            "mounted": true,
            "mountpoint": "/mnt/v",
            "buckets": [{"name": "b", "objects": 3}],
            "work_requests_in_flight": [],
        })));
        assert!(t.contains("mounted:    yes"), "{t}");
        assert!(t.contains("buckets:\n  NAME  OBJECTS\n  b     3"), "{t}");
        assert!(t.contains("work_requests_in_flight:\n  (none)"), "{t}");
    }

    #[test]
    fn kms_replies_render_as_before_byte_for_byte() {
        // The JSON of kms decrypt / generate-data-key is a documented ABI: the zeroizing
        // rendering must print exactly what serde_json's pretty printer printed before.
        let v = json!({
            "Plaintext": "3q2+7wABAgP/+A==",
            "CiphertextBlob": "RUZLQgEA/w+/=",
            "KeyId": "key-0123456789abcdef0123456789abcdef",
            "KeyVersionId": 2,
            "note": "quote \" backslash \\ tab \t é ☃",
        });
        assert_eq!(
            json(&v).as_bytes(),
            serde_json::to_string_pretty(&v).unwrap().as_bytes()
        );
        assert_eq!(
            text(table(&v)),
            "CiphertextBlob: RUZLQgEA/w+/=\nKeyId:          key-0123456789abcdef0123456789abcdef\n\
             KeyVersionId:   2\nPlaintext:      3q2+7wABAgP/+A==\nnote:           quote \" backslash \\ tab \t é ☃"
        );
    }

    #[test]
    fn row_cells_align_by_characters_and_lines_lose_trailing_blanks() {
        let t = text(table(&json!([
            {"name": "é☃", "x": [1, "a"], "y": 1.5},
            {"name": "b", "x": {"k": 1}, "y": "end  "},
        ])));
        assert_eq!(
            t,
            "NAME  X        Y\né☃    1,a      1.5\nb     {\"k\":1}  end"
        );
    }
}
