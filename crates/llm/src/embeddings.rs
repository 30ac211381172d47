//! A served embedding model behind [`TextEncoder`]: any OpenAI-compatible `POST /v1/embeddings`
//! (OpenAI, text-embeddings-inference, vLLM, llama.cpp's servers). Texts go in batches; transient
//! failures are retried with backoff by the same transport as the chat client; the key comes from an
//! environment variable and is never logged. Vectors are L2-normalised like the local encoders'.
//! A server that returns one vector per token (llama.cpp without a pooling type) has them averaged
//! here, as the local LLM encoder averages its hidden states. A server that mixes up the inputs of
//! one request (llama-cpp-python 0.3.36 does, for models without a pooling type: every input after
//! the first gets rows of the wrong tokens) is found at connection, by one text sent twice, and is
//! then sent one text a request. Caching is the caller's
//! (`CachedEncoder`, keyed by [`TextEncoder::model_id`]), as for every encoder.

use serde_json::{json, Value};
use trialforge_encode::{EncodeError, TextEncoder};

use crate::openai::{model_id, Counts, OpenAiOptions, Transport};

const EMBEDDINGS_PATH: &str = "embeddings";

pub struct OpenAiEmbeddings {
    model: String,
    http: Transport,
    counts: Counts,
    batch_size: usize,
    dim: usize,
    id: String,
}

impl OpenAiEmbeddings {
    /// Connects to the server at `opts.base_url` and asks it for a text's embedding twice in one
    /// request: to learn the dimension, to fail now (with the server's answer) if it cannot embed,
    /// and to see whether it keeps the inputs of a request apart. Texts are sent `batch_size` at a
    /// time, or one at a time to a server that gave the same text two different vectors.
    pub fn new(opts: &OpenAiOptions, batch_size: usize) -> crate::Result<Self> {
        let mut client = OpenAiEmbeddings {
            model: opts.model.clone(),
            http: Transport::new(opts),
            counts: Counts::default(),
            batch_size: batch_size.max(1),
            dim: 0,
            id: format!("{}:embeddings", model_id(&opts.model, &opts.base_url)),
        };
        let probe = client.request(&["dimension probe"; 2])?;
        client.dim = probe[0].len();
        let agreement = trialforge_encode::cosine(&probe[0], &probe[1]);
        if agreement < 0.999 && client.batch_size > 1 {
            tracing::warn!(
                "{}: the same text sent twice in one request came back as two different vectors \
                 (cosine {agreement:.3}): the server mixes up a request's inputs, so texts go one a request",
                opts.base_url
            );
            client.batch_size = 1;
        }
        Ok(client)
    }

    /// Texts a request.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Requests sent (retries included) and retries, so far.
    pub fn requests(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.counts.requests.load(Relaxed),
            self.counts.retries.load(Relaxed),
        )
    }

    /// One request for `texts`: unit vectors, in input order.
    fn request(&self, texts: &[&str]) -> crate::Result<Vec<Vec<f32>>> {
        // OpenAI refuses empty strings in `input`.
        let input: Vec<&str> = texts
            .iter()
            .map(|t| if t.trim().is_empty() { " " } else { t })
            .collect();
        let body = json!({"model": self.model, "input": input, "encoding_format": "float"});
        let value = self.http.with_retries(EMBEDDINGS_PATH, &self.counts, || {
            self.http.send(EMBEDDINGS_PATH, &body, false)
        })?;
        parse_embeddings(&value, texts.len(), self.dim).map_err(|e| {
            crate::LlmError::Remote(format!("{}: {e}", self.http.url(EMBEDDINGS_PATH)))
        })
    }
}

/// The `data` of an embeddings answer as `n` unit vectors in input order (by each item's `index`).
/// `dim` 0: not known yet.
fn parse_embeddings(value: &Value, n: usize, dim: usize) -> Result<Vec<Vec<f32>>, String> {
    let data = value["data"]
        .as_array()
        .ok_or("the answer has no `data` array")?;
    if data.len() != n {
        return Err(format!(
            "asked for {n} embeddings, the answer has {}",
            data.len()
        ));
    }
    let mut out: Vec<Option<Vec<f32>>> = vec![None; n];
    for (k, item) in data.iter().enumerate() {
        let index = item["index"].as_u64().map_or(k, |i| i as usize);
        let slot = out
            .get_mut(index)
            .ok_or_else(|| format!("data[{k}].index {index} is past the {n} inputs"))?;
        let mut v = vector(&item["embedding"]).map_err(|e| format!("data[{k}].embedding: {e}"))?;
        let expected = if dim > 0 { dim } else { v.len() };
        if v.is_empty() || v.len() != expected {
            return Err(format!(
                "data[{k}].embedding has {} numbers, expected {expected}",
                v.len()
            ));
        }
        trialforge_encode::normalise(&mut v);
        *slot = Some(v);
    }
    out.into_iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| format!("no embedding for input {i}")))
        .collect()
}

/// An embedding: a list of numbers, or a list of per-token lists (averaged).
fn vector(v: &Value) -> Result<Vec<f32>, String> {
    let items = v.as_array().ok_or("expected a list of numbers")?;
    let numbers = |row: &Value| -> Result<Vec<f32>, String> {
        row.as_array()
            .ok_or("expected a list of numbers")?
            .iter()
            .map(|x| {
                x.as_f64()
                    .map(|x| x as f32)
                    .ok_or("a value is not a number".into())
            })
            .collect()
    };
    match items.first() {
        Some(Value::Array(_)) => {
            let rows: Vec<Vec<f32>> = items.iter().map(numbers).collect::<Result<_, _>>()?;
            let width = rows[0].len();
            if rows.iter().any(|r| r.len() != width) {
                return Err("per-token vectors of different lengths".into());
            }
            let mut mean = vec![0f32; width];
            for r in &rows {
                mean.iter_mut().zip(r).for_each(|(m, x)| *m += x);
            }
            mean.iter_mut().for_each(|m| *m /= rows.len() as f32);
            Ok(mean)
        }
        _ => numbers(v),
    }
}

impl TextEncoder for OpenAiEmbeddings {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn encode(&self, texts: &[&str]) -> trialforge_encode::Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.batch_size) {
            out.extend(
                self.request(batch)
                    .map_err(|e| EncodeError::Backend(e.to_string()))?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_put_in_input_order_and_normalised() {
        let answer = json!({"data": [
            {"index": 1, "embedding": [0.0, 2.0]},
            {"index": 0, "embedding": [[3.0, 0.0], [1.0, 0.0]]},
        ]});
        let v = parse_embeddings(&answer, 2, 2).unwrap();
        assert_eq!(v, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
    }

    #[test]
    fn malformed_answers_say_what_is_wrong() {
        let short = json!({"data": [{"index": 0, "embedding": [1.0]}]});
        assert!(parse_embeddings(&short, 2, 0)
            .unwrap_err()
            .contains("asked for 2"));
        let wrong_dim = json!({"data": [{"index": 0, "embedding": [1.0, 2.0, 3.0]}]});
        let e = parse_embeddings(&wrong_dim, 1, 2).unwrap_err();
        assert!(e.contains("3 numbers, expected 2"), "{e}");
        let text = json!({"data": [{"index": 0, "embedding": "AAAA"}]});
        assert!(parse_embeddings(&text, 1, 0)
            .unwrap_err()
            .contains("list of numbers"));
        let twice =
            json!({"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]});
        assert!(parse_embeddings(&twice, 2, 1)
            .unwrap_err()
            .contains("no embedding for input 1"));
    }
}
