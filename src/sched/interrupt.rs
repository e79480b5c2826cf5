//! Ctrl-C: the first press asks every running trial to stop after its
//! current epoch (checkpointed, marked `interrupted`, resumable); a second
//! press exits at once. Either way the store stays consistent: every write
//! is one transaction, and an abandoned `running` trial is taken back by the
//! next run (its process is gone).

use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

static PRESSES: AtomicUsize = AtomicUsize::new(0);
static INSTALL: Once = Once::new();

/// Installs the handler (once per process).
pub fn install() {
    INSTALL.call_once(|| {
        let result = ctrlc::set_handler(|| {
            if PRESSES.fetch_add(1, Ordering::SeqCst) == 0 {
                eprintln!("\ninterrupt: finishing the current epoch of each running trial, then stopping (press Ctrl-C again to stop now)");
            } else {
                eprintln!("\ninterrupt: stopping now; run the same command again to resume from the last checkpoints");
                std::process::exit(130);
            }
        });
        if let Err(e) = result {
            eprintln!("warning: cannot install the Ctrl-C handler: {e}");
        }
    });
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    PRESSES.load(Ordering::SeqCst) > 0
}
