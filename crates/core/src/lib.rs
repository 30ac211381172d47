//! trialforge's pipelines as library functions: import, embed, search, generate, benchmark,
//! train / evaluate / predict, analyze / augment, bench and the demo. Each takes a typed options
//! value and returns a typed, serialisable result; long work reports through [`Progress`].
//!
//! The front-ends (the `trialforge` CLI, the HTTP server, the Python package) only translate their
//! inputs into these options and print or send the results; none of them holds a pipeline.

pub mod analyze;
pub mod augment;
pub mod bench;
pub mod data;
pub mod demo;
pub mod embed;
pub mod env;
pub mod generate;
pub mod predict;
pub mod progress;

pub use env::Environment;
pub use progress::{Progress, Silent};

/// Errors of the pipelines: the library crates' own errors with what was being done.
pub type Result<T> = anyhow::Result<T>;

/// An error and its causes, each once, as the front-ends show it: the library errors already name
/// their I/O cause in their own message, and anyhow's `{:#}` would print it twice.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message = format!("{message}: {cause}");
        }
    }
    message
}

/// Writes `value` as pretty JSON to `dir/name` (creating `dir`); the result files of the pipelines.
pub(crate) fn write_json<T: serde::Serialize>(
    dir: &std::path::Path,
    name: &str,
    value: &T,
) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
