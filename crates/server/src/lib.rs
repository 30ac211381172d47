//! `trialforge serve`: the HTTP front-end. [`engine`] owns the loaded model, encoder and corpus
//! index on one worker thread (the work, through `trialforge_core`); [`http`] is only the routes,
//! parsing, JSON errors and limits (axum on tokio); [`load`] is the load bench that drives a
//! running server over real sockets.

pub mod engine;
pub mod http;
pub mod load;

use std::net::SocketAddr;

pub use engine::{Engine, EngineOptions};
pub use http::{router, Limits};
use trialforge_core::Environment;

/// What `serve` listens on and serves.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// `127.0.0.1:8088`; port 0 picks a free port (the address is printed).
    pub addr: SocketAddr,
    pub engine: EngineOptions,
    pub limits: Limits,
    /// Tokio worker threads for HTTP (the engine has its own thread).
    pub http_threads: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 8088)),
            engine: EngineOptions::default(),
            limits: Limits::default(),
            http_threads: 2,
        }
    }
}

/// Loads the engine, binds, prints `listening on http://ADDR` on stdout, and serves until
/// Ctrl-C (or SIGTERM), finishing the requests in flight.
pub fn serve(env: Environment, opts: ServeOptions) -> anyhow::Result<()> {
    let engine = Engine::start(env, opts.engine.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.http_threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding {}: {e}", opts.addr))?;
        let addr = listener.local_addr()?;
        let info = &engine.info;
        eprintln!(
            "serving model {} ({}), {} real trials of {}",
            info.model.name, info.model.dir, info.corpus.trials, info.corpus.source
        );
        println!("listening on http://{addr}");
        let app = router(engine, opts.limits.clone());
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        eprintln!("stopped");
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
