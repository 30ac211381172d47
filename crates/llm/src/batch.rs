//! OpenAI batch files, for runs too large for one machine or cheaper in batch: a [`BatchRecorder`]
//! stands in for the server, writing each request it has no answer for as one line of batch-API
//! request JSONL (also what vLLM's `run_batch` reads) and deferring it; [`ingest`] puts the batch's
//! results into the response cache under the same request hash (the `custom_id`), so the next run
//! finds them and goes on.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Value};

use crate::cache::{request_hash, store};
use crate::openai::{model_id, parse_completion, request_body};
use crate::{ChatMessage, ChatModel, Completion, LlmError, Result, SamplingParams};

/// The backend name batch requests are keyed under: the same as a live OpenAI-compatible backend's.
pub const BACKEND: &str = "openai";

pub struct BatchRecorder {
    model: String,
    id: String,
    path: PathBuf,
    file: File,
    written: HashSet<String>,
    /// Request lines written by this recorder.
    pub emitted: usize,
}

impl BatchRecorder {
    /// Appends to `path`; requests already in it are not written twice.
    pub fn open(path: &Path, model: &str, base_url: &str) -> Result<Self> {
        let io = |source| LlmError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut written = HashSet::new();
        if let Ok(f) = File::open(path) {
            for line in std::io::BufReader::new(f).lines() {
                let line = line.map_err(io)?;
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if let Some(id) = v["custom_id"].as_str() {
                        written.insert(id.to_string());
                    }
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(BatchRecorder {
            model: model.to_string(),
            id: model_id(model, base_url),
            path: path.to_path_buf(),
            file,
            written,
            emitted: 0,
        })
    }
}

impl ChatModel for BatchRecorder {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn chat_json(
        &mut self,
        messages: &[ChatMessage],
        params: &SamplingParams,
        schema: Option<&Value>,
    ) -> Result<Completion> {
        let key = request_hash(BACKEND, &self.id, messages, params, schema);
        if self.written.insert(key.clone()) {
            let line = json!({
                "custom_id": key,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": request_body(&self.model, messages, params, schema),
            });
            let io = |source| LlmError::Io {
                path: self.path.clone(),
                source,
            };
            writeln!(self.file, "{line}").map_err(io)?;
            self.file.flush().map_err(io)?;
            self.emitted += 1;
        }
        Err(LlmError::Deferred(key))
    }
}

#[derive(Debug, Default, Serialize)]
pub struct IngestSummary {
    pub stored: usize,
    /// (custom_id or line, why) of results that carried no answer.
    pub failed: Vec<(String, String)>,
}

/// Reads batch results (`{"custom_id", "response": {"status_code", "body"}, "error"}` per line) into
/// the response cache at `cache_dir`.
pub fn ingest(results: &Path, cache_dir: &Path) -> Result<IngestSummary> {
    let io = |source| LlmError::Io {
        path: results.to_path_buf(),
        source,
    };
    let f = File::open(results).map_err(io)?;
    let mut summary = IngestSummary::default();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                summary
                    .failed
                    .push((format!("line {}", i + 1), format!("not JSON: {e}")));
                continue;
            }
        };
        let id = v["custom_id"].as_str().unwrap_or("").to_string();
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            summary
                .failed
                .push((format!("line {}", i + 1), "no trialforge custom_id".into()));
            continue;
        }
        let status = v["response"]["status_code"].as_u64().unwrap_or(0);
        if status != 200 {
            let why = v["error"].to_string();
            summary.failed.push((id, format!("status {status}: {why}")));
            continue;
        }
        match parse_completion(&v["response"]["body"], 0.0) {
            Ok(c) => {
                store(cache_dir, &id, &c)?;
                summary.stored += 1;
            }
            Err(e) => summary.failed.push((id, e)),
        }
    }
    Ok(summary)
}
