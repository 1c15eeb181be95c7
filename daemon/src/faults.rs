//! Faults the tests inject into debug builds only: `SYNCD_FAULTS=name[,name…]` switches on the
//! named misbehaviour, so a test can check that a safety net catches what the fault breaks
//! (a release build has none of this: [`on`] is `false` there). The names:
//! - `hold-swaps`: a renamed file's old name is held even when it is itself another renamed
//!   file's new name (the bug that left a swap `a ↔ b` pending for ever): the liveness check
//!   (`dispatch::liveness`) must find both paths and deliver them.

/// Whether the fault `name` is switched on.
pub fn on(name: &str) -> bool {
    #[cfg(debug_assertions)]
    {
        static FAULTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        FAULTS
            .get_or_init(|| {
                std::env::var("SYNCD_FAULTS")
                    .unwrap_or_default()
                    .split(',')
                    .map(str::to_string)
                    .collect()
            })
            .iter()
            .any(|f| f == name)
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = name;
        false
    }
}
