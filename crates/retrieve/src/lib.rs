//! Exact nearest-neighbour search by cosine similarity over unit-normalised vectors.
//!
//! Brute force on purpose: at trial-corpus sizes (thousands to ~100k x 384) a scan costs
//! milliseconds and is exact, and queries in a batch are scanned in parallel. An approximate index
//! can sit behind the same API if corpora ever outgrow it.

use rayon::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("vector {index} has length {got}, the index holds {want}-d vectors")]
    Dim {
        index: usize,
        got: usize,
        want: usize,
    },
}

/// One search result: the position of the item in the index and its cosine similarity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub index: usize,
    pub score: f32,
}

pub struct VectorIndex {
    dim: usize,
    data: Vec<f32>,
}

impl VectorIndex {
    pub fn new(dim: usize) -> Self {
        VectorIndex {
            dim,
            data: Vec::new(),
        }
    }

    /// Builds an index from unit vectors (checked for length, not for norm).
    pub fn from_vectors(dim: usize, vectors: &[Vec<f32>]) -> Result<Self, IndexError> {
        let mut ix = VectorIndex::new(dim);
        for v in vectors {
            ix.push(v)?;
        }
        Ok(ix)
    }

    pub fn push(&mut self, v: &[f32]) -> Result<usize, IndexError> {
        if v.len() != self.dim {
            return Err(IndexError::Dim {
                index: self.len(),
                got: v.len(),
                want: self.dim,
            });
        }
        self.data.extend_from_slice(v);
        Ok(self.len() - 1)
    }

    pub fn len(&self) -> usize {
        self.data.len() / self.dim.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn vector(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The `k` most similar items, best first.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>, IndexError> {
        self.search_filtered(query, k, |_| true)
    }

    /// The `k` most similar items among those `keep` accepts, best first. Ties keep index order.
    pub fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        keep: impl Fn(usize) -> bool,
    ) -> Result<Vec<Hit>, IndexError> {
        if query.len() != self.dim {
            return Err(IndexError::Dim {
                index: 0,
                got: query.len(),
                want: self.dim,
            });
        }
        let mut hits: Vec<Hit> = self
            .data
            .chunks_exact(self.dim)
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(index, v)| Hit {
                index,
                score: v.iter().zip(query).map(|(a, b)| a * b).sum(),
            })
            .collect();
        let k = k.min(hits.len());
        if k == 0 {
            return Ok(Vec::new());
        }
        let by_score = |a: &Hit, b: &Hit| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index));
        hits.select_nth_unstable_by(k - 1, by_score);
        hits.truncate(k);
        hits.sort_by(by_score);
        Ok(hits)
    }

    /// Searches many queries in parallel.
    pub fn search_batch(
        &self,
        queries: &[Vec<f32>],
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, IndexError> {
        queries.par_iter().map(|q| self.search(q, k)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn finds_nearest_in_order_with_filter() {
        let vs = vec![
            unit(&[1.0, 0.0]),
            unit(&[0.0, 1.0]),
            unit(&[1.0, 1.0]),
            unit(&[1.0, 0.1]),
        ];
        let ix = VectorIndex::from_vectors(2, &vs).unwrap();
        let hits = ix.search(&unit(&[1.0, 0.0]), 3).unwrap();
        let order: Vec<usize> = hits.iter().map(|h| h.index).collect();
        assert_eq!(order, vec![0, 3, 2]);
        assert!((hits[0].score - 1.0).abs() < 1e-6);
        assert!((hits[2].score - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        let hits = ix
            .search_filtered(&unit(&[1.0, 0.0]), 2, |i| i != 0)
            .unwrap();
        assert_eq!(hits.iter().map(|h| h.index).collect::<Vec<_>>(), vec![3, 2]);
        assert_eq!(ix.search(&unit(&[1.0, 0.0]), 10).unwrap().len(), 4);
        assert_eq!(
            ix.search_batch(&[unit(&[0.0, 1.0])], 1).unwrap()[0][0].index,
            1
        );
    }

    #[test]
    fn wrong_dimension_is_an_error() {
        let mut ix = VectorIndex::new(3);
        assert!(ix.push(&[1.0, 0.0]).is_err());
        assert!(ix.search(&[1.0], 1).is_err());
    }
}
