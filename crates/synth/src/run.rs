//! A generation run: for each cell of the plan, retrieve examples, ask for reasons, ask for a trial,
//! validate it, and write it with its provenance.
//!
//! Two append-only files, each line flushed and synced before the next step:
//! - `OUT` (e.g. `synth.jsonl`): accepted synthetic trials, one per line. Each line is a trialforge
//!   trial record (readable as a corpus) with `generated`, `provenance` and `validation` fields.
//! - `OUT.log.jsonl`: every attempt, accepted or rejected, with the rule that rejected it.
//!
//! Killed at any moment and started again with the same command, a run reads both files (cutting a
//! torn last line), treats a cell as done once it has an accepted trial or has used its attempts, and
//! goes on with the next one: nothing is lost, nothing is written twice.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use trialforge_encode::{CachedEncoder, TextEncoder};
use trialforge_llm::cache::request_hash;
use trialforge_llm::{ChatModel, SamplingParams};
use trialforge_trial::render::protocol_text;
use trialforge_trial::{Label, Phase, Source, Split, Trial};

use crate::examples::{Chosen, RealCorpus};
use crate::plan::Cell;
use crate::prompts::{generation_messages, parse_reasons, reasoning_messages, render_example};
use crate::realism::{CalibratedGate, Calibration, EnrollmentBound, GateThresholds};
use crate::schema::{request_schema, GeneratedTrial, RequestConstraints};
use crate::validate::{check_content, longest_shared_run, Reject, ValidationConfig};
use crate::{Result, SynthError};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GenerateConfig {
    /// Real examples per prompt.
    pub k: usize,
    pub n_reasons: usize,
    /// Tries per cell before it is given up.
    pub max_attempts: u32,
    pub reasoning: SamplingParams,
    pub generation: SamplingParams,
    pub validation: ValidationConfig,
    /// Characters of each example shown in the prompts.
    pub example_chars: usize,
    /// Examples closer than this to an already chosen one are skipped.
    pub example_near_duplicate: f32,
    /// Names the backend in provenance and cache keys (`local`, `openai`, ...).
    pub backend: String,
    pub seed: u64,
    /// Constrain the conditions to those of the drug's real trials and of the examples (a JSON
    /// Schema enum): no invented conditions, but no new ones either.
    #[serde(default)]
    pub conditions_from_examples: bool,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            k: 3,
            n_reasons: 5,
            max_attempts: 2,
            reasoning: SamplingParams {
                temperature: 0.7,
                top_p: Some(0.95),
                max_tokens: 200,
                ..Default::default()
            },
            generation: SamplingParams {
                temperature: 0.7,
                top_p: Some(0.95),
                max_tokens: 900,
                ..Default::default()
            },
            validation: ValidationConfig::default(),
            example_chars: 900,
            example_near_duplicate: 0.95,
            backend: "local".into(),
            seed: 0,
            conditions_from_examples: false,
        }
    }
}

/// Where a synthetic trial came from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Provenance {
    pub cell: usize,
    pub attempt: u32,
    pub drug: String,
    pub target_label: Label,
    pub phase: Phase,
    /// NCT ids of the real trials shown in the prompts.
    pub examples: Vec<String>,
    /// How many of them are trials of the requested drug (the rest are nearest neighbours).
    pub examples_of_drug: usize,
    pub reasons: Vec<String>,
    pub backend: String,
    pub model: String,
    pub reasoning_params: SamplingParams,
    pub generation_params: SamplingParams,
    /// sha256 of the generation request (backend, model, messages, parameters, schema).
    pub prompt_hash: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// The realism gate that passed this trial (absent when the run had none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateProvenance>,
}

/// The realism gate's thresholds that applied to one trial.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GateProvenance {
    /// Names the gate (its settings and vocabulary); the whole gate is in `NAME.gate.json`.
    pub digest: String,
    pub lexical_min_share: f64,
    pub condition_max_unknown_share: f64,
    pub enrollment: Option<EnrollmentBound>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ValidationScores {
    pub nearest_real: String,
    pub max_cosine_real: f32,
    pub max_shared_words_with_examples: usize,
    pub max_cosine_synthetic: f32,
    /// Share of the trial's words known to the real corpus (the gate's `lexical` rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lexical_share: Option<f64>,
}

