//! Rendering results: every result type is a serializable struct that also knows how to lay
//! itself out as one or more tables, so `-o table|wide|json|yaml` all come from one value.

use crate::errors::AdminError;
use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;

/// The `-o` formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    /// The table with extra columns.
    Wide,
    Json,
    Yaml,
}

impl OutputFormat {
    pub fn is_table(self) -> bool {
        matches!(self, OutputFormat::Table | OutputFormat::Wide)
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct OutputOptions {
    pub format: OutputFormat,
    pub no_headers: bool,
}

/// One table: optional title line, column headers, rows of cells.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableView {
    pub title: Option<String>,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl TableView {
    pub fn new(headers: &[&str]) -> Self {
        TableView {
            title: None,
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn titled(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }
}

/// A result that can be shown as tables as well as serialized.
pub trait Render: Serialize {
    /// The tables, in print order; `wide` adds columns.
    fn tables(&self, wide: bool) -> Vec<TableView>;

    /// What to tell (on stderr) when a table result has nothing in it, like kubectl's
    /// "No resources found".
    fn empty_note(&self) -> Option<String> {
        None
    }
}

/// Renders a result in the requested format. Table text ends with a newline unless empty.
pub fn render<T: Render + ?Sized>(value: &T, opts: OutputOptions) -> Result<String, AdminError> {
    match opts.format {
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(value)
                .map_err(|e| AdminError::Encode(e.to_string()))?;
            s.push('\n');
            Ok(s)
        }
        OutputFormat::Yaml => {
            serde_yaml_ng::to_string(value).map_err(|e| AdminError::Encode(e.to_string()))
        }
        OutputFormat::Table | OutputFormat::Wide => {
            let tables = value.tables(opts.format == OutputFormat::Wide);
            Ok(render_tables(&tables, opts.no_headers))
        }
    }
}

/// Lays tables out kubectl-style: no borders, left-aligned, three spaces between columns,
/// no trailing spaces; sections separated by a blank line.
pub fn render_tables(tables: &[TableView], no_headers: bool) -> String {
    let mut out = String::new();
    for t in tables {
        if t.rows.is_empty() && (t.title.is_some() || tables.len() > 1) {
            // An empty section of a detail view (e.g. a node without pools) is skipped
            // rather than printed as a lone header.
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        if let (Some(title), false) = (&t.title, no_headers) {
            out.push_str(title);
            out.push('\n');
        }
        if t.rows.is_empty() {
            continue;
        }
        out.push_str(&render_table(t, no_headers));
    }
    out
}

fn render_table(t: &TableView, no_headers: bool) -> String {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        // Never wrap: output is read by people and by grep/awk alike.
        .set_content_arrangement(ContentArrangement::Disabled);
    if !no_headers {
        table.set_header(t.headers.clone());
    }
    for row in &t.rows {
        // Cells never hold newlines: a multi-line cell would break line-based tools.
        table.add_row(row.iter().map(|c| c.replace('\n', " ")).collect::<Vec<_>>());
    }
    for col in table.column_iter_mut() {
        col.set_padding((0, 3));
    }
    let mut s = table.trim_fmt();
    s.push('\n');
    s
}

/// `-` for an absent value, so columns stay aligned and awk-able.
pub fn or_dash(s: Option<&str>) -> String {
    match s {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Two {
        a: String,
    }

    impl Render for Two {
        fn tables(&self, wide: bool) -> Vec<TableView> {
            let mut t = TableView::new(if wide { &["A", "WIDE"] } else { &["A"] });
            t.push(if wide {
                vec![self.a.clone(), "w".into()]
            } else {
                vec![self.a.clone()]
            });
            vec![t]
        }
    }

    #[test]
    fn tables_are_kubectl_style() {
        let mut t = TableView::new(&["NAME", "NODE"]);
        t.push(vec!["disk-a".into(), "n1".into()]);
        t.push(vec!["b".into(), "node-2".into()]);
        assert_eq!(
            render_tables(&[t.clone()], false),
            "NAME     NODE\ndisk-a   n1\nb        node-2\n"
        );
        assert_eq!(render_tables(&[t], true), "disk-a   n1\nb        node-2\n");
    }

    #[test]
    fn one_value_many_formats() {
        let v = Two { a: "x".into() };
        let table = |format| {
            render(
                &v,
                OutputOptions {
                    format,
                    no_headers: false,
                },
            )
            .unwrap()
        };
        assert_eq!(table(OutputFormat::Table), "A\nx\n");
        assert_eq!(table(OutputFormat::Wide), "A   WIDE\nx   w\n");
        assert_eq!(table(OutputFormat::Json), "{\n  \"a\": \"x\"\n}\n");
        assert_eq!(table(OutputFormat::Yaml), "a: x\n");
    }
}
