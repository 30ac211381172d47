//! Cache of the token states that enter a BERT encoder's top layer: one small f16 safetensors file
//! per text, named by the text's sha256, under a folder per model. A file is written to a temporary
//! name and renamed, so a crash or kill never leaves a half-written entry behind.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};

use crate::{BertEncoder, EncodeError, Result, TextEncoder};

pub struct StateCache {
    dir: PathBuf,
}

impl StateCache {
    /// The cache of `encoder`'s below-top states in `root` (created when missing).
    pub fn open(root: &Path, encoder: &BertEncoder) -> Result<Self> {
        let dir = root.join(format!("{}.below-top", encoder.model_id()));
        std::fs::create_dir_all(&dir).map_err(|source| EncodeError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(StateCache { dir })
    }

    fn path(&self, text: &str) -> PathBuf {
        let h = Sha256::digest(text.as_bytes());
        self.dir
            .join(format!("{}.safetensors", hex::encode(&h[..16])))
    }

    fn read(&self, text: &str) -> Option<Tensor> {
        let p = self.path(text);
        if !p.is_file() {
            return None;
        }
        match candle_core::safetensors::load(&p, &Device::Cpu) {
            Ok(mut m) => m.remove("states"),
            Err(e) => {
                tracing::warn!("{}: unreadable, recomputing ({e})", p.display());
                None
            }
        }
    }

    fn write(&self, text: &str, states: &Tensor) -> Result<()> {
        let p = self.path(text);
        let tmp = p.with_extension("tmp");
        let io = |source| EncodeError::Io {
            path: tmp.clone(),
            source,
        };
        candle_core::safetensors::save(
            &std::collections::HashMap::from([("states".to_string(), states.clone())]),
            &tmp,
        )
        .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        std::fs::rename(&tmp, &p).map_err(io)
    }

    /// The states of each text as (tokens x dim) f16 matrices, computing and storing the missing
    /// ones; `progress(done, to_compute)` after each batch.
    pub fn states(
        &self,
        encoder: &BertEncoder,
        texts: &[&str],
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Vec<Tensor>> {
        let mut out: Vec<Option<Tensor>> = texts.iter().map(|t| self.read(t)).collect();
        let mut missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        // Similar lengths together (less padding in the encoder's batches), repeats adjacent.
        missing.sort_by_key(|&i| (texts[i].len(), texts[i]));
        missing.dedup_by_key(|i| texts[*i]);
        let total = missing.len();
        for (done, chunk) in missing.chunks(64).enumerate() {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            for (&i, s) in chunk.iter().zip(encoder.states_below_top(&batch)?) {
                let s = s.to_dtype(DType::F16)?;
                self.write(texts[i], &s)?;
                out[i] = Some(s);
            }
            progress((done * 64 + chunk.len()).min(total), total);
        }
        texts
            .iter()
            .zip(out)
            .map(|(t, s)| match s {
                Some(s) => Ok(s),
                // A repeated text: computed once, under its first index.
                None => self.read(t).ok_or_else(|| EncodeError::Io {
                    path: self.path(t),
                    source: std::io::Error::other("state file vanished after it was written"),
                }),
            })
            .collect()
    }
}
