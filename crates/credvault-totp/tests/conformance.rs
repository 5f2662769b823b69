//! The in-memory replay guard passes the replay-guard conformance suite from `credvault-test`
//! (the store's durable guard will run the same suite), and the suite catches broken guards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use credvault_test::replay_guard_conformance;
use credvault_totp::{GuardError, MemoryReplayGuard, ReplayGuard};

#[test]
fn memory_guard() {
    replay_guard_conformance(&MemoryReplayGuard::new()).unwrap();
}

#[test]
fn the_suite_catches_broken_guards() {
    struct AlwaysYes;
    impl ReplayGuard for AlwaysYes {
        fn check_and_mark(&self, _: &str, _: u64, _: u64, _: u64) -> Result<bool, GuardError> {
            Ok(true)
        }
    }
    let v = replay_guard_conformance(&AlwaysYes).unwrap_err();
    assert_eq!(v.rule, "the same step is refused while retained");

    /// Forgets nothing, ever: refuses a step after its retention.
    #[derive(Default)]
    struct NeverForgets(std::sync::Mutex<std::collections::HashMap<String, u64>>);
    impl ReplayGuard for NeverForgets {
        fn check_and_mark(&self, c: &str, step: u64, _: u64, _: u64) -> Result<bool, GuardError> {
            let mut m = self.0.lock().unwrap();
            match m.get(c) {
                Some(&last) if step <= last => Ok(false),
                _ => {
                    m.insert(c.to_owned(), step);
                    Ok(true)
                }
            }
        }
    }
    let v = replay_guard_conformance(&NeverForgets::default()).unwrap_err();
    assert_eq!(v.rule, "after retention the record no longer blocks");
}
