//! Any OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp's server, Ollama, TGI).
//!
//! - The API key is read from an environment variable whose *name* is configured; the key itself is
//!   never logged, printed or written (this type has no `Debug`, and errors never quote it).
//! - Retries with exponential backoff and full jitter on 429, 5xx, timeouts, transport errors and
//!   truncated or unparsable bodies; a `Retry-After` header (seconds) is honoured, capped at
//!   `max_backoff`. Other 4xx answers fail at once.
//! - JSON Schema requests speak one of the structured-output dialects servers know
//!   ([`StructuredOutput`]): OpenAI's `response_format` `json_schema`, llama.cpp's `json_object`
//!   with a `schema`, vLLM's `guided_json`, or none. Unless one is configured, the first is tried
//!   first; an answer that says the server does not understand it (any 4xx or 5xx whose body names
//!   a structured-output field or says the request has unsupported parts) moves to the next one at
//!   once, and the dialect that works is remembered. With none, the text is unconstrained and
//!   callers validate it as they always do.

use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};

use crate::{ChatMessage, ChatModel, Completion, FinishReason, LlmError, Result, SamplingParams};

/// How a request asks the server to follow a JSON Schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StructuredOutput {
    /// OpenAI (also recent vLLM, Ollama, TGI): `response_format: {type: "json_schema", json_schema:
    /// {name, schema, strict}}`.
    JsonSchema,
    /// llama.cpp's server and llama-cpp-python: `response_format: {type: "json_object", schema}`.
    JsonObject,
    /// vLLM's extra parameter: `guided_json: schema`.
    GuidedJson,
    /// No constraint: the text is validated afterwards.
    None,
}

impl StructuredOutput {
    /// The order in which dialects are tried.
    pub const ALL: [StructuredOutput; 4] = [
        StructuredOutput::JsonSchema,
        StructuredOutput::JsonObject,
        StructuredOutput::GuidedJson,
        StructuredOutput::None,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StructuredOutput::JsonSchema => "json-schema",
            StructuredOutput::JsonObject => "json-object",
            StructuredOutput::GuidedJson => "guided-json",
            StructuredOutput::None => "none",
        }
    }
}

impl std::str::FromStr for StructuredOutput {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        StructuredOutput::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                format!("unknown structured-output dialect `{s}` (expected json-schema, json-object, guided-json or none)")
            })
    }
}

/// Whether an error answer says the server does not take a structured-output dialect.
fn rejects_dialect(status: u16, body: &str) -> bool {
    if status == 429 || !(400..=599).contains(&status) {
        return false;
    }
    let b = body.to_lowercase();
    [
        "response_format",
        "json_schema",
        "json_object",
        "guided_json",
        "schema",
        "extra inputs",
        "extra_forbidden",
        "unrecognized",
        "not supported",
        "unsupported",
    ]
    .iter()
    .any(|k| b.contains(k))
}

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
    /// The structured-output dialect; `None` = find out (see the module docs).
    pub structured: Option<StructuredOutput>,
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
            structured: None,
        }
    }
}

pub struct OpenAiChat {
    opts: OpenAiOptions,
    api_key: Option<String>,
    agent: ureq::Agent,
    /// The dialect in use: the configured one, or the first in [`StructuredOutput::ALL`] this
    /// server has not refused.
    dialect: StructuredOutput,
    id: String,
    /// Requests sent, retries included.
    pub requests: usize,
    pub retries: usize,
}

enum Failure {
    /// Worth another try, after at least this long (from Retry-After) if given.
    Retry(String, Option<Duration>),
    Fatal(String),
    /// The server does not understand the structured-output dialect of the request.
    Dialect(String),
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
        let dialect = opts.structured.unwrap_or(StructuredOutput::JsonSchema);
        Ok(OpenAiChat {
            opts,
            api_key,
            agent,
            dialect,
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
        request_body_in(&self.opts.model, messages, params, schema, self.dialect)
    }

    /// The dialect this client speaks now (after any fallback).
    pub fn dialect(&self) -> StructuredOutput {
        self.dialect
    }

    fn send(&mut self, body: &Value, structured: bool) -> std::result::Result<Value, Failure> {
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
        if structured && rejects_dialect(status, &text) {
            return Err(Failure::Dialect(format!(
                "HTTP {status}: {}",
                snippet(&text)
            )));
        }
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

/// A chat-completions request body in OpenAI's dialect (batch files use it).
pub fn request_body(
    model: &str,
    messages: &[ChatMessage],
    params: &SamplingParams,
    schema: Option<&Value>,
) -> Value {
    request_body_in(
        model,
        messages,
        params,
        schema,
        StructuredOutput::JsonSchema,
    )
}

/// A chat-completions request body, asking for `schema` in `dialect`.
pub fn request_body_in(
    model: &str,
    messages: &[ChatMessage],
    params: &SamplingParams,
    schema: Option<&Value>,
    dialect: StructuredOutput,
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
        match dialect {
            StructuredOutput::JsonSchema => {
                body["response_format"] = json!({
                    "type": "json_schema",
                    "json_schema": {"name": "response", "schema": s, "strict": true},
                })
            }
            StructuredOutput::JsonObject => {
                body["response_format"] = json!({"type": "json_object", "schema": s})
            }
            StructuredOutput::GuidedJson => body["guided_json"] = s.clone(),
            StructuredOutput::None => {}
        }
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
            let structured = schema.is_some() && self.dialect != StructuredOutput::None;
            match self.send(&body, structured) {
                Ok(v) => break v,
                Err(Failure::Dialect(msg)) if self.opts.structured.is_none() => {
                    let next = StructuredOutput::ALL
                        .into_iter()
                        .skip_while(|d| *d != self.dialect)
                        .nth(1)
                        .unwrap_or(StructuredOutput::None);
                    tracing::warn!(
                        "{}: the server refused structured output as {} ({msg}); trying {}{}",
                        self.opts.base_url,
                        self.dialect.name(),
                        next.name(),
                        if next == StructuredOutput::None {
                            " (unconstrained text, validated afterwards)"
                        } else {
                            ""
                        }
                    );
                    self.dialect = next;
                }
                Err(Failure::Dialect(msg)) => {
                    return Err(LlmError::Remote(format!(
                        "{}: the server refused structured output as {} (set by --structured-output): {msg}",
                        self.url(),
                        self.dialect.name()
                    )))
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
