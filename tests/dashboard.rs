//! The shipped Grafana dashboard queries only metrics incidentd really exposes.

use incidentd::telemetry::metrics::CATALOG;

#[test]
fn dashboard_queries_exist() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/incidentd.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut seen = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("incidentd_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    CATALOG.iter().any(|(n, _, _)| *n == base),
                    "panel {:?} queries {name}, which incidentd does not expose",
                    panel["title"]
                );
                seen += 1;
            }
        }
    }
    assert!(
        seen >= 15,
        "the dashboard should query the metrics ({seen})"
    );
}
