//! The HTTP layer only: routes, request parsing into the trial crate's types, JSON errors, limits.
//! Every answer comes from the [`Engine`].

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use trialforge_trial::input::{trial_from_json, InputError, InputShape};

use crate::engine::{Engine, JobError};

/// Limits of the API.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Longest a request may wait for and take from the engine.
    pub timeout: Duration,
    /// Most similar trials a request may ask for.
    pub max_k: usize,
    /// Most trials one predict request may hold.
    pub max_trials: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 1 << 20,
            timeout: Duration::from_secs(30),
            max_k: 50,
            max_trials: 64,
        }
    }
}

#[derive(Clone)]
struct AppState {
    engine: Engine,
    limits: Limits,
}

/// A JSON error: `{"error": {"status", "code", "message", "field"?, "expected"?}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    expected: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            expected: None,
        }
    }

    fn field(field: impl Into<String>, expected: impl Into<String>) -> Self {
        let (field, expected) = (field.into(), expected.into());
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_field",
            message: format!("field `{field}`: {expected}"),
            field: Some(field),
            expected: Some(expected),
        }
    }
}

impl From<InputError> for ApiError {
    fn from(e: InputError) -> Self {
        ApiError::field(e.field, e.expected)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({
            "status": self.status.as_u16(),
            "code": self.code,
            "message": self.message,
        });
        if let Some(f) = self.field {
            error["field"] = json!(f);
        }
        if let Some(e) = self.expected {
            error["expected"] = json!(e);
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

fn job_error(e: JobError) -> ApiError {
    match e {
        JobError::Gone => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "engine_gone",
            "the prediction engine stopped; restart the server",
        ),
        JobError::Failed(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "pipeline_failed",
            format!("{e:#}"),
        ),
    }
}

/// Runs engine work under the request timeout.
async fn within<T>(
    limits: &Limits,
    work: impl std::future::Future<Output = Result<T, JobError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(limits.timeout, work).await {
        Ok(r) => r.map_err(job_error),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "no answer within {:.0}s: the server is busy; retry later",
                limits.timeout.as_secs_f64()
            ),
        )),
    }
}

/// The router: the API under `/v1`, the web page at `/`.
pub fn router(engine: Engine, limits: Limits) -> Router {
    let max_body = limits.max_body;
    Router::new()
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/style.css", get(style))
        .route("/v1/health", get(health))
        .route("/v1/predict", post(predict))
        .route("/v1/search", get(search))
        .route("/v1/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // The predict handler enforces `max_body` itself (see `read_body`).
        .layer(DefaultBodyLimit::max(max_body.saturating_mul(16)))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "panic",
                    "the server failed on this request (a bug: please report it with the request)",
                )
                .into_response()
            },
        ))
        .with_state(AppState { engine, limits })
}

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");
const OPENAPI: &str = include_str!("../assets/openapi.json");

async fn page() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_CSS,
    )
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such path; the API is described at /v1/openapi.json",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not take that method; see /v1/openapi.json",
    )
}

async fn health(State(s): State<AppState>) -> Json<Value> {
    Json(json!({ "status": "ok", "engine": &*s.engine.info }))
}

#[derive(Deserialize)]
struct KParam {
    k: Option<String>,
}

/// `k` from the query string: 1..=max_k, default 5.
fn parse_k(k: Option<&str>, max_k: usize) -> Result<usize, ApiError> {
    match k {
        None => Ok(5.min(max_k)),
        Some(text) => match text.trim().parse::<usize>() {
            Ok(k) if (1..=max_k).contains(&k) => Ok(k),
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                format!("query parameter `k`: expected a whole number from 1 to {max_k}, found `{text}`"),
            )
            .with_field("k", format!("a whole number from 1 to {max_k}"))),
        },
    }
}

impl ApiError {
    fn with_field(mut self, field: &str, expected: String) -> Self {
        self.field = Some(field.into());
        self.expected = Some(expected);
        self
    }
}

/// One scored trial in a predict answer.
#[derive(Serialize)]
struct PredictAnswer {
    id: String,
    /// The shape the input was read as.
    input: InputShape,
    title: String,
    phases: Vec<String>,
    conditions: Vec<String>,
    drugs: Vec<String>,
    probability: f32,
    similar: Vec<Value>,
}

