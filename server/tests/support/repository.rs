//! Files of the repository the tests check as shipped: the compose file, the balancer's and
//! Prometheus's configuration, the dashboard.

use yaml_rust2::{Yaml, YamlLoader};

/// The path of `path`, relative to the repository's root.
pub(crate) fn repository_path(path: &str) -> String {
    format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))
}

/// The text of `path`, relative to the repository's root.
pub(crate) fn repository_file(path: &str) -> String {
    let full = repository_path(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {full}: {e}"))
}

/// The one YAML document in `path`, relative to the repository's root.
pub(crate) fn yaml_file(path: &str) -> Yaml {
    let mut documents = YamlLoader::load_from_str(&repository_file(path))
        .unwrap_or_else(|e| panic!("{path} parses: {e}"));
    assert_eq!(documents.len(), 1, "{path}: one YAML document");
    documents.remove(0)
}

/// A YAML list of strings.
pub(crate) fn yaml_strings(list: &Yaml) -> Vec<&str> {
    list.as_vec()
        .unwrap_or_else(|| panic!("expected a list, got {list:?}"))
        .iter()
        .map(|item| item.as_str().expect("a string"))
        .collect()
}
