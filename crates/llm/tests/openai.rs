//! The OpenAI-compatible backend against a local server that returns real chat-completions JSON and
//! injects each fault: 429 with Retry-After, 5xx, a truncated body, a timeout, a rejected
//! response_format, a non-retryable 401, and a server that never recovers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use trialforge_llm::{
    CachedChat, ChatMessage, ChatModel, FinishReason, OpenAiChat, OpenAiOptions, SamplingParams,
    StructuredOutput,
};

enum Reply {
    Status(u16, Option<&'static str>, &'static str),
    Truncated,
    Slow(Duration),
    Ok(&'static str),
}

struct Seen {
    bodies: Vec<Value>,
    auth: Vec<Option<String>>,
}

fn completion(content: &str) -> String {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    })
    .to_string()
}

/// Serves `script` in order (the last reply repeats). Returns the base URL and what it saw.
fn serve(script: Vec<Reply>) -> (String, Arc<Mutex<Seen>>) {
    let script = Arc::new(script);
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", server.server_addr().to_ip().unwrap());
    let seen = Arc::new(Mutex::new(Seen {
        bodies: vec![],
        auth: vec![],
    }));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (i, mut req) in server.incoming_requests().enumerate() {
            assert_eq!(req.url(), "/v1/chat/completions");
            let mut body = String::new();
            req.as_reader().read_to_string(&mut body).unwrap();
            {
                let mut s = log.lock().unwrap();
                s.bodies.push(serde_json::from_str(&body).unwrap());
                s.auth.push(
                    req.headers()
                        .iter()
                        .find(|h| h.field.equiv("Authorization"))
                        .map(|h| h.value.to_string()),
                );
            }
            // Each request on its own thread, so a slow reply does not hold up the next request.
            let script = script.clone();
            std::thread::spawn(move || {
                let reply = script.get(i).unwrap_or_else(|| script.last().unwrap());
                let r = match reply {
                    Reply::Status(code, retry_after, text) => {
                        let mut r = tiny_http::Response::from_string(*text).with_status_code(*code);
                        if let Some(v) = retry_after {
                            r = r.with_header(
                                tiny_http::Header::from_bytes("Retry-After", *v).unwrap(),
                            );
                        }
                        r
                    }
                    Reply::Truncated => {
                        let full = completion("never seen");
                        tiny_http::Response::from_string(&full[..full.len() / 2])
                    }
                    Reply::Slow(d) => {
                        std::thread::sleep(*d);
                        tiny_http::Response::from_string(completion("too late"))
                    }
                    Reply::Ok(content) => tiny_http::Response::from_string(completion(content)),
                };
                let _ = req.respond(r);
            });
        }
    });
    (base, seen)
}

fn client(base: String, key_env: &str, max_retries: u32) -> OpenAiChat {
    OpenAiChat::new(OpenAiOptions {
        base_url: base,
        model: "test-model".into(),
        api_key_env: Some(key_env.into()),
        timeout: Duration::from_millis(700),
        max_retries,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(200),
        structured: None,
    })
    .unwrap()
}

#[test]
fn retries_every_transient_fault_then_succeeds() {
    std::env::set_var("TF_TEST_KEY_A", "sk-secret-a");
    let (base, seen) = serve(vec![
        Reply::Status(429, Some("0.05"), "{\"error\": \"rate limited\"}"),
        Reply::Status(503, None, "overloaded"),
        Reply::Truncated,
        Reply::Slow(Duration::from_millis(1500)),
        Reply::Ok("{\"a\": 1}"),
    ]);
    let mut c = client(base, "TF_TEST_KEY_A", 6);
    let schema = json!({"type": "object"});
    let started = Instant::now();
    let out = c
        .chat_json(
            &[ChatMessage::user("hi")],
            &SamplingParams {
                seed: 5,
                top_p: Some(0.9),
                ..Default::default()
            },
            Some(&schema),
        )
        .unwrap();
    assert_eq!(out.text, "{\"a\": 1}");
    assert_eq!((out.prompt_tokens, out.completion_tokens), (12, 5));
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert_eq!((c.requests, c.retries), (5, 4));
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "Retry-After was not honoured"
    );
    let s = seen.lock().unwrap();
    assert_eq!(s.bodies.len(), 5);
    let b = &s.bodies[0];
    assert_eq!(b["model"], "test-model");
    assert_eq!(b["messages"][0]["content"], "hi");
    assert_eq!(b["seed"], 5);
    assert_eq!(b["response_format"]["type"], "json_schema");
    assert_eq!(b["response_format"]["json_schema"]["schema"], schema);
    assert!(s
        .auth
        .iter()
        .all(|a| a.as_deref() == Some("Bearer sk-secret-a")));
}

