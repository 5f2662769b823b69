//! The TOTP replay-guard contract.

use credvault_totp::ReplayGuard;

use crate::Violation;

fn v(rule: &'static str, detail: impl Into<String>) -> Violation {
    Violation {
        suite: "replay guard",
        rule,
        detail: detail.into(),
    }
}

fn call(
    g: &dyn ReplayGuard,
    cred: &str,
    step: u64,
    until: u64,
    now: u64,
) -> Result<bool, Violation> {
    g.check_and_mark(cred, step, until, now)
        .map_err(|e| v("a healthy guard answers", e.to_string()))
}

fn expect(got: bool, want: bool, rule: &'static str) -> Result<(), Violation> {
    if got == want {
        Ok(())
    } else {
        Err(v(rule, format!("answered {got}")))
    }
}

/// Runs the replay-guard contract against `guard` (it must start empty for the credential
/// names `conformance-*`):
/// - a step is accepted once, then refused while retained;
/// - an older step than the last accepted one is refused while retained; a newer one is
///   accepted;
/// - credentials are independent;
/// - after the retention time, the credential's record no longer blocks;
/// - 16 threads racing on one fresh step: exactly one wins.
pub fn replay_guard_conformance(guard: &dyn ReplayGuard) -> Result<(), Violation> {
    let (a, b) = ("conformance-a", "conformance-b");
    let now = 1_790_000_000;
    expect(
        call(guard, a, 100, now + 90, now)?,
        true,
        "a fresh step is accepted",
    )?;
    expect(
        call(guard, a, 100, now + 90, now + 1)?,
        false,
        "the same step is refused while retained",
    )?;
    expect(
        call(guard, a, 99, now + 90, now + 2)?,
        false,
        "an older step is refused while retained",
    )?;
    expect(
        call(guard, b, 100, now + 90, now + 2)?,
        true,
        "credentials are independent",
    )?;
    expect(
        call(guard, a, 101, now + 120, now + 30)?,
        true,
        "a newer step is accepted",
    )?;
    expect(
        call(guard, a, 101, now + 120, now + 31)?,
        false,
        "the newer step is then refused",
    )?;
    expect(
        call(guard, a, 101, now + 300, now + 121)?,
        true,
        "after retention the record no longer blocks",
    )?;

    let race = "conformance-race";
    let wins: Vec<Result<bool, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(move || {
                    guard
                        .check_and_mark(race, 500, now + 90, now)
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let mut accepted = 0;
    for w in wins {
        if w.map_err(|e| v("a healthy guard answers", e))? {
            accepted += 1;
        }
    }
    if accepted != 1 {
        return Err(v(
            "racing on one step, exactly one wins",
            format!("{accepted} won"),
        ));
    }
    Ok(())
}
