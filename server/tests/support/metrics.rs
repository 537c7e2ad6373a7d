//! Reading values out of a node's `/metrics` scrape (Prometheus text format).

/// The text of a `/metrics` scrape.
pub(crate) struct Metrics(pub String);

impl Metrics {
    /// The value of the series written exactly as `series` (name plus `{labels}` if any).
    pub(crate) fn value(&self, series: &str) -> Option<f64> {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let rest = line.strip_prefix(series)?;
                rest.starts_with(' ')
                    .then(|| rest.split_whitespace().next().and_then(|v| v.parse().ok()))?
            })
    }

    /// Whether any sample line belongs to metric family `name`.
    pub(crate) fn has_family(&self, name: &str) -> bool {
        self.0.lines().any(|line| {
            !line.starts_with('#')
                && line
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']) || rest.starts_with("_bucket"))
        })
    }
}
