//! How the CLI prints data: JSON (the default of every command but `status`) or a readable
//! table (`--output table`, the default of `status`). The table is derived from the same
//! JSON, so both always carry the same facts.

use serde_json::Value;
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

/// Renders a value in the format in force.
pub fn render(v: &Value) -> String {
    match get() {
        Format::Json => serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()),
        Format::Table => table(v),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.1}"),
            _ => n.to_string(),
        },
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            a.iter().map(scalar).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    }
}

fn is_rows(v: &Value) -> bool {
    matches!(v, Value::Array(a) if a.iter().all(Value::is_object))
}

/// A readable rendering: an array of objects as aligned columns (headers in capitals), an
/// object as `key: value` lines with its lists of objects as indented tables.
pub fn table(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v, 0);
    out.trim_end().to_string()
}

fn write_value(out: &mut String, v: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match v {
        Value::Array(rows) if is_rows(v) => {
            if rows.is_empty() {
                out.push_str(&format!("{pad}(none)\n"));
                return;
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
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| cols.iter().map(|c| scalar(&r[c.as_str()])).collect())
                .collect();
            let heads: Vec<String> = cols.iter().map(|c| c.to_uppercase()).collect();
            let widths: Vec<usize> = (0..cols.len())
                .map(|i| {
                    cells
                        .iter()
                        .map(|r| r[i].chars().count())
                        .chain([heads[i].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for line in std::iter::once(&heads).chain(cells.iter()) {
                let text: Vec<String> = line
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                out.push_str(&format!("{pad}{}\n", text.join("  ").trim_end()));
            }
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
                let key = format!("{k}:");
                out.push_str(&format!("{pad}{key:<w$} {}\n", scalar(x)));
            }
            for (k, x) in m.iter().filter(|(_, x)| is_rows(x) || x.is_object()) {
                out.push_str(&format!("{pad}{k}:\n"));
                write_value(out, x, indent + 2);
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_become_aligned_columns() {
        let t = table(&json!([
            {"id": "key-1", "alias": "photos", "current_version": 2},
            {"id": "key-22", "alias": null, "current_version": 1},
        ]));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "ID      ALIAS   CURRENT_VERSION");
        assert_eq!(lines[1], "key-1   photos  2");
        assert_eq!(lines[2], "key-22  -       1");
    }

    #[test]
    fn objects_become_lines_with_nested_tables() {
        let t = table(&json!({
            "mounted": true,
            "mountpoint": "/mnt/v",
            "buckets": [{"name": "b", "objects": 3}],
            "work_requests_in_flight": [],
        }));
        assert!(t.contains("mounted:    yes"), "{t}");
        assert!(t.contains("buckets:\n  NAME  OBJECTS\n  b     3"), "{t}");
        assert!(t.contains("work_requests_in_flight:\n  (none)"), "{t}");
    }
}
