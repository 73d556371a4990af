//! Every example pipeline loads, passes every check, and becomes a plan.

use std::path::Path;

#[test]
fn every_example_loads_and_plans() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let examples = root.join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let p = entry.unwrap().path().join("pipeline.yaml");
        if !p.exists() {
            continue;
        }
        let loaded = attest_engine::build::load(&p, &|_| None)
            .unwrap_or_else(|e| panic!("{}: {e:#?}", p.display()));
        let plan = attest_engine::build::plan(&loaded.config)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(!plan.sinks.is_empty());
        seen += 1;
    }
    assert!(seen >= 3, "expected at least three examples, found {seen}");
}
