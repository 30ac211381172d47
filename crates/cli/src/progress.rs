//! Progress on stderr with indicatif (hidden when stderr is not a terminal): the CLI's
//! implementation of the pipelines' [`Progress`].

use std::cell::RefCell;

use indicatif::{ProgressBar, ProgressStyle};
use trialforge_core::Progress;

/// One bar or spinner at a time, replaced when the work changes.
#[derive(Default)]
pub struct Bars {
    current: RefCell<Option<(bool, ProgressBar)>>,
}

impl Bars {
    fn bar(&self, counted: bool) -> ProgressBar {
        let mut cur = self.current.borrow_mut();
        if let Some((was_counted, pb)) = cur.as_ref() {
            if *was_counted == counted {
                return pb.clone();
            }
            pb.finish_and_clear();
        }
        let pb = if counted {
            let pb = ProgressBar::new(0);
            pb.set_style(
                ProgressStyle::with_template(
                    "{msg:>12} [{bar:30}] {pos}/{len} ({per_sec}, ETA {eta})",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            pb
        } else {
            let pb = ProgressBar::new_spinner();
            pb.enable_steady_tick(std::time::Duration::from_millis(200));
            pb
        };
        *cur = Some((counted, pb.clone()));
        pb
    }
}

impl Progress for Bars {
    fn count(&self, what: &str, done: u64, total: u64) {
        let pb = self.bar(true);
        pb.set_message(what.to_string());
        pb.set_length(total);
        pb.set_position(done);
    }

    fn stage(&self, what: &str) {
        self.bar(false).set_message(what.to_string());
    }

    fn finish(&self) {
        if let Some((_, pb)) = self.current.borrow_mut().take() {
            pb.finish_and_clear();
        }
    }

    fn note(&self, line: &str) {
        match self.current.borrow().as_ref() {
            Some((_, pb)) => pb.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.finish();
    }
}
