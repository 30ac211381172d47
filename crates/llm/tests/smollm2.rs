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

/// The hand-written forward pass against candle's `quantized_llama` on the same weights. They are not
/// equal to the bit: candle rounds every activation to 8 bits, our prompt route multiplies floats
/// (gemm) and both use their own exp, and a last-bit difference (cos/sin of a rotary angle computed
/// 1 ulp apart moves the mean logit by ~0.15 here) can flip a rounding step and travel through 30
/// layers. So, at 4 tokens (integer route) and for 12 greedy steps after a long prompt (float
/// route, then decoding): the same token, at least 4 of the same top-5, and logits close on
/// average (the 1-ulp experiment's scale; measured here: mean 0.09 to 0.48).
#[test]
fn own_forward_matches_candles_llama() {
    use candle_core::quantized::gguf_file;
    use candle_core::{Device, Tensor};
    use candle_transformers::models::quantized_llama::ModelWeights;
    use trialforge_llm::llama::Llama;

    let dir = trialforge_models::require(
        &trialforge_models::default_dir(),
        &trialforge_models::SMOLLM2,
    )
    .unwrap();
    let path = dir.join("model.gguf");
    let mut f = std::fs::File::open(&path).unwrap();
    let ct = gguf_file::Content::read(&mut f).unwrap();
    let mut ours = Llama::from_gguf(&ct, &mut f, false, 2048).unwrap();
    let mut f = std::fs::File::open(&path).unwrap();
    let ct = gguf_file::Content::read(&mut f).unwrap();
    let mut theirs = ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();

    let m = model();
    let prompt = m
        .render_prompt(&[ChatMessage::user(
            "List three inclusion criteria for a phase 2 trial of lenalidomide in multiple myeloma.",
        )])
        .unwrap();
    let mut ids = m
        .tokenizer()
        .encode(prompt, false)
        .unwrap()
        .get_ids()
        .to_vec();
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0 as u32
    };
    let short = ours.forward(&ids[..4]).unwrap();
    let input = Tensor::new(&ids[..4], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let reference: Vec<f32> = theirs
        .forward(&input, 0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let gap = |a: &[f32], b: &[f32]| {
        let diffs = a.iter().zip(b).map(|(x, y)| (x - y).abs());
        let max = diffs.clone().fold(0f32, f32::max);
        (diffs.sum::<f32>() / a.len() as f32, max)
    };
    let (mean, max) = gap(&short, &reference);
    eprintln!("4 tokens: mean {mean}, max {max}");
    assert!(mean < 0.6 && max < 2.0, "4 tokens: mean {mean}, max {max}");
    assert_eq!(argmax(&short), argmax(&reference));
    ours.clear();
    theirs.clear_kv_cache();

    let mut a = ours.forward(&ids).unwrap();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mut b: Vec<f32> = theirs
        .forward(&input, 0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for step in 0..12 {
        let (mean, max) = gap(&a, &b);
        eprintln!("step {step}: mean {mean}, max {max}");
        assert!(
            mean < 0.6 && max < 2.0,
            "step {step}: mean {mean}, max {max}"
        );
        let top5 = |v: &[f32]| {
            let mut idx: Vec<usize> = (0..v.len()).collect();
            idx.sort_by(|&i, &j| v[j].total_cmp(&v[i]));
            idx.truncate(5);
            idx
        };
        let (ta5, tb5) = (top5(&a), top5(&b));
        let shared = ta5.iter().filter(|i| tb5.contains(i)).count();
        assert!(shared >= 4, "step {step}: top-5 {ta5:?} vs {tb5:?}");
        let (ta, tb) = (argmax(&a), argmax(&b));
        assert_eq!(ta, tb, "step {step}");
        ids.push(ta);
        a = ours.forward(&[ta]).unwrap();
        let input = Tensor::new(&[ta], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        b = theirs
            .forward(&input, ids.len() - 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
    }
}

#[test]
fn llm_hidden_states_embed_texts() {
    use trialforge_encode::{cosine, TextEncoder};
    let dir = trialforge_models::require(
        &trialforge_models::default_dir(),
        &trialforge_models::SMOLLM2,
    )
    .expect("SmolLM2; run `trialforge models fetch` first");
    let enc = trialforge_llm::LlmEncoder::load(
        &dir.join("model.gguf"),
        &trialforge_llm::LocalOptions::default(),
        64,
    )
    .unwrap();
    assert_eq!(enc.dim(), 576, "SmolLM2-135M's hidden size");
    assert!(enc.model_id().ends_with(":mean-hidden:64:batched-1"));
    let texts = [
        "Patients with metastatic breast cancer after two lines of chemotherapy.",
        "Women with advanced breast carcinoma previously treated with chemotherapy.",
        "Healthy volunteers aged 18 to 45 with normal renal function.",
        "",
    ];
    let v = enc.encode(&texts).unwrap();
    for x in &v {
        let norm: f32 = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
    // The texts go through the model together; a text's vector is the same to the bit alone and in
    // batches of other sizes and company (a pass of a few tokens aside: see `Pass::Embed`).
    assert_eq!(enc.encode(&texts[2..3]).unwrap()[0], v[2]);
    let pair = enc.encode(&[texts[3], texts[1]]).unwrap();
    assert_eq!((&pair[0], &pair[1]), (&v[3], &v[1]));
    let (close, far) = (cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
    assert!(close > far, "paraphrase {close} vs unrelated {far}");
}

/// Requests decoded together (three worker threads, two slots: the third waits for a free slot, as
/// continuous batching does) get exactly the tokens each gets alone: greedy, seeded sampling, and
/// JSON-Schema-constrained decoding.
#[test]
fn batched_decoding_gives_each_request_its_tokens_alone() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"drug": {"type": "string"}, "phase": {"type": "integer"}},
        "required": ["drug", "phase"]
    });
    let requests: Vec<(Vec<ChatMessage>, SamplingParams, Option<serde_json::Value>)> = vec![
        (
            vec![ChatMessage::user(
                "Describe a phase 2 trial of metformin in two sentences.",
            )],
            SamplingParams {
                max_tokens: 40,
                ..Default::default()
            },
            None,
        ),
        (
            vec![ChatMessage::user("Name three drugs used for asthma.")],
            SamplingParams {
                temperature: 0.9,
                top_p: Some(0.95),
                max_tokens: 48,
                seed: 7,
                ..Default::default()
            },
            None,
        ),
        (
            vec![ChatMessage::user("Give a drug and a trial phase as JSON.")],
            SamplingParams {
                max_tokens: 40,
                ..Default::default()
            },
            Some(schema),
        ),
    ];
    let mut alone = model();
    let want: Vec<_> = requests
        .iter()
        .map(|(m, p, s)| alone.chat_json(m, p, s.as_ref()).unwrap())
        .collect();
    for slots in [2, 3] {
        let handle = model().into_batched(slots);
        let got: Vec<_> = std::thread::scope(|scope| {
            let workers: Vec<_> = requests
                .iter()
                .map(|(m, p, s)| {
                    let mut h = handle.clone();
                    scope.spawn(move || h.chat_json(m, p, s.as_ref()))
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap().unwrap())
                .collect()
        });
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.text, w.text, "{slots} slots");
            assert_eq!(g.completion_tokens, w.completion_tokens);
            assert_eq!(g.finish_reason, w.finish_reason);
        }
    }
    assert!(want[2].text.starts_with('{'), "{}", want[2].text);
}

/// The prompt route's products are gemm's AVX-512 or AVX2 kernels and the unpacking is compiled for
/// both, picked at run time (the integer decoding kernels are AVX2 on every CPU). On an AVX-512
/// machine this reads an 8-token prompt again under qemu's emulation of a Haswell CPU (AVX2, no
/// AVX-512) and holds its logits to the native run's: the same next token, gaps at rounding scale.
/// Skipped without `qemu-x86_64` unless TRIALFORGE_REQUIRE_QEMU is set.
#[test]
fn the_avx2_kernels_read_a_prompt_alike() {
    use candle_core::quantized::gguf_file;
    use trialforge_llm::llama::Llama;
    let prompt_logits = || {
        let dir = trialforge_models::require(
            &trialforge_models::default_dir(),
            &trialforge_models::SMOLLM2,
        )
        .unwrap();
        let mut f = std::fs::File::open(dir.join("model.gguf")).unwrap();
        let ct = gguf_file::Content::read(&mut f).unwrap();
        let mut llama = Llama::from_gguf(&ct, &mut f, true, 64).unwrap();
        // Any 8 ids of the vocabulary: 8 rows take the prompt route (gemm on unpacked weights).
        let ids: Vec<u32> = vec![1, 9519, 351, 25806, 1880, 42366, 281, 253];
        llama.forward(&ids).unwrap()
    };
    if let Some(out) = std::env::var_os("TRIALFORGE_EMULATED_LOGITS") {
        // The inner run under qemu: write what this CPU computes.
        std::fs::write(out, serde_json::to_string(&prompt_logits()).unwrap()).unwrap();
        return;
    }
    if !std::arch::is_x86_feature_detected!("avx512f") {
        eprintln!("no AVX-512 here: the other tests ran the AVX2 kernels already");
        return;
    }
    let Some(qemu) = trialforge_kernels::emulation::find_qemu().unwrap() else {
        eprintln!("skipped: no qemu-x86_64 to emulate an AVX2-only CPU");
        return;
    };
    let native = prompt_logits();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("emulated.json");
    let out = std::process::Command::new(qemu)
        .args(["-cpu", "Haswell"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "the_avx2_kernels_read_a_prompt_alike"])
        .env("TRIALFORGE_EMULATED_LOGITS", &file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the AVX2 run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let emulated: Vec<f32> =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0
    };
    assert_eq!(argmax(&native), argmax(&emulated));
    let mean = native
        .iter()
        .zip(&emulated)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / native.len() as f32;
    eprintln!("AVX2 against AVX-512: mean logit gap {mean}");
    assert!(mean < 0.6, "mean logit gap {mean}");
}
