//! Fault points: places where a test can make the receiver die as if killed with SIGKILL, to
//! prove that a crash anywhere leaves a state that the next start completes (issue 14, item 4).
//!
//! `fault_point("after-record")` kills the process with SIGKILL when the environment variable
//! `CIPHERSTREAM_TEST_FAULT` names that point. Only debug builds (the ones the tests run) read the
//! variable: in a release build every fault point is an empty function, so the variable cannot
//! be used to stop a production receiver. The points: `before-delivery-record` (the job exists,
//! the delivery is not yet recorded), `after-record` (the delivery is recorded, not yet answered),
//! `after-download` (the export is downloaded, not yet decrypted), `before-commit` (every row is
//! decrypted into the unnamed temporary file) and `after-commit` (the output is in place, the job
//! not yet done).

/// The variable naming the fault point at which a debug build kills itself.
pub const ENV_FAULT: &str = "CIPHERSTREAM_TEST_FAULT";

/// Die of SIGKILL here if `CIPHERSTREAM_TEST_FAULT` names `name` (debug builds only).
#[inline]
pub fn fault_point(name: &str) {
    #[cfg(all(debug_assertions, unix))]
    if std::env::var_os(ENV_FAULT).is_some_and(|v| v == name) {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
    #[cfg(not(all(debug_assertions, unix)))]
    let _ = name;
}
