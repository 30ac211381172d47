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
