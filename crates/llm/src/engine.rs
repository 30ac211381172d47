//! Continuous batching for the in-process model, as llama.cpp's server and vLLM do it: one thread
//! owns the weights and a KV cache per slot; chat handles on other threads hand it prepared
//! requests. Between decoding steps it admits waiting requests into free slots (their prompts are
//! prefilled, each on its own), then runs one forward pass that appends a token to every active
//! sequence; a sequence that ends frees its slot at once. Sampling, the repetition penalty and the
//! JSON-Schema mask are per sequence, seeded per request, and the forward pass computes each token
//! the same whatever shares its step (see `llama.rs`), so a request gets the same tokens alone, in
//! a batch of any size, and whichever requests it happens to meet.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use crate::llama::Llama;
use crate::local::{ChatFormat, PreparedRequest};
use crate::sampling::{apply_repeat_penalty, Sampler};
use crate::{ChatMessage, ChatModel, Completion, FinishReason, LlmError, Result, SamplingParams};

/// One sequence being decoded in a slot of the model.
pub(crate) struct Decoding {
    slot: usize,
    request: PreparedRequest,
    sampler: Sampler,
    generated: Vec<u32>,
    /// The logits the next token is drawn from.
    logits: Vec<f32>,
    prefill_seconds: f64,
    decode_started: Instant,
}

impl Decoding {
    /// Empties `slot` and prefills the request's prompt into it.
    pub fn start(model: &mut Llama, slot: usize, request: PreparedRequest) -> Result<Self> {
        model.reset(slot);
        let started = Instant::now();
        let logits = model.prompt(slot, &request.prompt_ids)?;
        Ok(Decoding {
            slot,
            sampler: Sampler::new(&request.params),
            request,
            generated: Vec::new(),
            logits,
            prefill_seconds: started.elapsed().as_secs_f64(),
            decode_started: Instant::now(),
        })
    }

