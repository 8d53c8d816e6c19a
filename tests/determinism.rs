//! `--workers N` never changes the output: identical JSON for 1, 2 and 4 owners.

mod common;

use common::*;

#[test]
fn same_cdrs_for_any_number_of_workers() {
    let Some(dir) = corpus_dir() else { return };
    let mut files: Vec<_> = oracles_with_calls(&dir).into_iter().map(|(_, c, _)| c).collect();
    files.sort();
    assert!(!files.is_empty());
    for f in files {
        let base = run_json(&f, &["--sipports", CORPUS_SIPPORTS, "--workers", "1"]);
        for w in ["2", "4"] {
            let other = run_json(&f, &["--sipports", CORPUS_SIPPORTS, "--workers", w]);
            assert_eq!(base, other, "{}: output differs between 1 and {w} workers", f.display());
        }
    }
}