/// One line of the output file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyntheticRecord {
    #[serde(flatten)]
    pub trial: Trial,
    pub generated: GeneratedTrial,
    pub provenance: Provenance,
    pub validation: ValidationScores,
}

/// One line of the attempt log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attempt {
    pub cell: usize,
    pub attempt: u32,
    pub accepted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<Reject>,
    /// Further rules the rejected output broke, after the first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<Reject>,
    /// What the model wrote, for a rejected attempt (cut at 4,000 characters), so a person can read
    /// why it was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// NCT ids of the real examples its prompt showed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub seconds: f64,
}

/// What a run did, also printed by `generate`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunSummary {
    pub cells: usize,
    /// Cells finished (accepted, or out of attempts), this run and earlier ones together.
    pub cells_done: usize,
    /// Cells already finished by an earlier, interrupted run.
    pub resumed_cells: usize,
    pub accepted: usize,
    pub attempts: usize,
    pub rejected: usize,
    pub rejects_by_rule: BTreeMap<String, usize>,
    /// Accepted / attempts, over this invocation's attempts.
    pub acceptance_rate: f64,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_responses: usize,
    /// Cells whose next request went to a batch file instead of a model (`--emit-batch`).
    pub deferred: usize,
    pub seconds: f64,
    pub completion_tokens_per_second: f64,
    pub accepted_per_minute: f64,
    /// With prices given: the cost of this run's tokens (cached responses included at full price).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    pub out: String,
    pub log: String,
    /// The realism gate: its thresholds, its pass rates on held-out real trials, and what it cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateSummary>,
}

/// The realism gate of a run (also written to `NAME.gate.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GateSummary {
    pub thresholds: GateThresholds,
    pub calibration: Calibration,
    /// Seconds spent building and calibrating the gate at run start.
    pub build_seconds: f64,
    /// Gate checks this run, and the seconds they took.
    pub checks: usize,
    pub check_seconds: f64,
}

/// Progress after each attempt.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub cells_done: usize,
    pub cells: usize,
    pub accepted: usize,
    pub rejected: usize,
    pub tokens_per_second: f64,
}

pub fn log_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map_or("synth".into(), |n| n.to_string_lossy().into_owned());
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
    out.with_file_name(format!("{stem}.log.jsonl"))
}

/// Opens an append-only JSONL file, cutting a torn last line (a kill mid-write), and returns its
/// parsed lines.
fn open_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<(File, Vec<T>)> {
    let io = |source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io)?;
    let bytes = std::fs::read(path).map_err(io)?;
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole < bytes.len() {
        tracing::warn!(
            "{}: cutting a torn last line left by an interrupted run",
            path.display()
        );
        file.set_len(whole as u64).map_err(io)?;
    }
    let mut items = Vec::new();
    for (i, line) in bytes[..whole].lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        items.push(serde_json::from_str(&line).map_err(|e| SynthError::Format {
            path: path.to_path_buf(),
            message: format!("line {}: {e}", i + 1),
        })?);
    }
    Ok((file, items))
}

fn append<T: Serialize>(file: &mut File, path: &Path, item: &T) -> Result<()> {
    let mut line = serde_json::to_vec(item).expect("records serialise");
    line.push(b'\n');
    let io = |source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    };
    file.write_all(&line).map_err(io)?;
    file.sync_data().map_err(io)
}

/// Per-attempt seed: the run seed, the cell and the attempt, so every retry samples differently and a
/// re-run samples the same.
fn attempt_seed(seed: u64, cell: usize, attempt: u32) -> u64 {
    let h = Sha256::digest(format!("{seed}/{cell}/{attempt}").as_bytes());
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes"))
}

/// Synthetic ids: `TFS-` + a tag of the run's settings + the cell. Never an NCT id.
fn synthetic_id(tag: &str, cell: usize) -> String {
    format!("TFS-{tag}-{cell:05}")
}