    /// Draws the next token from the pending logits. `Some(reason)` when the sequence has ended
    /// (nothing more to feed); otherwise [`Self::last_token`] is to be fed to the model and its
    /// logits handed back with [`Self::set_logits`].
    pub fn advance(&mut self, stop_ids: &[u32]) -> Result<Option<FinishReason>> {
        let params = &self.request.params;
        if self.generated.len() >= params.max_tokens {
            return Ok(Some(FinishReason::Length));
        }
        let logits = &mut self.logits;
        if params.repeat_penalty != 1.0 && !self.generated.is_empty() {
            let start = self.generated.len().saturating_sub(params.repeat_last_n);
            apply_repeat_penalty(logits, params.repeat_penalty, &self.generated[start..]);
        }
        if let Some(m) = self.request.matcher.as_mut() {
            // Only tokens that keep the output a valid prefix of a schema-conforming document.
            let mask = m
                .compute_mask()
                .map_err(|e| LlmError::Constraint(e.to_string()))?;
            for (i, x) in logits.iter_mut().enumerate() {
                if !mask.is_allowed(i as u32) {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
        let next = self.sampler.sample(logits);
        if stop_ids.contains(&next) {
            return Ok(Some(FinishReason::Stop));
        }
        self.generated.push(next);
        if let Some(m) = self.request.matcher.as_mut() {
            m.consume_token(next)
                .map_err(|e| LlmError::Constraint(e.to_string()))?;
            // The matcher stops right after the document's last token: keep that token, stop.
            if m.is_stopped() {
                return Ok(Some(FinishReason::Stop));
            }
        }
        if self.generated.len() == params.max_tokens {
            return Ok(Some(FinishReason::Length));
        }
        Ok(None)
    }

    pub fn last_token(&self) -> u32 {
        *self.generated.last().expect("a token was drawn")
    }

    pub fn set_logits(&mut self, logits: Vec<f32>) {
        self.logits = logits;
    }

    pub fn finish(self, reason: FinishReason, format: &ChatFormat) -> Result<Completion> {
        Ok(Completion {
            text: format.decode_text(&self.generated)?,
            finish_reason: reason,
            prompt_tokens: self.request.prompt_ids.len(),
            completion_tokens: self.generated.len(),
            prefill_seconds: self.prefill_seconds,
            decode_seconds: self.decode_started.elapsed().as_secs_f64(),
            cached: false,
        })
    }
}

struct Job {
    request: PreparedRequest,
    reply: Sender<Result<Completion>>,
}

/// A chat handle on a shared, batching local model (see [`crate::LocalGguf::into_batched`]). A
/// handle serves one request at a time: clone one for each worker thread.
#[derive(Clone)]
pub struct BatchedLocal {
    format: Arc<ChatFormat>,
    jobs: Sender<Job>,
}

/// Starts the decoding thread with `slots` sequences; it stops when every handle is dropped.
pub(crate) fn start(mut model: Llama, format: Arc<ChatFormat>, slots: usize) -> BatchedLocal {
    let slots = slots.max(1);
    model.ensure_slots(slots);
    let (jobs, queue) = mpsc::channel();
    let worker_format = format.clone();
    std::thread::Builder::new()
        .name("trialforge-llm".into())
        .spawn(move || serve(model, &worker_format, slots, queue))
        .expect("the OS starts a thread");
    BatchedLocal { format, jobs }
}

/// The decoding thread's loop.
fn serve(mut model: Llama, format: &ChatFormat, slots: usize, queue: Receiver<Job>) {
    let mut active: Vec<(Decoding, Sender<Result<Completion>>)> = Vec::new();
    // Lowest slot first, so a lone request always decodes in slot 0.
    let mut free: Vec<usize> = (0..slots).rev().collect();
    let vocab = model.vocab_size();
    loop {
        // Admit: wait when idle; otherwise take what is queued, up to the free slots.
        while let Some(&slot) = free.last() {
            let job = if active.is_empty() {
                match queue.recv() {
                    Ok(job) => job,
                    Err(_) => return, // every handle is gone
                }
            } else {
                // Nothing queued, or every handle gone: decode what is active first.
                match queue.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
            free.pop();
            match Decoding::start(&mut model, slot, job.request) {
                Ok(seq) => active.push((seq, job.reply)),
                Err(e) => {
                    free.push(slot);
                    let _ = job.reply.send(Err(e));
                }
            }
        }
        // Draw every active sequence's next token; answer the ones that ended.
        let mut i = 0;
        while i < active.len() {
            let ended = match active[i].0.advance(&format.stop_ids) {
                Ok(None) => {
                    i += 1;
                    continue;
                }
                Ok(Some(reason)) => Ok(reason),
                Err(e) => Err(e),
            };
            let (seq, reply) = active.swap_remove(i);
            free.push(seq.slot);
            let _ = reply.send(ended.and_then(|reason| seq.finish(reason, format)));
        }
        // Keep the lowest free slot on top.
        free.sort_unstable_by(|a, b| b.cmp(a));
        if active.is_empty() {
            continue;
        }
        let steps: Vec<(usize, u32)> = active
            .iter()
            .map(|(seq, _)| (seq.slot, seq.last_token()))
            .collect();
        match model.decode(&steps) {
            Ok(logits) => {
                for ((seq, _), row) in active.iter_mut().zip(logits.chunks_exact(vocab)) {
                    seq.set_logits(row.to_vec());
                }
            }
            Err(e) => {
                // A forward pass fails for all its sequences alike.
                let message = e.to_string();
                for (seq, reply) in active.drain(..) {
                    free.push(seq.slot);
                    let _ = reply.send(Err(LlmError::Unsupported(message.clone())));
                }
            }
        }
    }
}

impl ChatModel for BatchedLocal {
    fn model_id(&self) -> &str {
        &self.format.id
    }

    fn chat_json(
        &mut self,
        messages: &[ChatMessage],
        params: &SamplingParams,
        schema: Option<&serde_json::Value>,
    ) -> Result<Completion> {
        let request = self.format.prepare(messages, params, schema)?;
        let (reply, answer) = mpsc::channel();
        let stopped = || LlmError::Unsupported("the local model's decoding thread stopped".into());
        self.jobs
            .send(Job { request, reply })
            .map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }
}
