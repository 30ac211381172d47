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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};

use crate::{ChatMessage, ChatModel, Completion, FinishReason, LlmError, Result, SamplingParams};

const CHAT_PATH: &str = "chat/completions";

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
    http: Transport,
    /// The dialect in use: the configured one, or the first in [`StructuredOutput::ALL`] this
    /// server has not refused.
    dialect: StructuredOutput,
    id: String,
    /// Requests sent, retries included.
    pub requests: usize,
    pub retries: usize,
}

pub(crate) enum Failure {
    /// Worth another try, after at least this long (from Retry-After) if given.
    Retry(String, Option<Duration>),
    Fatal(String),
    /// The server does not understand the structured-output dialect of the request.
    Dialect(String),
    /// The request was changed (another dialect): send it again at once.
    Changed,
}

/// The HTTP side every OpenAI-compatible client shares: the agent, the key, one request, and the
/// retry loop with backoff.
pub(crate) struct Transport {
    base_url: String,
    api_key: Option<String>,
    agent: ureq::Agent,
    max_retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
}

/// Requests sent and retries, for the clients whose methods take `&self`.
#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) requests: AtomicUsize,
    pub(crate) retries: AtomicUsize,
}

impl Transport {
    pub(crate) fn new(opts: &OpenAiOptions) -> Transport {
        let api_key = opts
            .api_key_env
            .as_deref()
            .and_then(|var| std::env::var(var).ok())
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(opts.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Transport {
            base_url: opts.base_url.trim_end_matches('/').to_string(),
            api_key,
            agent,
            max_retries: opts.max_retries,
            initial_backoff: opts.initial_backoff,
            max_backoff: opts.max_backoff,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base_url)
    }

    /// One POST of `body` to `path`. `structured`: an error answer may be a refused dialect.
    pub(crate) fn send(
        &self,
        path: &str,
        body: &Value,
        structured: bool,
    ) -> std::result::Result<Value, Failure> {
        let mut req = self
            .agent
            .post(&self.url(path))
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
            return d.min(self.max_backoff);
        }
        let cap = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_backoff);
        // Full jitter: anywhere in [0, cap], so many clients do not retry in step.
        cap.mul_f64(rand::rng().random_range(0.0..=1.0))
    }

    /// Calls `attempt` (which sends one request) until it succeeds, fails for good, or the retries
    /// are spent, sleeping with backoff between transient failures.
    pub(crate) fn with_retries(
        &self,
        path: &str,
        counts: &Counts,
        mut attempt: impl FnMut() -> std::result::Result<Value, Failure>,
    ) -> Result<Value> {
        let url = self.url(path);
        let mut retry = 0;
        loop {
            counts.requests.fetch_add(1, Ordering::Relaxed);
            match attempt() {
                Ok(v) => return Ok(v),
                Err(Failure::Changed) => {}
                Err(Failure::Fatal(msg) | Failure::Dialect(msg)) => {
                    return Err(LlmError::Remote(format!("{url}: {msg}")))
                }
                Err(Failure::Retry(msg, after)) => {
                    if retry >= self.max_retries {
                        return Err(LlmError::Remote(format!(
                            "{url}: giving up after {retry} retries: {msg}"
                        )));
                    }
                    let wait = self.backoff(retry, after);
                    tracing::info!(
                        "{url}: {msg}; retry {} in {:.1}s",
                        retry + 1,
                        wait.as_secs_f64()
                    );
                    std::thread::sleep(wait);
                    retry += 1;
                    counts.retries.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

impl OpenAiChat {
    pub fn new(opts: OpenAiOptions) -> Result<Self> {
        let http = Transport::new(&opts);
        let id = model_id(&opts.model, &opts.base_url);
        let dialect = opts.structured.unwrap_or(StructuredOutput::JsonSchema);
        Ok(OpenAiChat {
            opts,
            http,
            dialect,
            id,
            requests: 0,
            retries: 0,
        })
    }

    /// The dialect this client speaks now (after any fallback).
    pub fn dialect(&self) -> StructuredOutput {
        self.dialect
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
        let counts = Counts::default();
        let (model, base_url, configured) =
            (&self.opts.model, &self.opts.base_url, self.opts.structured);
        let dialect = &mut self.dialect;
        let http = &self.http;
        let value = http.with_retries(CHAT_PATH, &counts, || {
            let body = request_body_in(model, messages, params, schema, *dialect);
            let structured = schema.is_some() && *dialect != StructuredOutput::None;
            match http.send(CHAT_PATH, &body, structured) {
                Err(Failure::Dialect(msg)) if configured.is_none() => {
                    let next = StructuredOutput::ALL
                        .into_iter()
                        .skip_while(|d| d != dialect)
                        .nth(1)
                        .unwrap_or(StructuredOutput::None);
                    tracing::warn!(
                        "{base_url}: the server refused structured output as {} ({msg}); trying {}{}",
                        dialect.name(),
                        next.name(),
                        if next == StructuredOutput::None {
                            " (unconstrained text, validated afterwards)"
                        } else {
                            ""
                        }
                    );
                    *dialect = next;
                    Err(Failure::Changed)
                }
                Err(Failure::Dialect(msg)) => Err(Failure::Fatal(format!(
                    "the server refused structured output as {} (set by --structured-output): {msg}",
                    dialect.name()
                ))),
                other => other,
            }
        });
        self.requests += counts.requests.load(Ordering::Relaxed);
        self.retries += counts.retries.load(Ordering::Relaxed);
        let value = value?;
        parse_completion(&value, started.elapsed().as_secs_f64())
            .map_err(|e| LlmError::Remote(format!("{}: {e}", self.http.url(CHAT_PATH))))
    }
}
