//! TF-IDF features + L2 logistic regression: the baseline reviewers expect.
//!
//! Features (documented, fixed): word unigrams and bigrams of the inclusion items (prefix `i:`) and
//! exclusion items (`e:`) kept apart, since "pregnancy" means different things in each; condition
//! words (`c:`); drug names whole and as words (`d:`); ICD-10 codes whole and as 3-character
//! categories (`icd:`, `icd3:`); phases (`ph:`). Vocabulary: terms in at least 2 training trials, the
//! 30,000 most frequent. Weighting as sklearn's `TfidfVectorizer(sublinear_tf=True)`: (1 + ln tf) x
//! (ln((1 + n) / (1 + df)) + 1), rows L2-normalised. The L2 penalty is chosen on the validation
//! split by log-loss.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use candle_core::Device;
use regex::Regex;
use serde::{Deserialize, Serialize};
use trialforge_trial::Protocol;

use crate::model::{
    labels, read_config, save_weights, write_config, Example, Header, ModelKind, OutcomeModel,
};
use crate::nn::{fit, label_tensor, FitReport, Mlp, TrainConfig};
use crate::{PredictError, Result};

fn word_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"[a-z0-9]+(?:[.'][a-z0-9]+)*").expect("static regex"))
}

fn words(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    word_re()
        .find_iter(&lower)
        .map(|m| m.as_str().to_string())
        .filter(|w| w.len() >= 2)
        .collect()
}

fn push_ngrams(out: &mut Vec<String>, prefix: &str, ws: &[String]) {
    for w in ws {
        out.push(format!("{prefix}{w}"));
    }
    for pair in ws.windows(2) {
        out.push(format!("{prefix}{} {}", pair[0], pair[1]));
    }
}

/// Word unigrams and bigrams of free text (lower-cased, 2+ characters).
pub fn text_terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    push_ngrams(&mut out, "", &words(text));
    out
}

/// The terms of one protocol (see the module docs).
pub fn protocol_terms(p: &Protocol) -> Vec<String> {
    let mut out = Vec::new();
    for item in &p.criteria.inclusion {
        push_ngrams(&mut out, "i:", &words(item));
    }
    for item in &p.criteria.exclusion {
        push_ngrams(&mut out, "e:", &words(item));
    }
    for c in &p.conditions {
        push_ngrams(&mut out, "c:", &words(c));
    }
    for d in &p.drugs {
        out.push(format!("d:{}", d.name.to_lowercase()));
        for w in words(&d.name) {
            out.push(format!("d:{w}"));
        }
    }
    for code in p.icd_codes.iter().flatten() {
        out.push(format!("icd:{code}"));
        out.push(format!("icd3:{}", code.chars().take(3).collect::<String>()));
    }
    for ph in &p.phases {
        out.push(format!("ph:{ph}"));
    }
    out
}

/// A fitted TF-IDF vocabulary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tfidf {
    pub terms: Vec<String>,
    pub idf: Vec<f32>,
    #[serde(skip)]
    index: HashMap<String, usize>,
}

