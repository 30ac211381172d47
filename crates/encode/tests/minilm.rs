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
    let v = enc.encode(&QUICK_START).unwrap();
    for x in &v {
        let norm: f32 = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
    if let Some(native) = std::env::var_os("TRIALFORGE_NATIVE_VECTORS") {
        // The inner run of `the_avx2_kernels_give_the_same_vectors`: on a CPU without AVX-512, the
        // vectors the AVX-512 kernels gave.
        assert!(
            !std::arch::is_x86_feature_detected!("avx512f"),
            "the emulated CPU has AVX-512, so the AVX2 kernels were not run"
        );
        let want: Vec<Vec<f32>> =
            serde_json::from_str(&std::fs::read_to_string(native).unwrap()).unwrap();
        for (g, w) in v.iter().zip(&want) {
            let worst = max_abs_diff(g, w);
            assert!(worst < 1e-5, "AVX2 and AVX-512 vectors differ by {worst}");
        }
    }
    let s01 = cosine(&v[0], &v[1]);
    let s02 = cosine(&v[0], &v[2]);
    let s12 = cosine(&v[1], &v[2]);
    assert!((s01 - 0.6660).abs() < 0.002, "{s01}");
    assert!((s02 - 0.1046).abs() < 0.002, "{s02}");
    assert!((s12 - 0.1411).abs() < 0.002, "{s12}");
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

const QUICK_START: [&str; 3] = [
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
];

/// The kernels are picked at run time (AVX-512 where the CPU has it, AVX2/FMA otherwise, in gemm and
/// in the element-wise passes). On an AVX-512 machine this runs the quick-start test again under
/// qemu's user-mode emulation of a Haswell CPU (AVX2, no AVX-512), which checks the published
/// similarities and the vectors against the native run's. Skipped without `qemu-x86_64` (Debian's
/// qemu-user; `scripts/setup.sh` installs it) unless TRIALFORGE_REQUIRE_QEMU is set.
#[test]
fn the_avx2_kernels_give_the_same_vectors() {
    if std::env::var_os("TRIALFORGE_NATIVE_VECTORS").is_some() {
        return; // the inner run itself
    }
    if !std::arch::is_x86_feature_detected!("avx512f") {
        eprintln!("no AVX-512 here: the other tests ran the AVX2 kernels already");
        return;
    }
    let Some(qemu) = trialforge_kernels::emulation::find_qemu().unwrap() else {
        eprintln!("skipped: no qemu-x86_64 to emulate an AVX2-only CPU");
        return;
    };
    let native = encoder().encode(&QUICK_START).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("native.json");
    std::fs::write(&file, serde_json::to_string(&native).unwrap()).unwrap();
    let out = std::process::Command::new(qemu)
        .args(["-cpu", "Haswell"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "sentence_transformers_quick_start_similarities"])
        .env("TRIALFORGE_NATIVE_VECTORS", &file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the AVX2 run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn batching_and_padding_do_not_change_vectors() {
    let enc = encoder();
    let long = "Patients with histologically confirmed metastatic non-small cell lung cancer who progressed on platinum-based chemotherapy";
    let alone = enc.encode(&["short text"]).unwrap();
    let batched = enc.encode(&[long, "short text"]).unwrap();
    // Bit for bit: a text's vector does not depend on what it was batched with (texts are packed,
    // not padded, and every output row of a product sums in the same order whatever the batch),
    // so an embedding cache filled in different batches holds the same vectors.
    assert_eq!(alone[0], batched[1]);
    let long_alone = enc.encode(&[long]).unwrap();
    assert_eq!(long_alone[0], batched[0]);
    // Over-long input is truncated to the model's 256 tokens, not an error.
    let huge = "word ".repeat(2000);
    assert_eq!(enc.encode(&[huge.as_str()]).unwrap()[0].len(), 384);
}

/// The hand-written forward pass (packed texts, fused passes) against candle's `BertModel` (padded
/// batch, masked attention) on texts of very different lengths: the same pooled vectors and the same
/// [CLS] states, to float rounding.
#[test]
fn forward_pass_matches_candles_bert() {
    use candle_core::{DType, Device, Tensor};
    use candle_transformers::models::bert::{BertModel, Config};

    let enc = encoder();
    let dir = trialforge_models::require(
        &trialforge_models::default_dir(),
        &trialforge_models::MINILM,
    )
    .unwrap();
    let config: Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    };
    let reference = BertModel::load(vb, &config).unwrap();
    let mut tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    tokenizer
        .with_truncation(Some(tokenizers::TruncationParams {
            max_length: enc.max_len(),
            ..Default::default()
        }))
        .unwrap();
    tokenizer.with_padding(Some(tokenizers::PaddingParams::default()));

    let long = "Inclusion: adults aged 18 to 75 with histologically confirmed metastatic disease. "
        .repeat(40);
    let texts = [
        "Aspirin",
        "Patients with relapsed or refractory multiple myeloma after at least two prior lines.",
        long.as_str(),
        "Exclusion: pregnancy; eGFR < 30 mL/min/1.73 m²; prior anti-PD-1 therapy.",
    ];
    let batch = tokenizer.encode_batch(texts.to_vec(), true).unwrap();
    let (n, len) = (batch.len(), batch[0].get_ids().len());
    let flat = |f: fn(&tokenizers::Encoding) -> &[u32]| {
        Tensor::from_vec(
            batch
                .iter()
                .flat_map(|e| f(e).to_vec())
                .collect::<Vec<u32>>(),
            (n, len),
            &Device::Cpu,
        )
        .unwrap()
    };
    let (ids, types, mask) = (
        flat(|e| e.get_ids()),
        flat(|e| e.get_type_ids()),
        flat(|e| e.get_attention_mask()),
    );
    let hidden = reference.forward(&ids, &types, Some(&mask)).unwrap();
    let maskf = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
    let mean = hidden
        .broadcast_mul(&maskf)
        .unwrap()
        .sum(1)
        .unwrap()
        .broadcast_div(&maskf.sum(1).unwrap())
        .unwrap();
    let norm = mean.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap();
    let want: Vec<Vec<f32>> = mean.broadcast_div(&norm).unwrap().to_vec2().unwrap();

    let got = enc.encode(&texts).unwrap();
    for (g, w) in got.iter().zip(&want) {
        let worst = max_abs_diff(g, w);
        assert!(worst < 2e-5, "pooled vectors differ by {worst}");
    }
    let first_got: Vec<Vec<f32>> = enc.first_token_states(&texts).unwrap().to_vec2().unwrap();
    let first_want: Vec<Vec<f32>> = hidden
        .narrow(1, 0, 1)
        .unwrap()
        .squeeze(1)
        .unwrap()
        .to_vec2()
        .unwrap();
    for (g, w) in first_got.iter().zip(&first_want) {
        let worst = max_abs_diff(g, w);
        assert!(worst < 2e-4, "[CLS] states differ by {worst}");
    }
}
