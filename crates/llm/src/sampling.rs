//! Next-token choice from logits, in place on a `Vec<f32>`: repetition penalty, temperature, top-k,
//! top-p, seeded draw. Top-p looks at the largest probabilities first and sorts only as many as it
//! needs (almost always a few hundred of a 49k vocabulary), where a full sort at every step costs
//! about as much as a small model's forward pass.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::SamplingParams;

pub struct Sampler {
    rng: StdRng,
    temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
}

impl Sampler {
    pub fn new(params: &SamplingParams) -> Self {
        Sampler {
            rng: StdRng::seed_from_u64(params.seed),
            temperature: params.temperature,
            top_k: params.top_k,
            top_p: params.top_p,
        }
    }

    /// Picks a token. Logits of `-inf` (masked by a grammar) are never chosen while any other is
    /// finite.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let argmax = || {
            logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i as u32)
        };
        if self.temperature <= 0.0 {
            return argmax();
        }
        let inv_t = (1.0 / self.temperature) as f32;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return argmax();
        }
        // Unnormalised probabilities of the tokens that can be drawn at all.
        let mut cands: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as u32, ((l - max) * inv_t).exp()))
            .collect();
        let total: f32 = cands.iter().map(|c| c.1).sum();
        let by_prob = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        // Keep the k most likely (top-k), then the smallest head whose mass reaches p (top-p).
        let mut keep = self.top_k.unwrap_or(cands.len()).clamp(1, cands.len());
        if let Some(p) = self.top_p.filter(|p| *p < 1.0) {
            let target = (p as f32) * total;
            let mut head = 64.min(keep);
            loop {
                if head < cands.len() {
                    cands.select_nth_unstable_by(head - 1, by_prob);
                }
                cands[..head].sort_unstable_by(by_prob);
                let mut mass = 0.0;
                let reached = cands[..head].iter().position(|c| {
                    mass += c.1;
                    mass >= target
                });
                if let Some(i) = reached {
                    keep = keep.min(i + 1);
                    break;
                }
                if head >= keep {
                    break;
                }
                head = (head * 8).min(keep);
            }
        } else if keep < cands.len() {
            cands.select_nth_unstable_by(keep - 1, by_prob);
        }
        let kept = &cands[..keep];
        let mass: f32 = kept.iter().map(|c| c.1).sum();
        let mut r = self.rng.random::<f32>() * mass;
        for c in kept {
            r -= c.1;
            if r <= 0.0 {
                return c.0;
            }
        }
        kept.last().map_or_else(argmax, |c| c.0)
    }
}

/// Divides positive logits (multiplies negative ones) of recently generated tokens by `penalty`,
/// as the CTRL paper and llama.cpp do.
pub fn apply_repeat_penalty(logits: &mut [f32], penalty: f32, recent: &[u32]) {
    let mut seen = std::collections::HashSet::new();
    for &t in recent {
        if !seen.insert(t) {
            continue;
        }
        if let Some(l) = logits.get_mut(t as usize) {
            *l = if *l >= 0.0 {
                *l / penalty
            } else {
                *l * penalty
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f64, top_k: Option<usize>, top_p: Option<f64>) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            seed: 7,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_takes_the_largest_and_masks_hold() {
        let logits = [0.1, 3.0, f32::NEG_INFINITY, 2.9];
        assert_eq!(Sampler::new(&params(0.0, None, None)).sample(&logits), 1);
        let mut s = Sampler::new(&params(1.0, None, None));
        for _ in 0..200 {
            assert_ne!(s.sample(&logits), 2, "a masked token was drawn");
        }
    }

    #[test]
    fn top_p_keeps_the_smallest_head_reaching_p() {
        // Probabilities ~ 0.64, 0.24, 0.09, 0.03: top-p 0.8 keeps the first two only.
        let logits: Vec<f32> = [0.64f32, 0.24, 0.09, 0.03].iter().map(|p| p.ln()).collect();
        let mut s = Sampler::new(&params(1.0, None, Some(0.8)));
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            counts[s.sample(&logits) as usize] += 1;
        }
        assert_eq!(counts[2] + counts[3], 0, "{counts:?}");
        let share = counts[0] as f64 / 4000.0;
        assert!((share - 0.64 / 0.88).abs() < 0.03, "{counts:?}");
        // Over a long vocabulary (past the first 64 looked at), the same rule.
        let mut long = vec![0f32; 5000];
        long[4321] = 2.0;
        let mut s = Sampler::new(&params(1.0, None, Some(0.5)));
        let drawn: std::collections::HashSet<u32> = (0..300).map(|_| s.sample(&long)).collect();
        assert!(
            drawn.len() > 100,
            "a flat tail after one bump is mostly kept"
        );
    }

    #[test]
    fn top_k_and_seed() {
        let logits = [1.0f32, 0.9, 0.8, 0.7, 0.6];
        let mut s = Sampler::new(&params(1.0, Some(2), None));
        for _ in 0..200 {
            assert!(s.sample(&logits) < 2);
        }
        let draw = |seed| {
            let mut p = params(1.0, None, Some(0.95));
            p.seed = seed;
            let mut s = Sampler::new(&p);
            (0..20).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn repeat_penalty_shrinks_recent_tokens_once() {
        let mut l = [2.0f32, -2.0, 1.0];
        apply_repeat_penalty(&mut l, 2.0, &[0, 1, 0]);
        assert_eq!(l, [1.0, -4.0, 1.0]);
    }
}
