//! How long work reports while it runs. The libraries never draw progress bars; a front-end
//! implements [`Progress`] (the CLI with indicatif, the server with nothing).

/// Receives the progress of a pipeline. Every method has a do-nothing default.
pub trait Progress {
    /// Counted work: `done` of `total` items of `what` (embedding, cells, training steps).
    fn count(&self, _what: &str, _done: u64, _total: u64) {}
    /// A step of unknown length starts, or its status changes ("training cladmop: pre-training").
    fn stage(&self, _what: &str) {}
    /// The current counted or staged work is over.
    fn finish(&self) {}
    /// A line the user should read (a note about the input, the gate's thresholds, a skipped row).
    fn note(&self, _line: &str) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}
