//! Speed on this machine: local LLM prefill and decode at short and long prompts, encoder
//! throughput; and one answer from the local LLM (`chat`). Figures are measured, never asserted.

use std::time::Instant;

use serde::Serialize;
use trialforge_llm::{ChatMessage, ChatModel, Completion, SamplingParams};

use crate::env::LlmChoice;
use crate::{Environment, Progress};

#[derive(Clone, Debug)]
pub struct BenchRequest {
    /// Tokens to generate per decode measurement.
    pub tokens: usize,
    /// Approximate prompt lengths (in words) to measure at.
    pub prompt_words: Vec<usize>,
    /// Texts per encoder measurement.
    pub texts: usize,
    /// Measure the local LLM (prefill and decode).
    pub llm_part: bool,
    /// Measure the encoder.
    pub encoder_part: bool,
    /// Measure generation throughput over a fixed job, at each of these batch sizes.
    pub generation_batches: Vec<usize>,
    /// Requests in the generation job.
    pub generation_requests: usize,
    pub llm: LlmChoice,
    pub encoder: Option<std::path::PathBuf>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DecodeRow {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct EncodeRow {
    /// `12 words`, `200 words` or `mixed` (12 to 200 words; packed, so no padding is computed).
    pub set: String,
    pub texts: usize,
    /// Tokens of the set's first text (every text of the fixed-length sets has as many).
    pub tokens_per_text: usize,
    /// Tokens of all the set's texts.
    pub tokens: usize,
    /// Timed passes over the set; `texts_per_second` is the median pass's.
    pub passes: usize,
    pub texts_per_second: f64,
}

/// A fixed generation job (the same requests, greedy) through the local model at one batch size.
#[derive(Clone, Debug, Serialize)]
pub struct GenerationRow {
    pub batch: usize,
    pub requests: usize,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Wall time of the whole job, prefill included.
    pub seconds: f64,
    pub completion_tokens_per_second: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub llm: Option<String>,
    pub load_seconds: f64,
    pub decode: Vec<DecodeRow>,
    pub encoder: Option<String>,
    pub encode: Vec<EncodeRow>,
    pub generation: Vec<GenerationRow>,
    /// rayon's worker threads (the encoder's and the LLM's).
    pub threads: usize,
}

const PHRASE: &str = "adults with relapsed myeloma after prior therapy ";

/// The encoder's fixed-length texts; `scripts/bench_encoder.py` builds the same ones.
fn bench_texts(words: usize, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("Trial {i}: {}", PHRASE.repeat(words / 7 + 1)))
        .collect()
}

/// Texts of 12 to 200 words, in a fixed order; the same as `scripts/bench_encoder.py`'s.
fn mixed_texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "Trial {i}: {}",
                PHRASE.repeat((12 + (i * 37) % 189) / 7 + 1)
            )
        })
        .collect()
}

pub fn bench(
    env: &Environment,
    req: &BenchRequest,
    progress: &dyn Progress,
) -> anyhow::Result<BenchReport> {
    let mut report = BenchReport {
        llm: None,
        load_seconds: 0.0,
        decode: Vec::new(),
        encoder: None,
        encode: Vec::new(),
        generation: Vec::new(),
        threads: rayon::current_num_threads(),
    };
    if req.llm_part {
        let t = Instant::now();
        let mut llm = env.load_llm(&req.llm)?;
        report.load_seconds = t.elapsed().as_secs_f64();
        report.llm = Some(llm.model_id().to_string());
        for &words in &req.prompt_words {
            progress.stage(&format!("decoding after {words} words"));
            let filler =
                "The patients were followed for safety and tolerability. ".repeat(words / 8 + 1);
            let msgs = [ChatMessage::user(format!(
                "{filler}\nWrite a long essay about clinical trial design."
            ))];
            // Greedy without a repetition penalty and without stopping early: a fixed amount of work.
            let params = SamplingParams {
                max_tokens: req.tokens,
                repeat_penalty: 1.0,
                ..Default::default()
            };
            let c = llm.chat(&msgs, &params)?;
            report.decode.push(DecodeRow {
                prompt_tokens: c.prompt_tokens,
                completion_tokens: c.completion_tokens,
                prefill_tokens_per_second: c.prompt_tokens as f64 / c.prefill_seconds.max(1e-9),
                decode_tokens_per_second: c.decode_tokens_per_second(),
            });
        }
    }
    if req.encoder_part {
        let encoder = env.load_encoder(req.encoder.as_deref())?;
        report.encoder = Some(encoder.model_id().to_string());
        let sets = [
            ("12 words", bench_texts(12, req.texts)),
            ("200 words", bench_texts(200, req.texts)),
            ("mixed", mixed_texts(req.texts)),
        ];
        for (name, texts) in sets {
            progress.stage(&format!("encoding {name}"));
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let counts = encoder.token_counts(&refs)?;
            // Once to warm up (first-touch of buffers, thread start), then timed passes until
            // at least 3 and 2 seconds; the median pass counts (scripts/bench_encoder.py does the
            // same for sentence-transformers).
            encoder.encode(&refs)?;
            let started = Instant::now();
            let mut rates = Vec::new();
            while rates.len() < 3 || started.elapsed().as_secs_f64() < 2.0 {
                let t = Instant::now();
                encoder.encode(&refs)?;
                rates.push(refs.len() as f64 / t.elapsed().as_secs_f64());
            }
            rates.sort_by(f64::total_cmp);
            report.encode.push(EncodeRow {
                set: name.to_string(),
                texts: refs.len(),
                tokens_per_text: counts.first().copied().unwrap_or(0),
                tokens: counts.iter().sum(),
                passes: rates.len(),
                texts_per_second: rates[rates.len() / 2],
            });
        }
    }
    for &batch in &req.generation_batches {
        progress.stage(&format!("generating at batch {batch}"));
        report.generation.push(generation_job(env, req, batch)?);
    }
    progress.finish();
    Ok(report)
}