impl Tfidf {
    pub fn fit(docs: &[Vec<String>], min_df: usize, max_features: usize) -> Tfidf {
        let mut df: HashMap<&str, usize> = HashMap::new();
        for d in docs {
            let mut seen: Vec<&str> = d.iter().map(String::as_str).collect();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                *df.entry(t).or_default() += 1;
            }
        }
        let mut kept: Vec<(&str, usize)> = df.into_iter().filter(|&(_, c)| c >= min_df).collect();
        // Most frequent first; ties by term so the vocabulary is deterministic.
        kept.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        kept.truncate(max_features);
        kept.sort_by(|a, b| a.0.cmp(b.0));
        let n = docs.len() as f32;
        let terms: Vec<String> = kept.iter().map(|(t, _)| t.to_string()).collect();
        let idf = kept
            .iter()
            .map(|&(_, c)| ((1.0 + n) / (1.0 + c as f32)).ln() + 1.0)
            .collect();
        Tfidf::from_parts(terms, idf)
    }

    fn from_parts(terms: Vec<String>, idf: Vec<f32>) -> Tfidf {
        let index = terms
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i))
            .collect();
        Tfidf { terms, idf, index }
    }

    pub fn dim(&self) -> usize {
        self.terms.len()
    }

    /// Dense, L2-normalised TF-IDF row of one document.
    pub fn transform(&self, doc: &[String]) -> Vec<f32> {
        let mut tf: HashMap<usize, f32> = HashMap::new();
        for t in doc {
            if let Some(&i) = self.index.get(t) {
                *tf.entry(i).or_default() += 1.0;
            }
        }
        let mut row = vec![0.0f32; self.dim()];
        for (i, c) in tf {
            row[i] = (1.0 + c.ln()) * self.idf[i];
        }
        trialforge_encode::normalise(&mut row);
        row
    }

    fn matrix(&self, protocols: &[&Protocol]) -> Result<candle_core::Tensor> {
        let rows: Vec<Vec<f32>> = protocols
            .iter()
            .map(|p| self.transform(&protocol_terms(p)))
            .collect();
        crate::nn::matrix(&rows, self.dim())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TfidfLrParams {
    pub min_df: usize,
    pub max_features: usize,
    /// L2 penalties tried; the one with the lowest validation log-loss is kept.
    pub l2_grid: Vec<f64>,
    pub train: TrainConfig,
}

impl Default for TfidfLrParams {
    fn default() -> Self {
        TfidfLrParams {
            min_df: 2,
            max_features: 30_000,
            l2_grid: vec![1e-5, 1e-4, 1e-3, 1e-2],
            train: TrainConfig {
                learning_rate: 0.05,
                l2: 0.0,
                max_epochs: 300,
                patience: 30,
                batch_size: 0,
                seed: 0,
            },
        }
    }
}

#[derive(Serialize, Deserialize)]
struct TfidfLrConfig {
    #[serde(flatten)]
    header: Header,
    params: TfidfLrParams,
    chosen_l2: f64,
    fit: Option<FitReport>,
    vocabulary: Tfidf,
}

pub struct TfidfLr {
    pub params: TfidfLrParams,
    vocab: Option<Tfidf>,
    model: Option<Mlp>,
    chosen_l2: f64,
    report: Option<FitReport>,
}

impl TfidfLr {
    pub fn new(params: TfidfLrParams) -> TfidfLr {
        TfidfLr {
            params,
            vocab: None,
            model: None,
            chosen_l2: 0.0,
            report: None,
        }
    }

    pub fn load(dir: &Path) -> Result<TfidfLr> {
        let cfg: TfidfLrConfig = read_config(dir)?;
        let wpath = dir.join("weights.safetensors");
        let tensors = candle_core::safetensors::load(&wpath, &Device::Cpu)?;
        let model = Mlp::from_tensors(&tensors, "linear", &wpath)?;
        let vocab = Tfidf::from_parts(cfg.vocabulary.terms, cfg.vocabulary.idf);
        Ok(TfidfLr {
            params: cfg.params,
            vocab: Some(vocab),
            model: Some(model),
            chosen_l2: cfg.chosen_l2,
            report: cfg.fit,
        })
    }

    fn fitted(&self) -> Result<(&Tfidf, &Mlp)> {
        match (&self.vocab, &self.model) {
            (Some(v), Some(m)) => Ok((v, m)),
            _ => Err(PredictError::Invalid(
                "tfidf-lr: predict called before fit".into(),
            )),
        }
    }
}

impl OutcomeModel for TfidfLr {
    fn kind(&self) -> ModelKind {
        ModelKind::TfidfLr
    }

    fn fit(&mut self, train: &[Example], valid: &[Example]) -> Result<()> {
        if train.is_empty() {
            return Err(PredictError::Invalid(
                "tfidf-lr: no training examples".into(),
            ));
        }
        let docs: Vec<Vec<String>> = train.iter().map(|e| protocol_terms(e.protocol)).collect();
        let vocab = Tfidf::fit(&docs, self.params.min_df, self.params.max_features);
        let x = crate::nn::matrix(
            &docs.iter().map(|d| vocab.transform(d)).collect::<Vec<_>>(),
            vocab.dim(),
        )?;
        let y = label_tensor(&labels(train))?;
        let valid_t = if valid.is_empty() {
            None
        } else {
            let ps: Vec<&Protocol> = valid.iter().map(|e| e.protocol).collect();
            Some((vocab.matrix(&ps)?, label_tensor(&labels(valid))?))
        };
        let grid = if valid_t.is_some() {
            self.params.l2_grid.clone()
        } else {
            vec![self.params.l2_grid[0]]
        };
        let mut best: Option<(f64, f64, Mlp, FitReport)> = None;
        for l2 in grid {
            let cfg = TrainConfig {
                l2,
                ..self.params.train.clone()
            };
            let m = Mlp::new(&[vocab.dim(), 1], cfg.seed)?;
            let report = fit(
                &m,
                &x,
                &y,
                valid_t.as_ref().map(|(a, b)| (a, b)),
                &cfg,
                |_, _| {},
            )?;
            let score = report.best_valid_loss.unwrap_or(report.final_train_loss);
            tracing::info!("tfidf-lr: l2 {l2}: validation loss {score:.4}");
            if best.as_ref().is_none_or(|(s, ..)| score < *s) {
                best = Some((score, l2, m, report));
            }
        }
        let (_, l2, m, report) = best.expect("the grid is not empty");
        self.chosen_l2 = l2;
        self.vocab = Some(vocab);
        self.model = Some(m);
        self.report = Some(report);
        Ok(())
    }

    fn predict(&self, protocols: &[&Protocol]) -> Result<Vec<f32>> {
        let (vocab, model) = self.fitted()?;
        if protocols.is_empty() {
            return Ok(Vec::new());
        }
        model.predict_proba(&vocab.matrix(protocols)?)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let (vocab, model) = self.fitted()?;
        write_config(
            dir,
            &TfidfLrConfig {
                header: Header {
                    kind: ModelKind::TfidfLr,
                    trialforge_version: env!("CARGO_PKG_VERSION").into(),
                },
                params: self.params.clone(),
                chosen_l2: self.chosen_l2,
                fit: self.report.clone(),
                vocabulary: vocab.clone(),
            },
        )?;
        save_weights(dir, &model.tensors("linear"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tfidf_matches_the_sklearn_formula() {
        let docs: Vec<Vec<String>> = vec![
            vec!["a".into(), "a".into(), "b".into()],
            vec!["a".into(), "c".into()],
            vec!["b".into(), "d".into()],
        ];
        let v = Tfidf::fit(&docs, 2, 100);
        assert_eq!(v.terms, vec!["a", "b"]); // c and d occur in one document only
        let idf = ((1.0f32 + 3.0) / (1.0 + 2.0)).ln() + 1.0;
        assert!((v.idf[0] - idf).abs() < 1e-6);
        let row = v.transform(&docs[0]);
        let (wa, wb) = ((1.0 + 2.0f32.ln()) * idf, idf);
        let n = (wa * wa + wb * wb).sqrt();
        assert!((row[0] - wa / n).abs() < 1e-6 && (row[1] - wb / n).abs() < 1e-6);
    }

    #[test]
    fn terms_keep_sections_apart() {
        let p = Protocol {
            criteria: trialforge_trial::Criteria::from_raw(
                "Inclusion Criteria:\n- Adults\nExclusion Criteria:\n- Pregnant women",
            ),
            icd_codes: vec![vec!["C34.1".into()]],
            ..Default::default()
        };
        let t = protocol_terms(&p);
        assert!(t.contains(&"i:adults".to_string()));
        assert!(t.contains(&"e:pregnant women".to_string()));
        assert!(t.contains(&"icd3:C34".to_string()));
    }
}
