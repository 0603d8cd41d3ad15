//! Where each key of a configuration file is: the file name and a map from
//! dotted key paths (`limits.command_timeout`, `listener[1].allow`) to the
//! line the key is on, so that whole-file checks name the line as parse
//! errors do.

use std::collections::HashMap;

use toml::de::{DeTable, DeValue};

#[derive(Debug, Clone, Default)]
pub struct Source {
    /// The file name as given, or `(built-in defaults)`.
    pub file: String,
    lines: HashMap<String, usize>,
}

impl Source {
    pub fn defaults() -> Source {
        Source { file: "(built-in defaults)".into(), lines: HashMap::new() }
    }

    /// Index `text` (already known to parse).
    pub fn index(file: &str, text: &str) -> Source {
        let mut lines = HashMap::new();
        if let Ok(doc) = DeTable::parse(text) {
            walk(text, doc.get_ref(), "", &mut lines);
        }
        Source { file: file.into(), lines }
    }

    /// The line of `key`, else of the nearest enclosing table that has one; 0
    /// when the file does not mention it (a built-in default).
    pub fn line(&self, key: &str) -> usize {
        let mut k = key.replace(".[", "[");
        loop {
            if let Some(&l) = self.lines.get(&k) {
                return l;
            }
            match k.rfind(['.', '[']) {
                Some(i) => k.truncate(i),
                None => return 0,
            }
        }
    }
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

fn walk(text: &str, table: &DeTable<'_>, prefix: &str, out: &mut HashMap<String, usize>) {
    for (k, v) in table.iter() {
        let path = if prefix.is_empty() { k.get_ref().to_string() } else { format!("{prefix}.{}", k.get_ref()) };
        out.entry(path.clone()).or_insert_with(|| line_at(text, k.span().start));
        value(text, v.get_ref(), &path, out);
    }
}

fn value(text: &str, v: &DeValue<'_>, path: &str, out: &mut HashMap<String, usize>) {
    match v {
        DeValue::Table(t) => walk(text, t, path, out),
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                let p = format!("{path}[{i}]");
                out.entry(p.clone()).or_insert_with(|| line_at(text, item.span().start));
                value(text, item.get_ref(), &p, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_lines() {
        let s = Source::index("f", "hostname = \"x\"\n[limits]\n\ncommand_timeout = \"5m\"\n[[listener]]\naddress = \"[::]:25\"\n[[listener]]\naddress = \"[::]:26\"\nallow = []\n");
        assert_eq!(s.line("hostname"), 1);
        assert_eq!(s.line("limits.command_timeout"), 4);
        assert_eq!(s.line("limits.sessions"), 2);
        assert_eq!(s.line("listener[1].allow"), 9);
        assert_eq!(s.line("listener.[1].address"), 8);
        assert_eq!(s.line("queue.max_age"), 0);
    }
}
