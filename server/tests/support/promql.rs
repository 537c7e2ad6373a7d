//! What the tests read out of Prometheus's languages: the metric names a PromQL query reads,
//! and the families a `/metrics` scrape declares. Enough of PromQL to tell a metric from a
//! function, a keyword or a label, so that a dashboard's queries can be checked against live
//! scrapes without a Prometheus server.

use std::collections::{BTreeMap, BTreeSet};

/// The metric names `promql` reads: identifiers that are neither functions, keywords, label
/// names (inside `{…}`, `by (…)`, `on (…)`, …) nor inside strings, ranges or numbers.
pub(crate) fn metric_names(promql: &str) -> BTreeSet<String> {
    // Words followed by a list of label names.
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Other words that are not metrics; aggregations among them, since one may be followed by
    // `by (…)` rather than its argument.
    const KEYWORDS: &[&str] = &[
        "bool",
        "and",
        "or",
        "unless",
        "atan2",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let chars: Vec<char> = promql.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '{' || c == '[' {
            i = skip_group(&chars, i, if c == '{' { '}' } else { ']' });
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().position(|c| !c.is_whitespace());
            let opens = next.is_some_and(|n| chars[i + n] == '(');
            if opens && LABEL_LISTS.contains(&word.as_str()) {
                i = skip_group(&chars, i + next.unwrap_or(0), ')');
            } else if !opens
                && !KEYWORDS.contains(&word.as_str())
                && !LABEL_LISTS.contains(&word.as_str())
            {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The index after the string literal opening at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// The index after the `close` that ends the group opening at `start`, strings skipped.
fn skip_group(chars: &[char], start: usize, close: char) -> usize {
    let mut i = start + 1;
    while i < chars.len() && chars[i] != close {
        i = if "\"'`".contains(chars[i]) {
            skip_string(chars, i)
        } else {
            i + 1
        };
    }
    i + 1
}

/// The metric families a `/metrics` scrape declares (`# TYPE name kind`), by name.
pub(crate) fn families(scrape: &str) -> BTreeMap<String, String> {
    scrape
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
        .collect()
}

/// The family a name in a query belongs to: itself, or the histogram whose series it is.
pub(crate) fn family_of<'a>(name: &'a str, families: &BTreeMap<String, String>) -> Option<&'a str> {
    if families.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        (families.get(base).map(String::as_str) == Some("histogram")).then_some(base)
    })
}
