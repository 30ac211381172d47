//! Flag groups several commands share, each turned into the pipelines' own options.

use std::path::PathBuf;

use clap::Args;
use trialforge_core::augment::AugmentSettings;
use trialforge_core::data::SyntheticSetOptions;
use trialforge_core::env::LlmChoice;
use trialforge_llm::SamplingParams;
use trialforge_predict::ModelKind;
use trialforge_trial::Format;

#[derive(Args, Clone)]
pub struct EncoderArgs {
    /// Text encoder: a BERT-family model folder (config.json, tokenizer.json, model.safetensors),
    /// or a llama-family .gguf file, whose final hidden states, averaged over a text's first 256
    /// tokens, become the embedding (texts batched through the model, still far slower than a BERT
    /// encoder), or a served model, `openai:MODEL@URL` (any OpenAI-compatible /v1/embeddings:
    /// OpenAI, text-embeddings-inference, vLLM, llama.cpp; URL up to and including /v1; the API
    /// key from $TRIALFORGE_ENCODER_API_KEY or else $OPENAI_API_KEY; 64 texts a request, retried
    /// with backoff, cached like the local encoders' vectors)
    /// [default: the fetched all-MiniLM-L6-v2].
    #[arg(long, value_name = "DIR|FILE.gguf|openai:MODEL@URL")]
    pub encoder: Option<PathBuf>,
}

#[derive(Args)]
pub struct CorpusArgs {
    /// Trials to read: a trialforge JSONL corpus, TOP CSV file(s) or ClinicalTrials.gov records.
    #[arg(long)]
    pub corpus: PathBuf,
    /// Format of --corpus: auto, top, ctgov, corpus or legacy.
    #[arg(long, default_value = "auto")]
    pub format: Format,
}

/// Which local model to load.
#[derive(Args, Clone)]
pub struct LocalModelArgs {
    /// A llama-family GGUF chat model [default: the fetched SmolLM2-135M-Instruct].
    #[arg(long, value_name = "FILE")]
    pub llm: Option<PathBuf>,
    /// Keep the GGUF's own quantisation of Q4_0/Q5_0/Q5_1 weights instead of re-quantising them
    /// to Q8_0 (slower; Q4_1 and Q8_0 always keep theirs).
    #[arg(long)]
    pub no_requantize: bool,
}

impl LocalModelArgs {
    pub fn choice(&self) -> LlmChoice {
        LlmChoice {
            path: self.llm.clone(),
            no_requantize: self.no_requantize,
        }
    }
}

#[derive(Args, Clone)]
pub struct LlmArgs {
    #[command(flatten)]
    pub model: LocalModelArgs,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling threshold.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Maximum tokens to generate.
    #[arg(long, default_value_t = 200)]
    pub max_tokens: usize,
    /// Repetition penalty (1.0 = off).
    #[arg(long, default_value_t = 1.1)]
    pub repeat_penalty: f32,
}

impl LlmArgs {
    pub fn sampling(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            max_tokens: self.max_tokens,
            repeat_penalty: self.repeat_penalty,
            ..Default::default()
        }
    }
}

/// Settings of the utility experiments (shared by `augment` and `analyze --augment`).
#[derive(Args, Clone)]
pub struct AugmentArgs {
    /// Model trained in every condition: embed-mlp (the local encoder with a trained classification
    /// head: the text classifier) or tfidf-lr.
    #[arg(long, default_value = "embed-mlp")]
    pub model: ModelKind,
    /// Training seeds (each condition is trained once per seed).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Synthetic shares of the sweep, comma-separated percentages.
    #[arg(long, default_value = "0,20,40,60,80,100", value_delimiter = ',')]
    pub shares: Vec<f64>,
    /// Training size of the sweep [default: the smaller of the real train and synthetic sets].
    #[arg(long)]
    pub train_size: Option<usize>,
    /// Paired-bootstrap resamples of the test set.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
}

impl AugmentArgs {
    pub fn settings(&self) -> AugmentSettings {
        AugmentSettings {
            model: self.model,
            seeds: self.seeds,
            shares: self.shares.clone(),
            train_size: self.train_size,
            resamples: self.resamples,
        }
    }
}

/// How to read a synthetic set (shared by `augment` and `analyze`).
#[derive(Args, Clone, Default)]
pub struct SyntheticSetArgs {
    /// With a folder of legacy ClinicalTrials.gov records as --synthetic: a CSV with columns
    /// `file,label` (file name without folder; label 0 or 1).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Skip synthetic records that cannot be read (each is reported) instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
}

impl SyntheticSetArgs {
    pub fn options(&self) -> SyntheticSetOptions {
        SyntheticSetOptions {
            labels: self.labels.clone(),
            skip_bad: self.skip_bad,
        }
    }
}
