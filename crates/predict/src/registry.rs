//! The model registry: model names (with ablation suffixes) to untrained models, and model folders
//! to trained ones. The one place that knows every concrete model, so the models themselves only
//! know [`crate::model`].

use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::cladmop::admet::AdmetPretrain;
use crate::cladmop::{Ablations, Cladmop, CladmopParams};
use crate::combine::{load_combined, member_dirs, Ensemble, Stack, STACK_MEMBERS};
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
    /// Members of a seed ensemble (`-xN`); 1: a single model.
    pub seeds: usize,
}

impl From<ModelKind> for ModelSpec {
    fn from(kind: ModelKind) -> Self {
        ModelSpec {
            kind,
            ablations: Default::default(),
            admet: false,
            seeds: 1,
        }
    }
}

impl ModelSpec {
    pub fn name(&self) -> String {
        let admet = if self.admet { "-admet" } else { "" };
        let ensemble = if self.seeds > 1 {
            format!("-x{}", self.seeds)
        } else {
            String::new()
        };
        format!(
            "{}{}{admet}{ensemble}",
            self.kind.name(),
            self.ablations.suffix()
        )
    }

    /// The same model without the ensemble: what each member is.
    pub fn member(&self) -> ModelSpec {
        ModelSpec {
            seeds: 1,
            ..self.clone()
        }
    }

    /// The (fine-tuning) seed of member `k` of an ensemble trained with `seed`: member 0 is the
    /// single model of that seed, the others far from every benchmark seed so that two benchmark
    /// seeds never share a member. (Member k pre-trains with `pretrain_seed + k`: that
    /// checkpoint the benchmark's seeds do share.)
    pub fn member_seed(seed: u64, k: usize) -> u64 {
        seed.wrapping_add(1_000_003u64.wrapping_mul(k as u64))
    }
}

impl std::str::FromStr for ModelSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        // `MODEL-xN`: a seed ensemble of N members.
        if let Some((base, n)) = s
            .rsplit_once("-x")
            .filter(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            let seeds: usize = n
                .parse()
                .ok()
                .filter(|n| (2..=50).contains(n))
                .ok_or_else(|| format!("`{s}`: an ensemble has 2 to 50 members (-x2 ... -x50)"))?;
            // `stack-xN` too: N stacks, member k's cladmop pre-trained with its own seed.
            let mut spec: ModelSpec = base.parse()?;
            spec.seeds = seeds;
            return Ok(spec);
        }
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
            seeds: 1,
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
    // `all,stack` names the stack twice: each model once, in first-named order.
    let mut seen = std::collections::HashSet::new();
    out.retain(|m| seen.insert(m.name()));
    Ok(out)
}

/// What building an untrained model needs besides its name.
#[derive(Clone)]
pub struct BuildOptions<'e> {
    /// The training seed; for cladmop, its fine-tuning's.
    pub seed: u64,
    /// cladmop's pre-training seed, apart from `seed` so that training seeds share one
    /// pre-training (as users share one pre-trained checkpoint); an ensemble's member k uses
    /// `pretrain_seed + k`.
    pub pretrain_seed: u64,
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
    build(spec, options, Rc::new(on_status))
}

/// Status lines of a model and of the members of a combined one.
type OnStatus<'e> = Rc<dyn Fn(&str) + 'e>;

/// A member's status lines, each led by `name`.
fn prefixed<'e>(on_status: &OnStatus<'e>, name: String) -> OnStatus<'e> {
    let outer = on_status.clone();
    Rc::new(move |s: &str| outer(&format!("{name}: {s}")))
}

fn build<'e>(
    spec: &ModelSpec,
    options: &BuildOptions<'e>,
    on_status: OnStatus<'e>,
) -> Result<Box<dyn OutcomeModel + 'e>> {
    if spec.seeds > 1 {
        let member = spec.member();
        let mut members = Vec::new();
        for k in 0..spec.seeds {
            let seed = ModelSpec::member_seed(options.seed, k);
            let opts = BuildOptions {
                seed,
                pretrain_seed: options.pretrain_seed.wrapping_add(k as u64),
                ..options.clone()
            };
            let status = prefixed(&on_status, format!("member {} (seed {seed})", k + 1));
            members.push((member.name(), build(&member, &opts, status)?));
        }
        return Ok(Box::new(Ensemble::new(members)));
    }
    if spec.kind == ModelKind::Stack {
        let mut members = Vec::new();
        for name in STACK_MEMBERS {
            let member: ModelSpec = name.parse().map_err(PredictError::Invalid)?;
            let status = prefixed(&on_status, name.to_string());
            members.push((name.to_string(), build(&member, options, status)?));
        }
        return Ok(Box::new(Stack::new(members)));
    }
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
            Box::new(
                EncoderFt::new(params, needs("encoder-ft")?).with_progress(move |s| on_status(s)),
            )
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
            .with_seed(seed)
            .with_pretrain_seed(options.pretrain_seed);
            let mut model =
                Cladmop::new(params, needs("cladmop")?).with_progress(move |s| on_status(s));
            if let Some(dir) = &options.checkpoints {
                model = model.with_checkpoints(dir.clone());
            }
            Box::new(model)
        }
        ModelKind::Stack | ModelKind::Ensemble => unreachable!("built above"),
    })
}

/// The kind of the model saved in `dir` (its `config.json`), without loading its weights.
pub fn saved_kind(dir: &Path) -> Result<ModelKind> {
    let header: Header = read_config(dir)?;
    Ok(header.kind)
}

/// Whether the model saved in `dir` reads embeddings; a combined one does when any member does
/// (an ensemble of tfidf-lr needs no encoder).
pub fn saved_needs_encoder(dir: &Path) -> Result<bool> {
    match saved_kind(dir)? {
        ModelKind::Ensemble | ModelKind::Stack => {
            for member in member_dirs(dir)? {
                if saved_needs_encoder(&member)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        kind => Ok(kind.needs_encoder()),
    }
}

/// Loads a saved model; models that read embeddings need the same encoder they were trained with.
pub fn load_model<'e>(
    dir: &Path,
    embedder: Option<&'e dyn ProtocolEmbedder>,
) -> Result<Box<dyn OutcomeModel + 'e>> {
    let header: Header = read_config(dir)?;
    match header.kind {
        ModelKind::TfidfLr => return Ok(Box::new(TfidfLr::load(dir)?)),
        ModelKind::Ensemble => {
            let (members, _) = load_combined(dir, |d| load_model(d, embedder))?;
            return Ok(Box::new(Ensemble::new(members)));
        }
        ModelKind::Stack => {
            let (members, combiner) = load_combined(dir, |d| load_model(d, embedder))?;
            return Ok(Box::new(Stack::loaded(members, combiner)));
        }
        _ => {}
    }
    let e = embedder.ok_or_else(|| {
        PredictError::Invalid(
            "this model reads embeddings: give it the encoder it was trained with".into(),
        )
    })?;
    Ok(match header.kind {
        ModelKind::TfidfLr | ModelKind::Stack | ModelKind::Ensemble => {
            unreachable!("handled above")
        }
        ModelKind::EmbedMlp => Box::new(EmbedMlp::load(dir, e)?),
        ModelKind::EncoderFt => Box::new(EncoderFt::load(dir, e)?),
        ModelKind::Cladmop | ModelKind::CladmopZeroShot => Box::new(Cladmop::load(dir, e)?),
    })
}