/// Drugs of the generation job's requests; `scripts/bench_llamacpp.py --server` sends the same.
const JOB_DRUGS: [&str; 8] = [
    "metformin",
    "lenalidomide",
    "pembrolizumab",
    "atorvastatin",
    "rituximab",
    "sitagliptin",
    "ibrutinib",
    "apixaban",
];

/// The job's `i`-th request text.
fn job_prompt(i: usize) -> String {
    format!(
        "Write the eligibility criteria and the design of a phase {} clinical trial of {}.",
        i % 3 + 1,
        JOB_DRUGS[i % JOB_DRUGS.len()]
    )
}

/// `req.generation_requests` requests of `req.tokens` tokens at most (greedy, default repetition
/// penalty), `batch` at a time through one model: the completion tokens/s of the whole job.
fn generation_job(
    env: &Environment,
    req: &BenchRequest,
    batch: usize,
) -> anyhow::Result<GenerationRow> {
    let params = SamplingParams {
        max_tokens: req.tokens,
        ..Default::default()
    };
    let jobs: Vec<Vec<ChatMessage>> = (0..req.generation_requests)
        .map(|i| vec![ChatMessage::user(job_prompt(i))])
        .collect();
    let local = env.load_llm(&req.llm)?;
    let started = Instant::now();
    let completions: Vec<Completion> = if batch <= 1 {
        let mut model = local;
        jobs.iter()
            .map(|m| model.chat(m, &params))
            .collect::<Result<_, _>>()?
    } else {
        let shared = local.into_batched(batch);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let done = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let workers: Vec<_> = (0..batch)
                .map(|_| {
                    let mut model = shared.clone();
                    let (next, done, jobs, params) = (&next, &done, &jobs, &params);
                    scope.spawn(move || -> anyhow::Result<()> {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let Some(m) = jobs.get(i) else { return Ok(()) };
                            let c = model.chat(m, params)?;
                            done.lock().expect("no worker panicked").push(c);
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().expect("a generation worker panicked")?;
            }
            Ok(())
        })?;
        done.into_inner().expect("no worker panicked")
    };
    let seconds = started.elapsed().as_secs_f64();
    let completion_tokens = completions.iter().map(|c| c.completion_tokens).sum();
    Ok(GenerationRow {
        batch,
        requests: jobs.len(),
        prompt_tokens: completions.iter().map(|c| c.prompt_tokens).sum(),
        completion_tokens,
        seconds,
        completion_tokens_per_second: completion_tokens as f64 / seconds.max(1e-9),
    })
}

/// One question to the local LLM.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    pub prompt: String,
    pub system: Option<String>,
    pub llm: LlmChoice,
    pub sampling: SamplingParams,
}

pub fn chat(
    env: &Environment,
    req: &ChatRequest,
    progress: &dyn Progress,
) -> anyhow::Result<Completion> {
    let mut model = env.load_llm(&req.llm)?;
    let mut messages = Vec::new();
    if let Some(s) = &req.system {
        messages.push(ChatMessage::system(s.clone()));
    }
    messages.push(ChatMessage::user(req.prompt.clone()));
    progress.stage("generating");
    let c = model.chat(&messages, &req.sampling)?;
    progress.finish();
    Ok(c)
}
