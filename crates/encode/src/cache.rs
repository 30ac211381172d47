//! Embedding cache: one append-only file per model, each record the sha256 of a text followed by its
//! vector (little-endian f32). Appends are flushed chunk by chunk, so a crash or kill loses at most the
//! chunk in flight; a torn last record is cut off when the file is next opened.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{EncodeError, Result, TextEncoder};

type Key = [u8; 32];

pub struct EmbeddingCache {
    path: PathBuf,
    dim: usize,
    index: HashMap<Key, usize>,
    vectors: Vec<f32>,
    writer: BufWriter<File>,
}

fn key(text: &str) -> Key {
    Sha256::digest(text.as_bytes()).into()
}

/// A file name for a model id: the id itself when it is safe in a file name (every local
/// encoder's), else its safe characters and a hash of the whole id (a served model's id holds a
/// URL).
fn file_stem(model_id: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "._-:".contains(c);
    if model_id.chars().all(safe) && !model_id.starts_with('.') {
        return model_id.to_string();
    }
    let readable: String = model_id
        .chars()
        .map(|c| if safe(c) { c } else { '_' })
        .take(80)
        .collect();
    let digest = hex::encode(&Sha256::digest(model_id.as_bytes())[..6]);
    format!("{readable}-{digest}")
}

impl EmbeddingCache {
    /// Opens (or creates) the cache of `model_id` in `dir`.
    pub fn open(dir: &Path, model_id: &str, dim: usize) -> Result<Self> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| EncodeError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(format!("{}.d{dim}.emb", file_stem(model_id)));
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(&path))?;
        let rec = 32 + 4 * dim;
        let whole = bytes.len() / rec;
        if bytes.len() % rec != 0 {
            tracing::warn!("{}: dropping a torn last record", path.display());
            file.set_len((whole * rec) as u64).map_err(io(&path))?;
        }
        let mut index = HashMap::with_capacity(whole);
        let mut vectors = Vec::with_capacity(whole * dim);
        for (i, r) in bytes.chunks_exact(rec).enumerate() {
            let k: Key = r[..32].try_into().expect("32-byte key");
            vectors.extend(
                r[32..]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))),
            );
            index.insert(k, i);
        }
        Ok(EmbeddingCache {
            path,
            dim,
            index,
            vectors,
            writer: BufWriter::new(file),
        })
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, text: &str) -> Option<&[f32]> {
        self.index
            .get(&key(text))
            .map(|&i| &self.vectors[i * self.dim..(i + 1) * self.dim])
    }

    /// Adds vectors (written through to disk on [`flush`](Self::flush)).
    pub fn insert(&mut self, text: &str, v: &[f32]) -> Result<()> {
        assert_eq!(
            v.len(),
            self.dim,
            "vector length must match the cache's dimension"
        );
        let k = key(text);
        if self.index.contains_key(&k) {
            return Ok(());
        }
        let io = |source| EncodeError::Io {
            path: self.path.clone(),
            source,
        };
        self.writer.write_all(&k).map_err(io)?;
        for x in v {
            self.writer.write_all(&x.to_le_bytes()).map_err(io)?;
        }
        self.index.insert(k, self.index.len());
        self.vectors.extend_from_slice(v);
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.writer.flush().map_err(|source| EncodeError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

impl Drop for EmbeddingCache {
    fn drop(&mut self) {
        let _ = self.writer.flush();
    }
}

/// An encoder in front of its cache: only texts never seen before reach the model.
pub struct CachedEncoder<'a> {
    encoder: &'a dyn TextEncoder,
    cache: EmbeddingCache,
    /// Texts encoded per model call (and per flush to disk).
    pub chunk: usize,
}

impl<'a> CachedEncoder<'a> {
    pub fn new(encoder: &'a dyn TextEncoder, cache_dir: &Path) -> Result<Self> {
        let cache = EmbeddingCache::open(cache_dir, encoder.model_id(), encoder.dim())?;
        Ok(CachedEncoder {
            encoder,
            cache,
            chunk: 256,
        })
    }

    pub fn cache(&self) -> &EmbeddingCache {
        &self.cache
    }

    /// Embeds `texts`, calling `progress(done, to_encode)` after each chunk of cache misses.
    pub fn embed(
        &mut self,
        texts: &[&str],
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Vec<Vec<f32>>> {
        let mut seen = std::collections::HashSet::new();
        let mut misses: Vec<&str> = texts
            .iter()
            .copied()
            .filter(|t| self.cache.get(t).is_none() && seen.insert(*t))
            .collect();
        // Similar lengths together: less padding inside the encoder's batches.
        misses.sort_by_key(|t| t.len());
        let total = misses.len();
        let mut done = 0;
        for chunk in misses.chunks(self.chunk.max(1)) {
            let vecs = self.encoder.encode(chunk)?;
            for (t, v) in chunk.iter().zip(&vecs) {
                self.cache.insert(t, v)?;
            }
            self.cache.flush()?;
            done += chunk.len();
            progress(done, total);
        }
        Ok(texts
            .iter()
            .map(|t| {
                self.cache
                    .get(t)
                    .expect("every text is cached by now")
                    .to_vec()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A deterministic toy encoder that counts the texts it is asked to encode.
    struct Toy(AtomicUsize);
    impl TextEncoder for Toy {
        fn model_id(&self) -> &str {
            "toy"
        }
        fn dim(&self) -> usize {
            2
        }
        fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
            self.0.fetch_add(texts.len(), Ordering::SeqCst);
            Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect())
        }
    }

    #[test]
    fn rerun_does_not_re_embed_and_survives_a_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        let toy = Toy(AtomicUsize::new(0));
        {
            let mut ce = CachedEncoder::new(&toy, dir.path()).unwrap();
            let v = ce.embed(&["a", "bb", "a"], |_, _| {}).unwrap();
            assert_eq!(v, vec![vec![1.0, 1.0], vec![2.0, 1.0], vec![1.0, 1.0]]);
        }
        assert_eq!(
            toy.0.load(Ordering::SeqCst),
            2,
            "duplicates are encoded once"
        );
        // Simulate a kill mid-write: half a record at the end of the file.
        let path = dir.path().join("toy.d2.emb");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[7u8; 20]).unwrap();
        drop(f);
        let mut ce = CachedEncoder::new(&toy, dir.path()).unwrap();
        assert_eq!(ce.cache().len(), 2);
        let v = ce.embed(&["bb", "ccc"], |_, _| {}).unwrap();
        assert_eq!(v[1], vec![3.0, 1.0]);
        assert_eq!(
            toy.0.load(Ordering::SeqCst),
            3,
            "only the new text reached the model"
        );
        drop(ce);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 * (32 + 8));
    }
}