pub struct Generator<'a> {
    /// One model per concurrent request (`--concurrency`): each runs in its own worker thread. A
    /// local model uses every core already, so it comes alone.
    pub models: Vec<Box<dyn ChatModel + Send + 'a>>,
    pub encoder: &'a dyn TextEncoder,
    pub cache_dir: PathBuf,
    pub corpus: &'a RealCorpus<'a>,
    /// SMILES of a drug name, from the drug pool.
    pub smiles: &'a dyn Fn(&str) -> Option<String>,
    /// The realism rules (none: only the schema, content and copy rules apply).
    pub gate: Option<&'a CalibratedGate>,
    pub config: GenerateConfig,
}

/// Where a run's realism gate is written: `NAME.gate.json` beside the output.
pub fn gate_path(out: &Path) -> PathBuf {
    let log = log_path(out);
    let name = log.file_name().map_or("synth.log.jsonl".into(), |n| {
        n.to_string_lossy().into_owned()
    });
    log.with_file_name(name.replace(".log.jsonl", ".gate.json"))
}

impl Generator<'_> {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut ce = CachedEncoder::new(self.encoder, &self.cache_dir)?;
        Ok(ce.embed(texts, |_, _| {})?)
    }

    /// Runs (or resumes) the plan, writing to `out` and its log.
    pub fn run(
        &mut self,
        plan: &[Cell],
        out: &Path,
        mut progress: impl FnMut(&Progress),
    ) -> Result<RunSummary> {
        let started = Instant::now();
        let log = log_path(out);
        let (mut out_file, done_records): (File, Vec<SyntheticRecord>) = open_jsonl(out)?;
        let (mut log_file, past): (File, Vec<Attempt>) = open_jsonl(&log)?;

        let tag = {
            let h = Sha256::digest(
                format!(
                    "{}/{}/{}",
                    self.config.seed,
                    self.config.backend,
                    self.model_id()
                )
                .as_bytes(),
            );
            hex::encode(&h[..4])
        };
        // A cell is done when it has an accepted trial (the output file is the authority: a kill
        // between writing the trial and logging it must not generate it again) or no attempts left.
        let accepted_cells: HashSet<usize> =
            done_records.iter().map(|r| r.provenance.cell).collect();
        // The trial is written before its log line, so an accepted attempt whose trial is missing
        // means the output was deleted or edited: its cells would silently count as given up.
        let held: HashSet<&str> = done_records.iter().map(|r| r.trial.id.as_str()).collect();
        let missing: Vec<&Attempt> = past
            .iter()
            .filter(|a| a.accepted && !a.id.as_deref().is_some_and(|id| held.contains(id)))
            .collect();
        if !missing.is_empty() {
            let ids: Vec<String> = missing
                .iter()
                .take(5)
                .map(|a| a.id.clone().unwrap_or_else(|| format!("cell {}", a.cell)))
                .collect();
            return Err(SynthError::Invalid(format!(
                "{} records {} accepted trial(s) that {} does not hold ({}{}): the output was deleted or edited since. \
                 Restore {}, or delete {} as well to start the run over.",
                log.display(),
                missing.len(),
                out.display(),
                ids.join(", "),
                if missing.len() > 5 { ", ..." } else { "" },
                out.display(),
                log.display()
            )));
        }
        let mut attempts_used: HashMap<usize, u32> = HashMap::new();
        for a in &past {
            let e = attempts_used.entry(a.cell).or_default();
            *e = (*e).max(a.attempt + 1);
        }
        let max_attempts = self.config.max_attempts;
        let is_done = |c: &Cell, used: &HashMap<usize, u32>| {
            accepted_cells.contains(&c.index)
                || used.get(&c.index).copied().unwrap_or(0) >= max_attempts
        };
        let resumed_cells = plan.iter().filter(|c| is_done(c, &attempts_used)).count();

        // Accepted synthetic trials so far, for the duplicate check.
        let texts: Vec<String> = done_records
            .iter()
            .map(|r| protocol_text(&r.trial.protocol))
            .collect();
        let mut synthetic_vectors =
            self.embed(&texts.iter().map(String::as_str).collect::<Vec<_>>())?;

        let mut summary = RunSummary {
            cells: plan.len(),
            resumed_cells,
            out: out.display().to_string(),
            log: log.display().to_string(),
            gate: self.gate.map(|g| GateSummary {
                thresholds: g.gate.thresholds.clone(),
                calibration: g.calibration.clone(),
                build_seconds: g.build_seconds,
                checks: 0,
                check_seconds: 0.0,
            }),
            ..Default::default()
        };
        if let Some(g) = &summary.gate {
            let path = gate_path(out);
            let tmp = path.with_extension("json.partial");
            let io = |source| SynthError::Io {
                path: path.clone(),
                source,
            };
            std::fs::write(&tmp, serde_json::to_vec_pretty(g).expect("gate serialises"))
                .map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
        }
        let mut p = Progress {
            cells: plan.len(),
            cells_done: resumed_cells,
            accepted: done_records.len(),
            ..Default::default()
        };
        progress(&p);
        let mut decode_seconds = 0.0;
        let mut accepted_now: HashSet<usize> = HashSet::new();
        let todo: Vec<&Cell> = plan
            .iter()
            .filter(|c| !is_done(c, &attempts_used))
            .collect();
        let first_attempt: Vec<u32> = todo
            .iter()
            .map(|c| attempts_used.get(&c.index).copied().unwrap_or(0))
            .collect();
        let mut models = std::mem::take(&mut self.models);
        let workers = models.len();
        if workers == 0 {
            return Err(SynthError::Invalid("a generation run needs a model".into()));
        }
        let cfg = self.config.clone();
        let corpus = self.corpus;
        let gate = self.gate;
        let this = &*self;
        // Workers draft (the LLM calls, the slow part) up to `workers` attempts at once; this thread
        // judges and writes them strictly in plan order, so the duplicate check, the ids and the
        // files are the same whatever the concurrency and whichever request finishes first.
        let (job_tx, job_rx) = mpsc::channel::<(usize, &Cell, u32)>();
        let job_rx = Mutex::new(job_rx);
        let judged = std::thread::scope(|scope| -> Result<()> {
            // Dropped when this closure returns, which lets the workers finish.
            let job_tx = job_tx;
            let (done_tx, done_rx) = mpsc::channel::<(usize, u32, Result<Drafted>)>();
            for model in models.iter_mut() {
                let (job_rx, done_tx, cfg) = (&job_rx, done_tx.clone(), &cfg);
                scope.spawn(move || loop {
                    let job = job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((pos, cell, attempt)) = job else { break };
                    let drafted = draft(model.as_mut(), corpus, cfg, gate, cell, attempt);
                    if done_tx.send((pos, attempt, drafted)).is_err() {
                        break;
                    }
                });
            }
            drop(done_tx);
            let workers_gone = || SynthError::Invalid("a generation worker stopped".into());

            let mut pending: BTreeMap<usize, (u32, Result<Drafted>)> = BTreeMap::new();
            let mut retries: VecDeque<(usize, u32)> = VecDeque::new();
            let (mut cursor, mut next_new, mut in_flight) = (0usize, 0usize, 0usize);
            while cursor < todo.len() {
                // Retries first, so the cell being judged is never starved by cells ahead of it;
                // new cells at most a few ahead of it, so finished drafts do not pile up.
                while in_flight < workers {
                    let (pos, attempt) = if let Some(job) = retries.pop_front() {
                        job
                    } else if next_new < todo.len() && next_new < cursor + 2 * workers {
                        next_new += 1;
                        (next_new - 1, first_attempt[next_new - 1])
                    } else {
                        break;
                    };
                    job_tx
                        .send((pos, todo[pos], attempt))
                        .map_err(|_| workers_gone())?;
                    in_flight += 1;
                }
                let Some((attempt, drafted)) = pending.remove(&cursor) else {
                    let (pos, attempt, drafted) = done_rx.recv().map_err(|_| workers_gone())?;
                    in_flight -= 1;
                    pending.insert(pos, (attempt, drafted));
                    continue;
                };
                let cell = todo[cursor];
                let drafted = match drafted {
                    Ok(d) => d,
                    // Written to a batch file: the cell waits for the batch's answers, no attempt used.
                    Err(SynthError::Llm(trialforge_llm::LlmError::Deferred(_))) => {
                        summary.deferred += 1;
                        cursor += 1;
                        progress(&p);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let outcome = this.judge(cell, attempt, &tag, drafted, &synthetic_vectors)?;
                summary.attempts += 1;
                if let (Some(g), Some(secs)) = (summary.gate.as_mut(), outcome.gate_seconds) {
                    g.checks += 1;
                    g.check_seconds += secs;
                }
                let usage = outcome.usage;
                summary.prompt_tokens += usage.prompt_tokens;
                summary.completion_tokens += usage.completion_tokens;
                summary.cached_responses += usage.cached;
                decode_seconds += usage.decode_seconds;
                let mut entry = Attempt {
                    cell: cell.index,
                    attempt,
                    accepted: false,
                    id: None,
                    reject: None,
                    also: Vec::new(),
                    output: None,
                    examples: outcome.examples.clone(),
                    prompt_tokens: usage.prompt_tokens,
                    completion_tokens: usage.completion_tokens,
                    seconds: usage.seconds,
                };
                attempts_used.insert(cell.index, attempt + 1);
                let finished = match outcome.result {
                    Ok((record, vector)) => {
                        // The trial first, then the log line (see `accepted_cells` above).
                        append(&mut out_file, out, &record)?;
                        entry.accepted = true;
                        entry.id = Some(record.trial.id.clone());
                        append(&mut log_file, &log, &entry)?;
                        synthetic_vectors.push(vector);
                        accepted_now.insert(cell.index);
                        summary.accepted += 1;
                        p.accepted += 1;
                        true
                    }
                    Err(reject) => {
                        tracing::info!("cell {} attempt {attempt}: rejected, {reject}", cell.index);
                        *summary
                            .rejects_by_rule
                            .entry(reject.rule.clone())
                            .or_default() += 1;
                        entry.reject = Some(reject);
                        entry.also = outcome.also;
                        entry.output = outcome
                            .output
                            .map(|o| o.chars().take(4000).collect::<String>());
                        append(&mut log_file, &log, &entry)?;
                        summary.rejected += 1;
                        p.rejected += 1;
                        attempt + 1 >= max_attempts
                    }
                };
                p.tokens_per_second = if decode_seconds > 0.0 {
                    summary.completion_tokens as f64 / decode_seconds * workers as f64
                } else {
                    0.0
                };
                if finished {
                    p.cells_done += 1;
                    cursor += 1;
                } else {
                    retries.push_back((cursor, attempt + 1));
                }
                progress(&p);
            }
            Ok(())
        });
        self.models = models;
        judged?;
        summary.cells_done = plan
            .iter()
            .filter(|c| accepted_now.contains(&c.index) || is_done(c, &attempts_used))
            .count();
        summary.seconds = started.elapsed().as_secs_f64();
        summary.acceptance_rate = if summary.attempts > 0 {
            summary.accepted as f64 / summary.attempts as f64
        } else {
            0.0
        };
        summary.completion_tokens_per_second = p.tokens_per_second;
        summary.accepted_per_minute = if summary.seconds > 0.0 {
            summary.accepted as f64 * 60.0 / summary.seconds
        } else {
            0.0
        };
        Ok(summary)
    }

    fn model_id(&self) -> &str {
        self.models.first().map_or("", |m| m.model_id())
    }

    /// Validates a draft against the corpus and the synthetic trials accepted so far.
    fn judge(
        &self,
        cell: &Cell,
        attempt: u32,
        tag: &str,
        drafted: Drafted,
        synthetic: &[Vec<f32>],
    ) -> Result<AttemptOutcome> {
        let cfg = &self.config;
        let mut outcome = AttemptOutcome {
            result: Err(Reject::new("internal", "not judged")),
            usage: drafted.usage,
            also: Vec::new(),
            output: None,
            examples: Vec::new(),
            gate_seconds: None,
        };
        let d = match drafted.draft {
            Ok(d) => d,
            Err(reject) => {
                outcome.result = Err(reject);
                return Ok(outcome);
            }
        };
        outcome.output = Some(d.text.clone());
        outcome.examples = d
            .chosen
            .iter()
            .map(|c| self.corpus.trials[c.index].id.clone())
            .collect();
        let generated = match GeneratedTrial::parse(&d.text) {
            Ok(t) => t,
            Err(e) => {
                let detail = if d.finish_reason == trialforge_llm::FinishReason::Length {
                    format!(
                        "output cut at max_tokens ({}) before the JSON was complete",
                        d.generation_params.max_tokens
                    )
                } else {
                    e
                };
                outcome.result = Err(Reject::new("schema", detail));
                return Ok(outcome);
            }
        };
        if let Err(r) = check_content(&generated, cell) {
            outcome.result = Err(r);
            return Ok(outcome);
        }
        let protocol = generated.to_protocol(self.smiles);
        let mut lexical_share = None;
        if let Some(g) = self.gate {
            let t0 = Instant::now();
            let verdict = g.gate.check(
                &protocol,
                &[
                    generated.primary_outcome.as_str(),
                    generated.rationale.as_str(),
                ],
            );
            outcome.gate_seconds = Some(t0.elapsed().as_secs_f64());
            lexical_share = Some(verdict.lexical_share);
            let mut rejects = verdict.rejects.into_iter();
            if let Some(first) = rejects.next() {
                outcome.result = Err(first);
                outcome.also = rejects.collect();
                return Ok(outcome);
            }
        }
        let text = protocol_text(&protocol);
        let vector = self.embed(&[text.as_str()])?.remove(0);

        // Near-copy: against every real trial (test ones included: privacy), and word runs shared
        // with the prompt's examples.
        let nearest = self
            .corpus
            .index
            .search(&vector, 1)
            .map_err(|e| SynthError::Invalid(e.to_string()))?;
        let (nearest_real, max_cosine_real) = nearest.first().map_or((String::new(), 0.0), |h| {
            (self.corpus.trials[h.index].id.clone(), h.score)
        });
        let max_shared = d
            .rendered
            .iter()
            .map(|e| longest_shared_run(&text, e))
            .max()
            .unwrap_or(0);
        let max_cosine_synthetic = synthetic
            .iter()
            .map(|s| s.iter().zip(&vector).map(|(a, b)| a * b).sum::<f32>())
            .fold(0.0f32, f32::max);
        let v = &cfg.validation;
        if max_cosine_real > v.near_copy_cosine {
            outcome.result = Err(Reject::new(
                "near-copy",
                format!("cosine {max_cosine_real:.3} to real trial {nearest_real}"),
            ));
            return Ok(outcome);
        }
        if max_shared >= v.max_shared_words {
            outcome.result = Err(Reject::new(
                "near-copy",
                format!("{max_shared} consecutive words copied from a prompt example"),
            ));
            return Ok(outcome);
        }
        if max_cosine_synthetic > v.duplicate_cosine {
            outcome.result = Err(Reject::new(
                "duplicate",
                format!("cosine {max_cosine_synthetic:.3} to an accepted synthetic trial"),
            ));
            return Ok(outcome);
        }

        let record = SyntheticRecord {
            trial: Trial {
                id: synthetic_id(tag, cell.index),
                source: Source::Synthetic {
                    generator: "trialforge retrieval-reasoning".into(),
                    claimed_id: None,
                },
                protocol,
                label: Some(cell.label),
                split: Split::None,
                post_hoc: Default::default(),
            },
            generated,
            provenance: Provenance {
                cell: cell.index,
                attempt,
                drug: cell.drug.clone(),
                target_label: cell.label,
                phase: cell.phase,
                examples: d
                    .chosen
                    .iter()
                    .map(|c| self.corpus.trials[c.index].id.clone())
                    .collect(),
                examples_of_drug: d.chosen.iter().filter(|c| c.of_drug).count(),
                reasons: d.reasons,
                backend: cfg.backend.clone(),
                model: d.model,
                reasoning_params: d.reasoning_params,
                generation_params: d.generation_params,
                prompt_hash: d.prompt_hash,
                prompt_tokens: outcome.usage.prompt_tokens,
                completion_tokens: outcome.usage.completion_tokens,
                gate: self.gate.map(|g| {
                    let t = &g.gate.thresholds;
                    GateProvenance {
                        digest: t.digest.clone(),
                        lexical_min_share: t.lexical_min_share,
                        condition_max_unknown_share: t.condition_max_unknown_share,
                        enrollment: g.gate.enrollment_bound(cell.phase).cloned(),
                    }
                }),
            },
            validation: ValidationScores {
                nearest_real,
                max_cosine_real,
                max_shared_words_with_examples: max_shared,
                max_cosine_synthetic,
                lexical_share,
            },
        };
        outcome.output = None;
        outcome.result = Ok((record, vector));
        Ok(outcome)
    }
}

/// What the model wrote for one attempt, before validation.
struct Draft {
    chosen: Vec<Chosen>,
    /// The examples as the prompts showed them.
    rendered: Vec<String>,
    reasons: Vec<String>,
    reasoning_params: SamplingParams,
    generation_params: SamplingParams,
    prompt_hash: String,
    model: String,
    text: String,
    finish_reason: trialforge_llm::FinishReason,
}

/// Tokens and time an attempt spent.
#[derive(Clone, Copy, Default)]
struct Usage {
    prompt_tokens: usize,
    completion_tokens: usize,
    decode_seconds: f64,
    /// Responses served from the cache.
    cached: usize,
    seconds: f64,
}

impl Usage {
    fn add(&mut self, c: &trialforge_llm::Completion) {
        self.prompt_tokens += c.prompt_tokens;
        self.completion_tokens += c.completion_tokens;
        self.decode_seconds += c.decode_seconds;
        self.cached += c.cached as usize;
    }
}

/// A draft (or why none could be made) with the attempt's accounting.
struct Drafted {
    draft: std::result::Result<Draft, Reject>,
    usage: Usage,
}

/// One attempt's LLM work: retrieve examples, ask for reasons, ask for the trial. Runs in a worker
/// thread with that worker's model.
fn draft(
    model: &mut dyn ChatModel,
    corpus: &RealCorpus,
    cfg: &GenerateConfig,
    gate: Option<&CalibratedGate>,
    cell: &Cell,
    attempt: u32,
) -> Result<Drafted> {
    let t0 = Instant::now();
    let mut drafted = Drafted {
        draft: Err(Reject::new("internal", "not drafted")),
        usage: Usage::default(),
    };
    let chosen = corpus.examples(cell, cfg.k, cfg.example_near_duplicate);
    if chosen.is_empty() {
        drafted.draft = Err(Reject::new(
            "examples",
            format!("no allowed real trial of `{}` with this label", cell.drug),
        ));
        return Ok(drafted);
    }
    let rendered: Vec<String> = chosen
        .iter()
        .map(|c| render_example(&corpus.trials[c.index].protocol, cfg.example_chars))
        .collect();
    let seed = attempt_seed(cfg.seed, cell.index, attempt);

    let reasoning_params = SamplingParams {
        seed,
        ..cfg.reasoning.clone()
    };
    let r = model.chat(
        &reasoning_messages(cell, &rendered, cfg.n_reasons),
        &reasoning_params,
    )?;
    drafted.usage.add(&r);
    let reasons = parse_reasons(&r.text, cfg.n_reasons);

    let generation_params = SamplingParams {
        seed,
        ..cfg.generation.clone()
    };
    let messages = generation_messages(cell, &rendered, &reasons);
    let constraints = RequestConstraints {
        enrollment: gate
            .and_then(|g| g.gate.enrollment_bound(cell.phase))
            .map(|b| (b.min, b.max)),
        conditions: cfg
            .conditions_from_examples
            .then(|| corpus.conditions_for(cell, &chosen)),
    };
    let schema = request_schema(&cell.drug, cell.phase, &constraints);
    let g = model.chat_json(&messages, &generation_params, Some(&schema))?;
    drafted.usage.add(&g);
    let prompt_hash = request_hash(
        &cfg.backend,
        model.model_id(),
        &messages,
        &generation_params,
        Some(&schema),
    );
    drafted.draft = Ok(Draft {
        chosen,
        rendered,
        reasons,
        reasoning_params,
        generation_params,
        prompt_hash,
        model: model.model_id().to_string(),
        text: g.text,
        finish_reason: g.finish_reason,
    });
    drafted.usage.seconds = t0.elapsed().as_secs_f64();
    Ok(drafted)
}

struct AttemptOutcome {
    result: std::result::Result<(SyntheticRecord, Vec<f32>), Reject>,
    usage: Usage,
    /// Rules broken after the first (gate rejects).
    also: Vec<Reject>,
    /// The model's text (kept in the log for rejected attempts).
    output: Option<String>,
    examples: Vec<String>,
    gate_seconds: Option<f64>,
}
