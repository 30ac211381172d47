//! Local generation with SmolLM2-135M-Instruct (needs `trialforge models fetch`).

use trialforge_llm::{
    ChatMessage, ChatModel, FinishReason, LocalGguf, LocalOptions, SamplingParams,
};

fn model() -> LocalGguf {
    let dir = trialforge_models::require(
        &trialforge_models::default_dir(),
        &trialforge_models::SMOLLM2,
    )
    .expect("the SmolLM2 model; run `trialforge models fetch` first");
    LocalGguf::load(&dir.join("model.gguf"), &LocalOptions::default()).unwrap()
}

#[test]
fn chat_template_and_tokenizer_from_gguf_metadata() {
    let m = model();
    let prompt = m.render_prompt(&[ChatMessage::user("Hi")]).unwrap();
    assert!(
        prompt.contains("<|im_start|>user\nHi<|im_end|>"),
        "{prompt}"
    );
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt}");
    // Special tokens are single ids; digits are split one by one (SmolLM's pre-tokenizer).
    let ids = m.tokenizer().encode("<|im_end|>", false).unwrap();
    assert_eq!(ids.get_ids(), &[2]);
    let ids = m.tokenizer().encode("2024", false).unwrap();
    assert_eq!(ids.get_ids().len(), 4);
}

#[test]
fn greedy_answer_is_deterministic_and_stops_at_end_of_turn() {
    let mut m = model();
    let msgs = [ChatMessage::user(
        "What is the capital of France? Answer in one word.",
    )];
    let params = SamplingParams {
        max_tokens: 24,
        ..Default::default()
    };
    let a = m.chat(&msgs, &params).unwrap();
    let b = m.chat(&msgs, &params).unwrap();
    assert_eq!(a.text, b.text);
    assert_eq!(a.finish_reason, FinishReason::Stop, "{a:?}");
    assert!(a.text.contains("Paris"), "{}", a.text);
    assert!(a.prompt_tokens > 10 && a.completion_tokens >= 1);
}

#[test]
fn seeded_sampling_is_reproducible() {
    let mut m = model();
    let msgs = [ChatMessage::user("Name a drug used for asthma.")];
    let p = |seed| SamplingParams {
        temperature: 0.9,
        top_p: Some(0.95),
        max_tokens: 16,
        seed,
        ..Default::default()
    };
    let a = m.chat(&msgs, &p(7)).unwrap();
    let b = m.chat(&msgs, &p(7)).unwrap();
    assert_eq!(a.text, b.text);
    assert!(a.completion_tokens > 0);
}

#[test]
fn schema_constrained_output_is_valid_json_of_that_schema() {
    let mut m = model();
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "drug": {"type": "string", "maxLength": 30},
            "phase": {"enum": ["PHASE1", "PHASE2", "PHASE3"]},
            "enrollment": {"type": "integer", "minimum": 1, "maximum": 1000}
        },
        "required": ["drug", "phase", "enrollment"],
        "additionalProperties": false
    });
    let msgs = [ChatMessage::user(
        "Describe a phase 2 trial of metformin as JSON with drug, phase and enrollment.",
    )];
    let params = SamplingParams {
        max_tokens: 80,
        ..Default::default()
    };
    let c = m.chat_json(&msgs, &params, Some(&schema)).unwrap();
    assert_eq!(c.finish_reason, FinishReason::Stop, "{c:?}");
    let v: serde_json::Value =
        serde_json::from_str(&c.text).unwrap_or_else(|e| panic!("{e}: {}", c.text));
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 3, "{v}");
    assert!(obj["drug"].as_str().unwrap().len() <= 30);
    assert!(["PHASE1", "PHASE2", "PHASE3"].contains(&obj["phase"].as_str().unwrap()));
    let n = obj["enrollment"].as_i64().unwrap();
    assert!((1..=1000).contains(&n));
}
