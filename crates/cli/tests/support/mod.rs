//! What several test files share: llama.cpp's real server.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// llama.cpp's own OpenAI-compatible server (llama-cpp-python, installed by scripts/setup.sh into
/// `.venv-llamacpp`), serving the bundled SmolLM2 GGUF on a free local port.
pub struct LlamaServer {
    child: std::process::Child,
    pub base: String,
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `extra`: more server arguments (`--embedding true`, for instance).
pub fn start_llama_cpp_server(extra: &[&str]) -> Option<LlamaServer> {
    let python = root().join(".venv-llamacpp/bin/python");
    let model = root().join("models/smollm2-135m-instruct/model.gguf");
    if !python.is_file() || !model.is_file() {
        assert!(
            std::env::var_os("TRIALFORGE_REQUIRE_LLAMA_CPP").is_none(),
            "{} or {} is missing: run scripts/setup.sh",
            python.display(),
            model.display()
        );
        eprintln!("skipped: no llama.cpp server here (run scripts/setup.sh)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(python)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(&model)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--n_ctx", "4096", "--n_threads", "2"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let server = LlamaServer {
        child,
        base: format!("http://127.0.0.1:{port}/v1"),
    };
    let started = std::time::Instant::now();
    let agent = ureq::Agent::new_with_defaults();
    while agent.get(format!("{}/models", server.base)).call().is_err() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "the llama.cpp server did not come up"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    Some(server)
}
