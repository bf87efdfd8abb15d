//! Crash points for tests: `HWAMEISTOR_CRASH_POINT=<name>` makes the agent abort at that
//! point, as a power cut or an OOM kill would, so tests can prove that every operation
//! resumes correctly from any intermediate state. Unset in production: one env lookup.

/// Aborts the process if the crash point `name` is armed.
pub fn point(name: &str) {
    if std::env::var("HWAMEISTOR_CRASH_POINT").is_ok_and(|v| v == name) {
        eprintln!("crash point {name} reached: aborting");
        std::process::abort();
    }
}

/// Every crash point, so tests and docs can list them.
pub const POINTS: &[&str] = &[
    "claim-after-choose",
    "claim-after-bind-disk",
    "lvm-after-pvcreate",
    "replica-after-finalizer",
    "lvm-after-lvcreate",
    "lvm-after-lvremove",
];
