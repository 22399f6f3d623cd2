//! Naming the key behind a TOML error.
//!
//! `toml` reports syntax and shape errors with a byte span but not the dotted key, and serde
//! cannot say which table it was in. Rather than guess from the message, this module parses the
//! text again with `toml_edit` (the parser `toml` itself uses), which keeps a span for every
//! key, value and table header, and names the innermost one that holds the error. This only
//! runs when loading already failed, so parsing twice costs nothing that matters.

use std::ops::Range;

use toml_edit::{ImDocument, InlineTable, Item, Table, Value};

use super::error::NO_KEY;

/// The dotted key (see [`super::ConfigError`]) of a toml error at `span` with `message`.
pub(super) fn key_for(text: &str, span: Range<usize>, message: &str) -> String {
    match ImDocument::parse(text) {
        Ok(doc) => shape_error_key(doc.as_table(), &span, message),
        Err(_) => syntax_error_key(text, span.start),
    }
}

/// The file parses, so serde refused its shape: the span is that of a key (unknown field), a
/// value (wrong type) or the table that lacks a key (missing field).
fn shape_error_key(root: &Table, span: &Range<usize>, message: &str) -> String {
    let mut places = Vec::new();
    table_places(root, "", &mut places);
    if let Some(field) = quoted_after(message, "missing field `") {
        let table = places
            .iter()
            .rev()
            .find(|p| p.span == *span && matches!(p.kind, Kind::Header | Kind::Inline));
        return match table {
            Some(t) => format!("{}.{field}", t.path),
            // Only the root table has no span of its own.
            None => field.to_owned(),
        };
    }
    // Later places are deeper, so among equally long spans the last one is the most precise.
    places
        .iter()
        .rev()
        .filter(|p| p.span.start <= span.start && span.end <= p.span.end)
        .min_by_key(|p| p.span.len())
        .map_or_else(|| NO_KEY.to_owned(), |p| p.path.clone())
}

/// The file does not parse, so there is no tree to search. Everything before the error's line
/// usually still parses, and the last table header in it is the table the error is in.
fn syntax_error_key(text: &str, offset: usize) -> String {
    let Some(before) = text.get(..offset.min(text.len())) else {
        return NO_KEY.to_owned();
    };
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    if text[line_start..].trim_start().starts_with('[') {
        // The broken line is itself a header; the previous table would be a wrong answer.
        return NO_KEY.to_owned();
    }
    let Ok(doc) = ImDocument::parse(&text[..line_start]) else {
        return NO_KEY.to_owned();
    };
    let mut places = Vec::new();
    table_places(doc.as_table(), "", &mut places);
    places
        .into_iter()
        .filter(|p| p.kind == Kind::Header)
        .max_by_key(|p| p.span.start)
        .map_or_else(|| NO_KEY.to_owned(), |p| p.path)
}

/// A span in the document and the dotted key it belongs to.
struct Place {
    span: Range<usize>,
    path: String,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A key as written, e.g. `deadtime` in `deadtime = "1s"`.
    Key,
    /// A scalar or array value.
    Value,
    /// A table with a `[header]` or `[[header]]`, spanning its header and its keys.
    Header,
    /// An inline table `{ ... }`.
    Inline,
}

fn table_places(table: &Table, path: &str, out: &mut Vec<Place>) {
    // The root is no key; errors that fall only inside it have none.
    if let Some(span) = table.span().filter(|_| !path.is_empty()) {
        out.push(Place {
            span,
            path: path.to_owned(),
            kind: Kind::Header,
        });
    }
    for (name, item) in table.iter() {
        let path = join(path, name);
        if let Some(span) = table.key(name).and_then(|k| k.span()) {
            out.push(Place {
                span,
                path: path.clone(),
                kind: Kind::Key,
            });
        }
        match item {
            Item::None => {}
            Item::Value(value) => value_places(value, &path, out),
            Item::Table(table) => table_places(table, &path, out),
            Item::ArrayOfTables(array) => {
                for (i, table) in array.iter().enumerate() {
                    table_places(table, &format!("{path}[{i}]"), out);
                }
            }
        }
    }
}

fn value_places(value: &Value, path: &str, out: &mut Vec<Place>) {
    if let Some(span) = value.span() {
        let kind = match value {
            Value::InlineTable(_) => Kind::Inline,
            _ => Kind::Value,
        };
        out.push(Place {
            span,
            path: path.to_owned(),
            kind,
        });
    }
    match value {
        Value::InlineTable(table) => inline_places(table, path, out),
        Value::Array(array) => {
            for (i, value) in array.iter().enumerate() {
                value_places(value, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn inline_places(table: &InlineTable, path: &str, out: &mut Vec<Place>) {
    for (name, value) in table.iter() {
        let path = join(path, name);
        if let Some(span) = table.key(name).and_then(|k| k.span()) {
            out.push(Place {
                span,
                path: path.clone(),
                kind: Kind::Key,
            });
        }
        value_places(value, &path, out);
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// The text between `prefix` and the next backquote, as serde quotes field names.
fn quoted_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split_once('`').map(|(field, _)| field)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_at(text: &str, needle: &str, message: &str) -> String {
        let start = text.find(needle).unwrap_or_default();
        key_for(text, start..start + needle.len(), message)
    }

    const DOC: &str = "[cluster]\nname = \"x\"\n\n[[node]]\nid = 1\n\n[[node]]\nid = 2\n\
                       links.lan0 = { adress = \"a\" }\n[node.links.ser]\ndevice = 5\n";

    #[test]
    fn names_values_keys_and_array_entries() {
        assert_eq!(key_at(DOC, "\"x\"", "invalid type"), "cluster.name");
        assert_eq!(key_at(DOC, "2", "invalid type"), "node[1].id");
        assert_eq!(
            key_at(DOC, "adress", "unknown field `adress`"),
            "node[1].links.lan0.adress"
        );
        assert_eq!(key_at(DOC, "5", "invalid type"), "node[1].links.ser.device");
    }

    /// The span comes from toml itself, so the test also pins down where toml puts it.
    #[test]
    fn names_the_missing_key_inside_its_table() {
        #[derive(Debug, serde::Deserialize)]
        struct Doc {
            #[serde(rename = "node")]
            _node: Vec<Node>,
        }
        #[derive(Debug, serde::Deserialize)]
        struct Node {
            #[serde(rename = "name")]
            _name: String,
        }
        let text = "[[node]]\nname = \"a\"\n[[node]]\nid = 2\nlinks.x = { a = 1 }\n";
        let error = toml::from_str::<Doc>(text).err();
        let span = error
            .as_ref()
            .and_then(toml::de::Error::span)
            .unwrap_or(0..0);
        assert_eq!(key_for(text, span, "missing field `name`"), "node[1].name");
        let error = toml::from_str::<Doc>("[x]\n").err();
        let span = error
            .as_ref()
            .and_then(toml::de::Error::span)
            .unwrap_or(0..0);
        assert_eq!(key_for("[x]\n", span, "missing field `node`"), "node");
    }

    #[test]
    fn syntax_errors_name_the_enclosing_table() {
        let text = "[cluster]\nname = \"x\"\n[[node]]\nid = 1\n[[node]]\nid = = 2\n";
        let at = text.find("= 2").unwrap_or_default();
        assert_eq!(key_for(text, at..at + 1, "invalid"), "node[1]");
        assert_eq!(key_for("a = \"x\nb = 1\n", 6..7, "invalid"), NO_KEY);
        let header = "[cluster]\nname = \"x\"\n[[node]\n";
        assert_eq!(key_for(header, 27..28, "invalid"), NO_KEY);
    }
}
