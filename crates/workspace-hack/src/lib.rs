//! Build-time only: one feature set for every third-party crate, whatever part of the workspace is
//! built. Without it `cargo test --workspace`, `cargo run -p trialforge-cli` and the maturin wheel
//! (`-p trialforge-python`) each resolve different features for serde_json, ureq, log and others,
//! and CI compiled the whole dependency tree three times. The dependency list in `Cargo.toml` is
//! written by `cargo hakari generate` (configured in `.config/hakari.toml`); no code lives here.
