//! The served-encoder backend (`--encoder openai:MODEL@URL`) against a real OpenAI-compatible
//! embeddings server: llama.cpp's (llama-cpp-python, installed by scripts/setup.sh), serving the
//! bundled SmolLM2 GGUF with `--embedding true`. It returns one vector per token (the model has no
//! pooling type); the client averages them, as the local LLM encoder averages its hidden states, so
//! the two must agree on texts both read whole. (This server also shows a fault the client has to
//! find by itself: it mixes up the inputs of one request.)

use std::process::Command;

use trialforge_encode::{cosine, TextEncoder};
use trialforge_llm::{LlmEncoder, LocalOptions, OpenAiEmbeddings, OpenAiOptions};

mod support;

#[test]
fn a_real_llama_cpp_server_embeds_as_the_local_llm_encoder_does() {
    let Some(server) = support::start_llama_cpp_server(&["--embedding", "true"]) else {
        return;
    };
    let served = OpenAiEmbeddings::new(
        &OpenAiOptions {
            base_url: server.base.clone(),
            model: "smollm2".into(),
            api_key_env: None,
            ..Default::default()
        },
        2,
    )
    .unwrap();
    // llama-cpp-python 0.3.36 gets every input after a request's first wrong for a model without
    // a pooling type (it steps through its buffer by tokens, not tokens x width); the client saw
    // that at connection and sends one text a request.
    assert_eq!(served.batch_size(), 1);
    let model = support::root().join("models/smollm2-135m-instruct/model.gguf");
    let local = LlmEncoder::load(&model, &LocalOptions::default(), 256).unwrap();
    assert_eq!(served.dim(), local.dim());
    let texts = [
        "Pregnant or breastfeeding women",
        "Histologically confirmed metastatic non-small cell lung cancer",
        "ECOG performance status 0 to 1",
    ];
    let (a, b) = (
        served.encode(&texts).unwrap(),
        local.encode(&texts).unwrap(),
    );
    for ((text, x), y) in texts.iter().zip(&a).zip(&b) {
        let norm: f32 = x.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{text}: not unit length");
        let c = cosine(x, y);
        assert!(
            c > 0.99,
            "{text}: cosine {c} between the served and the local vector"
        );
    }
    // Different texts stay apart (the vectors are not all one direction).
    assert!(cosine(&a[0], &a[1]) < cosine(&a[0], &a[0]) - 1e-3);

    // The CLI names it as --encoder openai:MODEL@URL and caches what it was sent.
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus.csv");
    let rows: Vec<String> =
        std::fs::read_to_string(support::root().join("data/top/phase_I_valid.csv"))
            .unwrap()
            .lines()
            .take(1)
            .map(String::from)
            .collect();
    // A header and two short trials in the TOP schema.
    let header = &rows[0];
    let trial = |id: &str, criteria: &str| {
        format!("{id},completed,,1,phase 1,\"['asthma']\",\"[\"\"['J45.909']\"\"]\",\"['budesonide']\",\"['CC12CCC3C(CCC4=CC(=O)C=CC34C)C1CCC2']\",\"{criteria}\"")
    };
    std::fs::write(
        &corpus,
        format!(
            "{header}\n{}\n{}\n",
            trial("NCT00000001", "Inclusion Criteria: adults with asthma"),
            trial("NCT00000002", "Inclusion Criteria: children with asthma")
        ),
    )
    .unwrap();
    let embed = || {
        Command::new(env!("CARGO_BIN_EXE_trialforge"))
            .args(["embed", "--json", "--corpus"])
            .arg(&corpus)
            .arg("--encoder")
            .arg(format!("openai:smollm2@{}", server.base))
            .env("TRIALFORGE_CACHE", tmp.path().join("cache"))
            .output()
            .unwrap()
    };
    for encoded in [2, 0] {
        let o = embed();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            (s["trials"].as_u64(), s["encoded"].as_u64()),
            (Some(2), Some(encoded)),
            "{s}"
        );
        assert!(s["model"]
            .as_str()
            .unwrap()
            .starts_with("openai:smollm2@http://127.0.0.1:"));
    }
}
