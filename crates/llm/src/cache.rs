//! A response cache in front of any [`ChatModel`]: one JSON file per request, keyed by the sha256 of
//! (backend, model, messages, sampling parameters including the seed, schema). A re-run costs
//! nothing and returns the same text. Files are written to a temporary name and renamed, so a kill
//! never leaves a half-written entry.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{ChatMessage, ChatModel, Completion, LlmError, Result, SamplingParams};

pub struct CachedChat<M> {
    inner: M,
    dir: PathBuf,
    backend: String,
    pub hits: usize,
    pub misses: usize,
}

impl<M: ChatModel> CachedChat<M> {
    /// `backend` names the kind of server or runtime (`local`, `openai`, ...), part of the key.
    pub fn new(inner: M, dir: &Path, backend: &str) -> Self {
        CachedChat {
            inner,
            dir: dir.to_path_buf(),
            backend: backend.to_string(),
            hits: 0,
            misses: 0,
        }
    }

    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// The cache key of a request (also usable as a prompt hash in provenance).
    pub fn key(
        &self,
        messages: &[ChatMessage],
        params: &SamplingParams,
        schema: Option<&serde_json::Value>,
    ) -> String {
        request_hash(
            &self.backend,
            self.inner.model_id(),
            messages,
            params,
            schema,
        )
    }

    fn path(&self, key: &str) -> PathBuf {
        entry_path(&self.dir, key)
    }
}

/// Where the cache keeps the answer to request `key`.
pub fn entry_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(&key[..2.min(key.len())])
        .join(format!("{key}.json"))
}

/// Stores an answer under `key`: to a temporary name, then renamed.
pub fn store(dir: &Path, key: &str, c: &Completion) -> Result<()> {
    let path = entry_path(dir, key);
    let io = |source| LlmError::Io {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    // A name of its own per writer: concurrent workers (or processes) never share a partial file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("json.{}-{n}.partial", std::process::id()));
    std::fs::write(
        &tmp,
        serde_json::to_string(c).expect("completions serialise"),
    )
    .map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// sha256 of the canonical JSON of a request.
pub fn request_hash(
    backend: &str,
    model: &str,
    messages: &[ChatMessage],
    params: &SamplingParams,
    schema: Option<&serde_json::Value>,
) -> String {
    let canonical = serde_json::json!({
        "backend": backend,
        "model": model,
        "messages": messages,
        "params": params,
        "schema": schema,
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

impl<M: ChatModel> ChatModel for CachedChat<M> {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }

    fn chat_json(
        &mut self,
        messages: &[ChatMessage],
        params: &SamplingParams,
        schema: Option<&serde_json::Value>,
    ) -> Result<Completion> {
        let key = self.key(messages, params, schema);
        let path = self.path(&key);
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(mut c) = serde_json::from_str::<Completion>(&text) {
                self.hits += 1;
                c.cached = true;
                return Ok(c);
            }
            tracing::warn!(
                "{}: unreadable cache entry, asking the model again",
                path.display()
            );
        }
        let c = self.inner.chat_json(messages, params, schema)?;
        self.misses += 1;
        store(&self.dir, &key, &c)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FinishReason;

    /// Counts calls; answers with the call number so a cache hit is visible.
    struct Counter(usize);
    impl ChatModel for Counter {
        fn model_id(&self) -> &str {
            "counter"
        }
        fn chat_json(
            &mut self,
            _: &[ChatMessage],
            _: &SamplingParams,
            _: Option<&serde_json::Value>,
        ) -> Result<Completion> {
            self.0 += 1;
            Ok(Completion {
                text: format!("answer {}", self.0),
                finish_reason: FinishReason::Stop,
                prompt_tokens: 3,
                completion_tokens: 2,
                prefill_seconds: 0.0,
                decode_seconds: 0.0,
                cached: false,
            })
        }
    }

    #[test]
    fn same_request_is_served_from_disk_other_seed_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let msgs = [ChatMessage::user("hi")];
        let p = SamplingParams::default();
        let mut c = CachedChat::new(Counter(0), dir.path(), "test");
        assert_eq!(c.chat(&msgs, &p).unwrap().text, "answer 1");
        let again = c.chat(&msgs, &p).unwrap();
        assert_eq!((again.text.as_str(), again.cached), ("answer 1", true));
        let other = SamplingParams {
            seed: 9,
            ..p.clone()
        };
        assert_eq!(c.chat(&msgs, &other).unwrap().text, "answer 2");
        let schema = serde_json::json!({"type": "object"});
        assert_eq!(
            c.chat_json(&msgs, &p, Some(&schema)).unwrap().text,
            "answer 3"
        );
        // A new process (a fresh wrapper) finds the entries on disk.
        let mut c2 = CachedChat::new(Counter(100), dir.path(), "test");
        assert_eq!(c2.chat(&msgs, &p).unwrap().text, "answer 1");
        assert_eq!((c2.hits, c2.misses), (1, 0));
        // Another backend name is another key.
        let mut c3 = CachedChat::new(Counter(100), dir.path(), "other");
        assert_eq!(c3.chat(&msgs, &p).unwrap().text, "answer 101");
    }
}
