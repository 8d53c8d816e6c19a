//! Conformance with the real corpus: voxtap's CDRs against tshark's oracle for every capture with calls.

mod common;

use common::*;

#[test]
fn corpus_agrees_with_tshark_oracle() {
    let Some(dir) = corpus_dir() else { return };
    let exc = exceptions();
    let mut bad = Vec::new();
    let mut checked = 0;
    for (name, capture, oracle) in oracles_with_calls(&dir) {
        let cdrs = run_json(&capture, &["--sipports", CORPUS_SIPPORTS, "--workers", "2"]);
        bad.extend(compare(&name, &load_json(&oracle), &cdrs, &exc));
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} captures with calls found");
    assert!(bad.is_empty(), "{} disagreements with the oracle:\n{}", bad.len(), bad.join("\n"));
}