#[test]
fn falls_back_dialect_by_dialect_and_remembers_the_one_that_works() {
    // An old server that takes no structured output at all, each refusal worded its own way.
    let (base, seen) = serve(vec![
        Reply::Status(
            400,
            None,
            "{\"error\": \"response_format is not supported\"}",
        ),
        Reply::Status(
            422,
            None,
            "{\"detail\": \"Extra inputs are not permitted: schema\"}",
        ),
        Reply::Status(
            400,
            None,
            "{\"error\": \"Unrecognized request argument supplied: guided_json\"}",
        ),
        Reply::Ok("{\"b\": 2}"),
        Reply::Ok("{\"b\": 3}"),
    ]);
    let mut c = client(base, "TF_TEST_KEY_UNSET", 2);
    let schema = json!({"type": "object"});
    let ask = |c: &mut OpenAiChat| {
        c.chat_json(
            &[ChatMessage::user("x")],
            &SamplingParams::default(),
            Some(&schema),
        )
        .unwrap()
        .text
    };
    assert_eq!(ask(&mut c), "{\"b\": 2}");
    assert_eq!(c.dialect(), StructuredOutput::None);
    assert_eq!(c.retries, 0, "a refused dialect is not a transient fault");
    assert_eq!(ask(&mut c), "{\"b\": 3}");
    let s = seen.lock().unwrap();
    assert_eq!(s.bodies[0]["response_format"]["type"], "json_schema");
    assert_eq!(s.bodies[1]["response_format"]["type"], "json_object");
    assert_eq!(s.bodies[1]["response_format"]["schema"], schema);
    assert!(s.bodies[2].get("response_format").is_none());
    assert_eq!(s.bodies[2]["guided_json"], schema);
    for b in &s.bodies[3..5] {
        assert!(b.get("response_format").is_none() && b.get("guided_json").is_none());
    }
    assert_eq!(s.bodies.len(), 5, "the working dialect is remembered");
    assert_eq!(
        s.auth[0], None,
        "no key variable set: no Authorization header"
    );
}

#[test]
fn llama_cpp_style_500_moves_to_json_object_but_overload_is_retried() {
    // llama-cpp-python answers json_schema with a 500 whose validation error names json_object;
    // a plain 503 is a transient fault and keeps the dialect.
    let (base, seen) = serve(vec![
        Reply::Status(503, None, "overloaded"),
        Reply::Status(
            500,
            None,
            "{\"error\": {\"message\": \"1 validation error: response_format.type: Input should be 'text' or 'json_object'\"}}",
        ),
        Reply::Ok("{\"c\": 1}"),
        Reply::Ok("plain"),
    ]);
    let mut c = client(base, "TF_TEST_KEY_UNSET", 3);
    let out = c
        .chat_json(
            &[ChatMessage::user("x")],
            &SamplingParams::default(),
            Some(&json!({"type": "object"})),
        )
        .unwrap();
    assert_eq!(out.text, "{\"c\": 1}");
    assert_eq!(c.dialect(), StructuredOutput::JsonObject);
    assert_eq!(c.retries, 1);
    // Free text carries no structured-output field, whatever the dialect.
    c.chat(&[ChatMessage::user("y")], &SamplingParams::default())
        .unwrap();
    let s = seen.lock().unwrap();
    assert_eq!(s.bodies[0]["response_format"]["type"], "json_schema");
    assert_eq!(s.bodies[1]["response_format"]["type"], "json_schema");
    assert_eq!(s.bodies[2]["response_format"]["type"], "json_object");
    assert!(s.bodies[3].get("response_format").is_none());
}

