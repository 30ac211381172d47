//! 2-D t-SNE of embeddings (bhtsne's Barnes-Hut version), seeded: the start layout is drawn from our
//! own seeded generator rather than the crate's, so a fixed seed gives a fixed picture.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Settings of the seed paper's figure: 2-D, perplexity 30.
#[derive(Clone, Debug)]
pub struct TsneParams {
    pub perplexity: f32,
    pub theta: f32,
    pub epochs: usize,
    pub seed: u64,
}

impl Default for TsneParams {
    fn default() -> Self {
        TsneParams {
            perplexity: 30.0,
            theta: 0.5,
            epochs: 1000,
            seed: 0,
        }
    }
}

/// The perplexity actually used: t-SNE needs `n - 1 >= 3 * perplexity`, so small sets get a smaller one.
pub fn effective_perplexity(n: usize, wanted: f32) -> f32 {
    wanted.min((n.saturating_sub(1) / 3) as f32)
}

/// 2-D coordinates of each vector, or `None` with fewer than 4 points (no neighbourhood to keep).
/// Distances are Euclidean; on unit vectors that orders pairs as cosine does.
pub fn tsne_2d(vectors: &[Vec<f32>], params: &TsneParams) -> Option<Vec<[f32; 2]>> {
    let n = vectors.len();
    let perplexity = effective_perplexity(n, params.perplexity);
    if perplexity < 1.0 {
        return None;
    }
    let mut rng = StdRng::seed_from_u64(params.seed);
    // The usual start: small Gaussian-ish noise (sum of uniforms), 1e-4 scale.
    let start: Vec<f32> = (0..n * 2)
        .map(|_| (0..4).map(|_| rng.random::<f32>() - 0.5).sum::<f32>() * 1e-4)
        .collect();
    let data: Vec<&[f32]> = vectors.iter().map(Vec::as_slice).collect();
    let neighbors = nearest_neighbors(vectors, (3.0 * perplexity) as usize);
    let fit = || {
        let mut tsne: bhtsne::tSNE<f32, &[f32], 2> = bhtsne::tSNE::new(&data);
        tsne.perplexity(perplexity)
            .epochs(params.epochs)
            .initial_embedding(start)
            .barnes_hut_with_neighbors(params.theta, &neighbors);
        tsne.embedding()
    };
    // One thread: the crate's parallel sums add up in a different order on every run, and t-SNE
    // turns those last-bit differences into a different picture.
    let flat = match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
        Ok(pool) => pool.install(fit),
        Err(_) => fit(),
    };
    Some(flat.chunks(2).map(|c| [c[0], c[1]]).collect())
}

/// Exact k nearest neighbours by brute force, ties broken by index. The crate's own search uses a
/// randomly pivoted tree whose tie order, and so the layout, changes from run to run.
fn nearest_neighbors(vectors: &[Vec<f32>], k: usize) -> Vec<Vec<bhtsne::Neighbor<f32>>> {
    let k = k.min(vectors.len().saturating_sub(1));
    let distance = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
            .sqrt()
    };
    vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut row: Vec<(f32, usize)> = vectors
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(j, w)| (distance(v, w), j))
                .collect();
            row.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            row.truncate(k);
            row.into_iter()
                .map(|(distance, index)| bhtsne::Neighbor { index, distance })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(centre: f32, n: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                (0..8)
                    .map(|d| if d == 0 { centre } else { 0.0 } + rng.random::<f32>() * 0.1)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn separates_two_clusters_and_is_reproducible() {
        let mut v = cluster(0.0, 30, 1);
        v.extend(cluster(5.0, 30, 2));
        let p = TsneParams {
            perplexity: 10.0,
            epochs: 500,
            ..Default::default()
        };
        let a = tsne_2d(&v, &p).unwrap();
        let b = tsne_2d(&v, &p).unwrap();
        assert_eq!(a.len(), 60);
        let dist =
            |x: [f32; 2], y: [f32; 2]| ((x[0] - y[0]).powi(2) + (x[1] - y[1]).powi(2)).sqrt();
        assert_eq!(a, b, "same seed, same layout");
        let centroid = |pts: &[[f32; 2]]| {
            let n = pts.len() as f32;
            [
                pts.iter().map(|p| p[0]).sum::<f32>() / n,
                pts.iter().map(|p| p[1]).sum::<f32>() / n,
            ]
        };
        let (c0, c1) = (centroid(&a[..30]), centroid(&a[30..]));
        let spread = a[..30].iter().map(|p| dist(*p, c0)).fold(0.0f32, f32::max);
        assert!(
            dist(c0, c1) > 2.0 * spread,
            "clusters overlap: {c0:?} {c1:?} spread {spread}"
        );
    }

    #[test]
    fn small_sets_get_a_smaller_perplexity_or_none() {
        assert_eq!(effective_perplexity(1000, 30.0), 30.0);
        assert_eq!(effective_perplexity(31, 30.0), 10.0);
        assert!(tsne_2d(&cluster(0.0, 3, 0), &TsneParams::default()).is_none());
        assert_eq!(
            tsne_2d(&cluster(0.0, 7, 0), &TsneParams::default())
                .unwrap()
                .len(),
            7
        );
    }
}