async fn predict(
    State(s): State<AppState>,
    Query(q): Query<KParam>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = read_body(body, &s.limits).await?;
    let k = parse_k(q.k.as_deref(), s.limits.max_k)?;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        if !ct.starts_with("application/json") && !ct.starts_with("text/plain") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("expected a JSON body (Content-Type: application/json), found `{ct}`"),
            ));
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "expected a JSON body: a trial, a ClinicalTrials.gov v2 study, a TOP row, or an array of them",
        ));
    }
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!(
                "the body is not valid JSON: {e} (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    let (items, many) = match value {
        Value::Array(items) => (items, true),
        other => (vec![other], false),
    };
    if items.is_empty() || items.len() > s.limits.max_trials {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            format!(
                "expected 1 to {} trials, found {}",
                s.limits.max_trials,
                items.len()
            ),
        ));
    }
    let mut trials = Vec::with_capacity(items.len());
    let mut shapes = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let (t, shape) = trial_from_json(item).map_err(|e| {
            if many {
                ApiError::field(format!("[{i}].{}", e.field), e.expected)
            } else {
                ApiError::from(e)
            }
        })?;
        trials.push(t);
        shapes.push(shape);
    }
    let scored = within(&s.limits, s.engine.predict(trials.clone(), k)).await?;
    let answers: Vec<PredictAnswer> = trials
        .into_iter()
        .zip(shapes)
        .zip(scored)
        .map(|((t, input), sc)| PredictAnswer {
            id: t.id,
            input,
            title: t.protocol.title,
            phases: t.protocol.phases.iter().map(|p| p.to_string()).collect(),
            conditions: t.protocol.conditions,
            drugs: t.protocol.drugs.into_iter().map(|d| d.name).collect(),
            probability: sc.probability,
            similar: sc.similar.iter().map(hit_json).collect(),
        })
        .collect();
    let model = &s.engine.info.model;
    let model = json!({
        "name": model.name,
        "trained_on": model.trained_on,
    });
    Ok(Json(if many {
        json!({ "model": model, "predictions": answers })
    } else {
        let mut v = serde_json::to_value(&answers[0]).unwrap_or(Value::Null);
        v["model"] = model;
        v
    }))
}

/// The body, at most `max_body` bytes, read within the request timeout. A body over the limit is
/// read on (and dropped) up to 16 times the limit before the 413, so the client, still writing,
/// gets the answer instead of a broken pipe, and its connection stays usable; past that the
/// connection is closed.
async fn read_body(body: Body, limits: &Limits) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let read = async {
        let mut body = body;
        let mut kept = Vec::new();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("reading the body: {e}"),
                )
            })?;
            if let Ok(data) = frame.into_data() {
                seen += data.len();
                if seen <= limits.max_body {
                    kept.extend_from_slice(&data);
                } else if seen > limits.max_body.saturating_mul(16) {
                    break;
                }
            }
        }
        if seen > limits.max_body {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the request body is over the limit of {} bytes",
                    limits.max_body
                ),
            ));
        }
        Ok(Bytes::from(kept))
    };
    match tokio::time::timeout(limits.timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the body did not arrive within {:.0}s",
                limits.timeout.as_secs_f64()
            ),
        )),
    }
}

/// A hit with its ClinicalTrials.gov link (for NCT ids).
fn hit_json(h: &trialforge_core::embed::SearchHit) -> Value {
    let mut v = serde_json::to_value(h).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("score");
    }
    let is_nct = h.id.len() == 11
        && h.id.starts_with("NCT")
        && h.id[3..].bytes().all(|b| b.is_ascii_digit());
    v["similarity"] = json!(h.score);
    v["url"] = if is_nct {
        json!(format!("https://clinicaltrials.gov/study/{}", h.id))
    } else {
        Value::Null
    };
    v
}

#[derive(Deserialize)]
struct SearchParams {
    q: Option<String>,
    k: Option<String>,
}

async fn search(
    State(s): State<AppState>,
    Query(p): Query<SearchParams>,
) -> Result<Json<Value>, ApiError> {
    let k = parse_k(p.k.as_deref(), s.limits.max_k)?;
    let q = p.q.unwrap_or_default();
    let q = q.trim();
    if q.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "query parameter `q`: expected the text to search for (a condition, a drug, criteria)",
        )
        .with_field("q", "the text to search for".into()));
    }
    if q.len() > 10_000 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "query parameter `q`: expected at most 10,000 bytes",
        )
        .with_field("q", "at most 10,000 bytes".into()));
    }
    let hits = within(&s.limits, s.engine.search(q.to_string(), k)).await?;
    Ok(Json(json!({
        "query": q,
        "k": k,
        "hits": hits.iter().map(hit_json).collect::<Vec<_>>(),
    })))
}