#[test]
fn a_configured_dialect_is_used_and_not_changed() {
    let (base, seen) = serve(vec![
        Reply::Ok("{}"),
        Reply::Status(400, None, "guided_json is not supported"),
    ]);
    let mut c = OpenAiChat::new(OpenAiOptions {
        base_url: base,
        model: "m".into(),
        api_key_env: None,
        max_retries: 0,
        structured: Some(StructuredOutput::GuidedJson),
        ..Default::default()
    })
    .unwrap();
    let schema = json!({"type": "object"});
    c.chat_json(
        &[ChatMessage::user("x")],
        &SamplingParams::default(),
        Some(&schema),
    )
    .unwrap();
    let err = c
        .chat_json(
            &[ChatMessage::user("x")],
            &SamplingParams::default(),
            Some(&schema),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("guided-json"), "{err}");
    assert_eq!(seen.lock().unwrap().bodies[0]["guided_json"], schema);
}

#[test]
fn client_errors_fail_at_once_without_leaking_the_key() {
    std::env::set_var("TF_TEST_KEY_B", "sk-secret-b");
    let (base, seen) = serve(vec![Reply::Status(
        401,
        None,
        "{\"error\": \"invalid api key\"}",
    )]);
    let mut c = client(base, "TF_TEST_KEY_B", 5);
    let err = c
        .chat(&[ChatMessage::user("x")], &SamplingParams::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(!err.contains("sk-secret-b"));
    assert_eq!(seen.lock().unwrap().bodies.len(), 1);
}

#[test]
fn gives_up_after_max_retries_and_caches_successes() {
    let (base, seen) = serve(vec![Reply::Status(500, None, "boom")]);
    let mut c = client(base, "TF_TEST_KEY_UNSET", 2);
    let err = c
        .chat(&[ChatMessage::user("x")], &SamplingParams::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("giving up after 2 retries") && err.contains("HTTP 500"),
        "{err}"
    );
    assert_eq!(seen.lock().unwrap().bodies.len(), 3);

    let (base, seen) = serve(vec![Reply::Ok("cached answer")]);
    let dir = tempfile::tempdir().unwrap();
    let mut cached = CachedChat::new(client(base, "TF_TEST_KEY_UNSET", 0), dir.path(), "openai");
    let a = cached
        .chat(&[ChatMessage::user("q")], &SamplingParams::default())
        .unwrap();
    let b = cached
        .chat(&[ChatMessage::user("q")], &SamplingParams::default())
        .unwrap();
    assert_eq!(a.text, b.text);
    assert!(b.cached);
    assert_eq!(
        seen.lock().unwrap().bodies.len(),
        1,
        "the second call cost nothing"
    );
}

/// A text's embedding on the test server: its length and its count of the letter `e` (not unit
/// length, so the client's normalisation shows), answered in reverse order with indices.
fn served_vector(text: &str) -> Vec<f64> {
    vec![text.len() as f64, text.matches('e').count() as f64, 1.0]
}

/// An embeddings server: `faults` first (one per request), then real answers. Returns the base URL
/// and the inputs of every request it answered or faulted.
fn serve_embeddings(faults: Vec<Reply>) -> (String, Arc<Mutex<Vec<Value>>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", server.server_addr().to_ip().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (i, mut req) in server.incoming_requests().enumerate() {
            assert_eq!(req.url(), "/v1/embeddings");
            let mut body = String::new();
            req.as_reader().read_to_string(&mut body).unwrap();
            let body: Value = serde_json::from_str(&body).unwrap();
            log.lock().unwrap().push(body.clone());
            let answer = || {
                let inputs = body["input"].as_array().unwrap();
                let data: Vec<Value> = inputs
                    .iter()
                    .enumerate()
                    .rev()
                    .map(|(k, t)| {
                        json!({"object": "embedding", "index": k,
                               "embedding": served_vector(t.as_str().unwrap())})
                    })
                    .collect();
                json!({"object": "list", "data": data, "model": "m",
                       "usage": {"prompt_tokens": 3, "total_tokens": 3}})
                .to_string()
            };
            let r = match faults.get(i) {
                Some(Reply::Status(code, retry_after, text)) => {
                    let mut r = tiny_http::Response::from_string(*text).with_status_code(*code);
                    if let Some(v) = retry_after {
                        r = r
                            .with_header(tiny_http::Header::from_bytes("Retry-After", *v).unwrap());
                    }
                    r
                }
                Some(Reply::Truncated) => {
                    let full = answer();
                    tiny_http::Response::from_string(&full[..full.len() / 2])
                }
                _ => tiny_http::Response::from_string(answer()),
            };
            let _ = req.respond(r);
        }
    });
    (base, seen)
}

