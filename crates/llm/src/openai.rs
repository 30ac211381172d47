//! Any OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp's server, Ollama, TGI).
//!
//! - The API key is read from an environment variable whose *name* is configured; the key itself is
//!   never logged, printed or written (this type has no `Debug`, and errors never quote it).
//! - Retries with exponential backoff and full jitter on 429, 5xx, timeouts, transport errors and
//!   truncated or unparsable bodies; a `Retry-After` header (seconds) is honoured, capped at
//!   `max_backoff`. Other 4xx answers fail at once.
//! - JSON Schema requests use `response_format: {type: json_schema}`; a server that rejects that
//!   field (a 400 naming it) is asked again without it, and remembered, so callers parse and
//!   validate the text themselves.

use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};

use crate::{ChatMessage, ChatModel, Completion, FinishReason, LlmError, Result, SamplingParams};

#[derive(Clone)]
pub struct OpenAiOptions {
    /// Up to and including the version path, e.g. `https://api.openai.com/v1` or
    /// `http://localhost:8000/v1`; `/chat/completions` is appended.
    pub base_url: String,
    pub model: String,
    /// Name of the environment variable holding the API key (none: no Authorization header).
    pub api_key_env: Option<String>,
    pub timeout: Duration,
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for OpenAiOptions {
    fn default() -> Self {
        OpenAiOptions {
            base_url: "https://api.openai.com/v1".into(),
            model: String::new(),
            api_key_env: Some("OPENAI_API_KEY".into()),
            timeout: Duration::from_secs(120),
            max_retries: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
        }
    }
}

pub struct OpenAiChat {
    opts: OpenAiOptions,
    api_key: Option<String>,
    agent: ureq::Agent,
    /// Cleared when the server turns out not to support `response_format` json_schema.
    schema_supported: bool,
    id: String,
    /// Requests sent, retries included.
    pub requests: usize,
    pub retries: usize,
}

enum Failure {
    /// Worth another try, after at least this long (from Retry-After) if given.
    Retry(String, Option<Duration>),
    Fatal(String),
}

impl OpenAiChat {
    pub fn new(opts: OpenAiOptions) -> Result<Self> {
        let api_key = match &opts.api_key_env {
            Some(var) => match std::env::var(var) {
                Ok(k) if !k.trim().is_empty() => Some(k.trim().to_string()),
                _ => None,
            },
            None => None,
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(opts.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let id = model_id(&opts.model, &opts.base_url);
        Ok(OpenAiChat {
            opts,
            api_key,
            agent,
            schema_supported: true,
            id,
            requests: 0,
            retries: 0,
        })
    }

    fn url(&self) -> String {
        format!(
            "{}/chat/completions",
            self.opts.base_url.trim_end_matches('/')
        )
    }

    fn body(
        &self,
        messages: &[ChatMessage],
        params: &SamplingParams,
        schema: Option<&Value>,
    ) -> Value {
        request_body(
            &self.opts.model,
            messages,
            params,
            schema.filter(|_| self.schema_supported),
        )
    }

    fn send(&mut self, body: &Value) -> std::result::Result<Value, Failure> {
        self.requests += 1;
        let mut req = self
            .agent
            .post(&self.url())
            .header("Content-Type", "application/json");
        if let Some(k) = &self.api_key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        let mut resp = match req.send(body.to_string()) {
            Ok(r) => r,
            // Timeouts, refused or reset connections: transient.
            Err(e) => return Err(Failure::Retry(format!("transport: {e}"), None)),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(Duration::from_secs_f64);
        let text = match resp.body_mut().read_to_string() {
            Ok(t) => t,
            Err(e) => {
                return Err(Failure::Retry(
                    format!("reading the body: {e}"),
                    retry_after,
                ))
            }
        };
        match status {
            200..=299 => serde_json::from_str(&text)
                .map_err(|e| Failure::Retry(format!("truncated or invalid JSON body: {e}"), None)),
            429 | 500..=599 => Err(Failure::Retry(
                format!("HTTP {status}: {}", snippet(&text)),
                retry_after,
            )),
            _ => Err(Failure::Fatal(format!("HTTP {status}: {}", snippet(&text)))),
        }
    }

    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            return d.min(self.opts.max_backoff);
        }
        let cap = self
            .opts
            .initial_backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.opts.max_backoff);
        // Full jitter: anywhere in [0, cap], so many clients do not retry in step.
        cap.mul_f64(rand::rng().random_range(0.0..=1.0))
    }
}

/// The model id an OpenAI-compatible backend reports (part of cache keys and provenance).
pub fn model_id(model: &str, base_url: &str) -> String {
    format!("openai:{model}@{}", base_url.trim_end_matches('/'))
}

/// A chat-completions request body.
pub fn request_body(
    model: &str,
    messages: &[ChatMessage],
    params: &SamplingParams,
    schema: Option<&Value>,
) -> Value {
    let mut body = json!({
        "model": model,
        "messages": messages,
        "temperature": params.temperature,
        "max_tokens": params.max_tokens,
        "seed": params.seed,
    });
    if let Some(p) = params.top_p {
        body["top_p"] = json!(p);
    }
    if let Some(s) = schema {
        body["response_format"] = json!({
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": s, "strict": true},
        });
    }
    body
}

/// A chat-completions answer as a [`Completion`].
pub fn parse_completion(value: &Value, seconds: f64) -> std::result::Result<Completion, String> {
    let choice = &value["choices"][0];
    let text = choice["message"]["content"]
        .as_str()
        .ok_or("no choices[0].message.content in the answer")?;
    let finish_reason = match choice["finish_reason"].as_str() {
        Some("length") => FinishReason::Length,
        _ => FinishReason::Stop,
    };
    let usage = |k: &str| value["usage"][k].as_u64().unwrap_or(0) as usize;
    Ok(Completion {
        text: text.trim().to_string(),
        finish_reason,
        prompt_tokens: usage("prompt_tokens"),
        completion_tokens: usage("completion_tokens"),
        prefill_seconds: 0.0,
        decode_seconds: seconds,
        cached: false,
    })
}

fn snippet(s: &str) -> String {
    let s: String = s.chars().take(300).collect();
    s.replace('\n', " ")
}

impl ChatModel for OpenAiChat {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn chat_json(
        &mut self,
        messages: &[ChatMessage],
        params: &SamplingParams,
        schema: Option<&Value>,
    ) -> Result<Completion> {
        let started = Instant::now();
        let mut attempt = 0;
        let value = loop {
            let body = self.body(messages, params, schema);
            match self.send(&body) {
                Ok(v) => break v,
                Err(Failure::Fatal(msg))
                    if schema.is_some()
                        && self.schema_supported
                        && msg.starts_with("HTTP 400")
                        && msg.contains("response_format") =>
                {
                    tracing::warn!(
                        "{}: no json_schema response_format support; validating the text instead",
                        self.opts.base_url
                    );
                    self.schema_supported = false;
                }
                Err(Failure::Fatal(msg)) => {
                    return Err(LlmError::Remote(format!("{}: {msg}", self.url())))
                }
                Err(Failure::Retry(msg, after)) => {
                    if attempt >= self.opts.max_retries {
                        return Err(LlmError::Remote(format!(
                            "{}: giving up after {} retries: {msg}",
                            self.url(),
                            attempt
                        )));
                    }
                    let wait = self.backoff(attempt, after);
                    tracing::info!(
                        "{}: {msg}; retry {} in {:.1}s",
                        self.url(),
                        attempt + 1,
                        wait.as_secs_f64()
                    );
                    std::thread::sleep(wait);
                    attempt += 1;
                    self.retries += 1;
                }
            }
        };
        parse_completion(&value, started.elapsed().as_secs_f64())
            .map_err(|e| LlmError::Remote(format!("{}: {e}", self.url())))
    }
}
