//! Maps a dotted key path (`train.lr`, `backbone.1.name`,
//! `sweep.space.lr.2`) to where it is written in the spec text.

use toml::de::{DeTable, DeValue};

/// `line:col`, both counted from 1, of a byte offset.
pub fn line_col(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{line}:{col}")
}

/// Byte offset of the value at `path`, or of its nearest written ancestor.
pub fn find(text: &str, path: &[String]) -> Option<usize> {
    let doc = DeTable::parse(text).ok()?;
    let mut best = None;
    let mut table = doc.get_ref();
    let mut value: Option<&toml::Spanned<DeValue>> = None;
    for part in path {
        let next = match value.map(|v| v.get_ref()) {
            None => lookup(table, part),
            Some(DeValue::Table(t)) => lookup(t, part),
            Some(DeValue::Array(items)) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
            Some(_) => None,
        };
        let Some(next) = next else { break };
        best = Some(next.span().start);
        if let DeValue::Table(t) = next.get_ref() {
            table = t;
        }
        value = Some(next);
    }
    best
}

fn lookup<'a, 'i>(table: &'a DeTable<'i>, key: &str) -> Option<&'a toml::Spanned<DeValue<'i>>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}