fn embeddings_client(
    base: String,
    key_env: &str,
    batch: usize,
) -> trialforge_llm::OpenAiEmbeddings {
    trialforge_llm::OpenAiEmbeddings::new(
        &OpenAiOptions {
            base_url: base,
            model: "embedder".into(),
            api_key_env: Some(key_env.into()),
            timeout: Duration::from_millis(700),
            max_retries: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
            structured: None,
        },
        batch,
    )
    .unwrap()
}

#[test]
fn served_embeddings_are_batched_retried_ordered_normalised_and_cached() {
    use trialforge_encode::{CachedEncoder, TextEncoder};
    // The dimension probe passes; then a 429, a 503 and a truncated body before the first batch.
    let (base, seen) = serve_embeddings(vec![
        Reply::Ok(""),
        Reply::Status(429, Some("0"), "{\"error\": \"rate limited\"}"),
        Reply::Status(503, None, "overloaded"),
        Reply::Truncated,
    ]);
    let enc = embeddings_client(base, "TF_NO_SUCH_KEY", 2);
    assert_eq!(enc.dim(), 3);
    assert_eq!(
        enc.batch_size(),
        2,
        "this server keeps a request's inputs apart"
    );
    let texts = ["one", "three trees", "", "seven", "eleven"];
    let vectors = enc.encode(&texts).unwrap();
    for (text, v) in texts.iter().zip(&vectors) {
        // The empty text went as a space (OpenAI refuses empty input).
        let text = if text.is_empty() { " " } else { text };
        let expected = served_vector(text);
        let norm = expected.iter().map(|x| x * x).sum::<f64>().sqrt();
        for (got, want) in v.iter().zip(&expected) {
            assert!((*got as f64 - want / norm).abs() < 1e-6, "{text}: {v:?}");
        }
    }
    // Probe, three faults, then batches of 2, 2 and 1.
    assert_eq!(enc.requests(), (7, 3));
    let inputs: Vec<usize> = seen.lock().unwrap()[4..]
        .iter()
        .map(|b| b["input"].as_array().unwrap().len())
        .collect();
    assert_eq!(inputs, vec![2, 2, 1]);
    assert_eq!(seen.lock().unwrap()[0]["model"], "embedder");

    // Through the embedding cache, keyed by the served model's id: the second pass asks nothing.
    let dir = tempfile::tempdir().unwrap();
    let mut cached = CachedEncoder::new(&enc, dir.path()).unwrap();
    let first = cached.embed(&texts, |_, _| {}).unwrap();
    let sent = enc.requests().0;
    let mut again = CachedEncoder::new(&enc, dir.path()).unwrap();
    assert_eq!(again.embed(&texts, |_, _| {}).unwrap(), first);
    assert_eq!(enc.requests().0, sent);
    assert!(enc
        .model_id()
        .starts_with("openai:embedder@http://127.0.0.1:"));
}

#[test]
fn a_refused_key_fails_at_once_without_leaking_it() {
    std::env::set_var("TF_TEST_KEY_E", "sk-secret-e");
    let (base, seen) = serve_embeddings(vec![Reply::Status(
        401,
        None,
        "{\"error\": \"invalid api key\"}",
    )]);
    let err = trialforge_llm::OpenAiEmbeddings::new(
        &OpenAiOptions {
            base_url: base,
            model: "embedder".into(),
            api_key_env: Some("TF_TEST_KEY_E".into()),
            ..Default::default()
        },
        8,
    )
    .err()
    .expect("a 401 is not retried")
    .to_string();
    assert!(
        err.contains("HTTP 401") && err.contains("/v1/embeddings"),
        "{err}"
    );
    assert!(!err.contains("sk-secret-e"));
    assert_eq!(seen.lock().unwrap().len(), 1);
}
