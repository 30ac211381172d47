//! all-MiniLM-L6-v2 through candle reproduces sentence-transformers' published figures.
//! Needs the model: `cargo run --release -- models fetch` (the README's test command does it).

use trialforge_encode::{cosine, BertEncoder, TextEncoder};

fn encoder() -> BertEncoder {
    let dir = trialforge_models::require(
        &trialforge_models::default_dir(),
        &trialforge_models::MINILM,
    )
    .expect("the MiniLM model; run `trialforge models fetch` first");
    BertEncoder::load(&dir).unwrap()
}

#[test]
fn sentence_transformers_quick_start_similarities() {
    let enc = encoder();
    assert_eq!(enc.dim(), 384);
    assert_eq!(enc.max_len(), 256);
    let v = enc
        .encode(&[
            "The weather is lovely today.",
            "It's so sunny outside!",
            "He drove to the stadium.",
        ])
        .unwrap();
    for x in &v {
        let norm: f32 = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
    let s01 = cosine(&v[0], &v[1]);
    let s02 = cosine(&v[0], &v[2]);
    let s12 = cosine(&v[1], &v[2]);
    assert!((s01 - 0.6660).abs() < 0.002, "{s01}");
    assert!((s02 - 0.1046).abs() < 0.002, "{s02}");
    assert!((s12 - 0.1411).abs() < 0.002, "{s12}");
}

#[test]
fn batching_and_padding_do_not_change_vectors() {
    let enc = encoder();
    let long = "Patients with histologically confirmed metastatic non-small cell lung cancer who progressed on platinum-based chemotherapy";
    let alone = enc.encode(&["short text"]).unwrap();
    let batched = enc.encode(&[long, "short text"]).unwrap();
    assert!(cosine(&alone[0], &batched[1]) > 0.99999);
    // Over-long input is truncated to the model's 256 tokens, not an error.
    let huge = "word ".repeat(2000);
    assert_eq!(enc.encode(&[huge.as_str()]).unwrap()[0].len(), 384);
}
