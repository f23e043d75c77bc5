//! Printing: a human table by default, JSON with `-o json`.

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Tsv,
}

/// Prints `rows` (objects) as a table with `cols` (header, JSON key), or as JSON.
pub fn print(format: Format, value: &Value, cols: &[(&str, &str)]) {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
        Format::Table | Format::Tsv => {
            let rows: Vec<&Value> = match value {
                Value::Array(a) => a.iter().collect(),
                v => vec![v],
            };
            let cell = |r: &Value, k: &str| -> String {
                match r.pointer(k).or_else(|| r.get(k)) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(v) => v.to_string(),
                }
            };
            if format == Format::Tsv {
                for r in &rows {
                    println!(
                        "{}",
                        cols.iter()
                            .map(|(_, k)| cell(r, k))
                            .collect::<Vec<_>>()
                            .join("\t")
                    );
                }
                return;
            }
            let mut widths: Vec<usize> = cols.iter().map(|(h, _)| h.len()).collect();
            for r in &rows {
                for (i, (_, k)) in cols.iter().enumerate() {
                    widths[i] = widths[i].max(cell(r, k).len());
                }
            }
            let line = |cells: Vec<String>| {
                cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{:w$}", c, w = widths[i]))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            println!(
                "{}",
                line(cols.iter().map(|(h, _)| h.to_string()).collect())
            );
            println!("{}", line(widths.iter().map(|w| "-".repeat(*w)).collect()));
            for r in rows {
                println!("{}", line(cols.iter().map(|(_, k)| cell(r, k)).collect()));
            }
        }
    }
}
