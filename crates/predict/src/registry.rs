//! The model registry: model names (with ablation suffixes) to untrained models, and model folders
//! to trained ones. The one place that knows every concrete model, so the models themselves only
//! know [`crate::model`].

use std::path::{Path, PathBuf};

use crate::cladmop::admet::AdmetPretrain;
use crate::cladmop::{Ablations, Cladmop, CladmopParams};
use crate::embedding::{EmbedMlp, EmbedMlpParams};
use crate::finetune::{EncoderFt, EncoderFtParams};
use crate::model::{read_config, Header, ModelKind, OutcomeModel};
use crate::tfidf::{TfidfLr, TfidfLrParams};
use crate::{PredictError, ProtocolEmbedder, Result};

/// A model kind with its ablation flags, named as on the command line: `cladmop-no-grouping`,
/// `cladmop-admet` (drug branch pre-trained on ADMET properties first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    pub kind: ModelKind,
    pub ablations: Ablations,
    pub admet: bool,
}

impl From<ModelKind> for ModelSpec {
    fn from(kind: ModelKind) -> Self {
        ModelSpec {
            kind,
            ablations: Default::default(),
            admet: false,
        }
    }
}

impl ModelSpec {
    pub fn name(&self) -> String {
        let admet = if self.admet { "-admet" } else { "" };
        format!("{}{}{admet}", self.kind.name(), self.ablations.suffix())
    }
}

impl std::str::FromStr for ModelSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if let Ok(kind) = s.parse::<ModelKind>() {
            return Ok(kind.into());
        }
        // The longest kind name the text starts with, then ablation suffixes.
        let kind = ModelKind::ALL
            .into_iter()
            .filter(|k| s.starts_with(k.name()))
            .max_by_key(|k| k.name().len())
            .filter(|k| matches!(k, ModelKind::Cladmop | ModelKind::CladmopZeroShot));
        let Some(kind) = kind else {
            return s.parse::<ModelKind>().map(Into::into);
        };
        let mut ablations = Ablations::default();
        let mut admet = false;
        let mut rest = &s[kind.name().len()..];
        while !rest.is_empty() {
            let flag = [
                ("-no-pretrain", &mut ablations.no_pretrain),
                ("-no-grouping", &mut ablations.no_grouping),
                ("-no-drug", &mut ablations.no_drug),
                ("-admet", &mut admet),
            ]
            .into_iter()
            .find(|(name, _)| rest.starts_with(name));
            match flag {
                Some((name, on)) => {
                    *on = true;
                    rest = &rest[name.len()..];
                }
                None => {
                    return Err(format!(
                        "unknown model `{s}`: after `{}`, expected -no-pretrain, -no-grouping, -no-drug or -admet",
                        kind.name()
                    ))
                }
            }
        }
        if kind == ModelKind::CladmopZeroShot && ablations.no_pretrain {
            return Err(
                "cladmop-zero-shot is the pre-trained score: it has no -no-pretrain".into(),
            );
        }
        if admet && ablations.no_drug {
            return Err(format!(
                "`{s}`: -admet pre-trains the drug branch that -no-drug removes"
            ));
        }
        Ok(ModelSpec {
            kind,
            ablations,
            admet,
        })
    }
}

/// The ablations `--models ablations` names.
pub const ABLATIONS: [&str; 3] = [
    "cladmop-no-pretrain",
    "cladmop-no-grouping",
    "cladmop-no-drug",
];

/// A list of models as the command line and the API take it: `all` (the default models),
/// `ablations`, or model names with ablation suffixes, comma-separated.
pub fn parse_model_list(list: &str) -> Result<Vec<ModelSpec>> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name {
            "all" => out.extend(ModelKind::DEFAULT.map(ModelSpec::from)),
            "ablations" => {
                for n in ABLATIONS {
                    out.push(n.parse().map_err(PredictError::Invalid)?);
                }
            }
            _ => out.push(name.parse().map_err(PredictError::Invalid)?),
        }
    }
    if out.is_empty() {
        return Err(PredictError::Invalid(format!(
            "no model named in `{list}` (expected `all`, `ablations` or model names)"
        )));
    }
    Ok(out)
}

/// What building an untrained model needs besides its name.
pub struct BuildOptions<'e> {
    pub seed: u64,
    /// The encoder behind every model but `tfidf-lr`.
    pub embedder: Option<&'e dyn ProtocolEmbedder>,
    /// ADMET files, read by `-admet` models only.
    pub admet_dir: PathBuf,
    /// Where cladmop keeps its pre-training checkpoints (none: not kept).
    pub checkpoints: Option<PathBuf>,
}

/// An untrained model. `on_status` receives the training stages of models that report them.
pub fn new_model<'e>(
    spec: &ModelSpec,
    options: &BuildOptions<'e>,
    on_status: impl Fn(&str) + 'e,
) -> Result<Box<dyn OutcomeModel + 'e>> {
    let seed = options.seed;
    let needs = |what: &str| -> Result<&'e dyn ProtocolEmbedder> {
        options
            .embedder
            .ok_or_else(|| PredictError::Invalid(format!("{what} needs the encoder")))
    };
    Ok(match spec.kind {
        ModelKind::TfidfLr => {
            let mut p = TfidfLrParams::default();
            p.train.seed = seed;
            Box::new(TfidfLr::new(p))
        }
        ModelKind::EmbedMlp => {
            let mut p = EmbedMlpParams::default();
            p.train.seed = seed;
            Box::new(EmbedMlp::new(p, needs("embed-mlp")?))
        }
        ModelKind::EncoderFt => {
            let params = EncoderFtParams {
                seed,
                ..Default::default()
            };
            Box::new(EncoderFt::new(params, needs("encoder-ft")?).with_progress(on_status))
        }
        ModelKind::Cladmop | ModelKind::CladmopZeroShot => {
            let params = CladmopParams {
                ablations: spec.ablations.clone(),
                zero_shot: spec.kind == ModelKind::CladmopZeroShot,
                admet: spec
                    .admet
                    .then(|| AdmetPretrain::new(options.admet_dir.clone())),
                ..Default::default()
            }
            .with_seed(seed);
            let mut model = Cladmop::new(params, needs("cladmop")?).with_progress(on_status);
            if let Some(dir) = &options.checkpoints {
                model = model.with_checkpoints(dir.clone());
            }
            Box::new(model)
        }
    })
}

/// The kind of the model saved in `dir` (its `config.json`), without loading its weights.
pub fn saved_kind(dir: &Path) -> Result<ModelKind> {
    let header: Header = read_config(dir)?;
    Ok(header.kind)
}

/// Loads a saved model; models that read embeddings need the same encoder they were trained with.
pub fn load_model<'e>(
    dir: &Path,
    embedder: Option<&'e dyn ProtocolEmbedder>,
) -> Result<Box<dyn OutcomeModel + 'e>> {
    let header: Header = read_config(dir)?;
    if header.kind == ModelKind::TfidfLr {
        return Ok(Box::new(TfidfLr::load(dir)?));
    }
    let e = embedder.ok_or_else(|| {
        PredictError::Invalid(
            "this model reads embeddings: give it the encoder it was trained with".into(),
        )
    })?;
    Ok(match header.kind {
        ModelKind::TfidfLr => unreachable!("handled above"),
        ModelKind::EmbedMlp => Box::new(EmbedMlp::load(dir, e)?),
        ModelKind::EncoderFt => Box::new(EncoderFt::load(dir, e)?),
        ModelKind::Cladmop | ModelKind::CladmopZeroShot => Box::new(Cladmop::load(dir, e)?),
    })
}
