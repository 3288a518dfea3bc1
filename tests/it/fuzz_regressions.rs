//! Inputs the fuzz targets failed on, replayed through the same checks.
//!
//! Every file in `tests/fuzz_regressions/` is named `<target>-<short-name>` and is fed to
//! `checks::<target>::check`, the very function the libFuzzer entry point in
//! `fuzz/fuzz_targets/<target>.rs` calls (the checks are included from `fuzz/checks/` by path, so
//! this test needs neither cargo-fuzz nor a nightly feature). A check panics when a property of
//! its target does not hold; this test fails naming every file whose check panicked.

use std::path::Path;

#[path = "../../fuzz/checks/mod.rs"]
mod checks;

#[test]
fn saved_fuzz_inputs_pass_their_target_checks() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/fuzz_regressions is readable")
        .map(|e| e.expect("directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no saved inputs in {}", dir.display());

    let mut failures = Vec::new();
    // One file at a time, in this one test: the pipeline checks count the process's threads.
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(path).expect("saved input is readable");
        let check: fn(&[u8]) = match name.split_once('-').map(|(target, _)| target) {
            Some("line") => checks::line::check,
            Some("container") => checks::container::check,
            Some("export") => checks::export::check,
            Some("json") => checks::json::check,
            Some("roundtrip") => checks::roundtrip::check,
            Some("inflate") => checks::inflate::check,
            _ => panic!(
                "{name}: not named <line|container|export|json|roundtrip|inflate>-<short-name>"
            ),
        };
        if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            failures.push(format!("{name}: {message}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} saved fuzz inputs fail their target's checks:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
