//! What CLaDMoP reads from a protocol, and how a batch of protocols becomes padded tensors:
//! criteria items (embedded by the frozen text encoder, through its cache), SMILES tokens per drug,
//! ICD-10 codes as hashed prefixes (chapter letter, category, subcategory, full code).

use std::collections::HashMap;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use regex::Regex;
use serde::{Deserialize, Serialize};
use trialforge_trial::Protocol;

use crate::{ProtocolEmbedder, Result};

/// Fingerprint bucket 0 is padding, and stands for "no structure known" on its own.
pub const PAD: u32 = 0;
/// ICD prefix levels hashed per code.
pub const ICD_LEVELS: usize = 4;

/// The usual SMILES regex (Schwaller et al., Molecular Transformer): bracket atoms, two-letter
/// halogens, aromatic atoms, bonds, branches, ring closures.
fn smiles_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(\[[^\]]+\]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|/|:|~|@|\?|>|\*|\$|%[0-9]{2}|[0-9])")
            .expect("static regex")
    })
}

pub fn smiles_tokens(smiles: &str) -> Vec<&str> {
    smiles_re().find_iter(smiles).map(|m| m.as_str()).collect()
}

/// A learned-fingerprint input: the hashed buckets of every run of 1 to `max_n` consecutive SMILES
/// tokens (atoms, bonds, branches, ring closures), each bucket once. Like an extended-connectivity
/// fingerprint, shared substructures share buckets; unlike one, the bucket embeddings are learned.
pub fn smiles_fingerprint(smiles: &str, max_n: usize, buckets: usize) -> Vec<u32> {
    let tokens = smiles_tokens(smiles);
    let mut out: Vec<u32> = Vec::new();
    for n in 1..=max_n {
        for w in tokens.windows(n) {
            let h = fnv1a(&format!("{n}:{}", w.join(" ")));
            // Bucket 0 is padding.
            out.push(1 + (h % (buckets as u64 - 1)) as u32);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// FNV-1a: a hash that stays the same across platforms and releases (std's does not promise to).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// The hashed buckets of one ICD-10 code's prefixes: letter, 3-character category, 4-character
/// characters, the whole code. Codes sharing a prefix share that bucket, so the embedding learns
/// the hierarchy without a table of it.
pub fn icd_buckets(code: &str, buckets: usize) -> [u32; ICD_LEVELS] {
    let c: String = code
        .trim()
        .to_ascii_uppercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    let undotted: String = c.chars().filter(|c| *c != '.').collect();
    let prefix = |n: usize| undotted.chars().take(n).collect::<String>();
    let parts = [prefix(1), prefix(3), prefix(4), undotted.clone()];
    let mut out = [0u32; ICD_LEVELS];
    for (level, p) in parts.iter().enumerate() {
        out[level] = (fnv1a(&format!("{level}:{p}")) % buckets as u64) as u32;
    }
    out
}

/// Limits on what one protocol contributes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FeatureLimits {
    /// Items taken from each of inclusion and exclusion, in their order.
    pub items_per_section: usize,
    /// Characters of an item given to the encoder.
    pub item_chars: usize,
    pub drugs: usize,
    /// Longest run of SMILES tokens hashed into a fingerprint bucket.
    pub smiles_ngram: usize,
    pub smiles_buckets: usize,
    pub icd_codes: usize,
    pub icd_buckets: usize,
}

impl Default for FeatureLimits {
    fn default() -> Self {
        FeatureLimits {
            // Encoding items is the cold-start cost (about 7k tokens/s with MiniLM on 2 cores):
            // 12 items of up to 120 characters keep it to minutes.
            items_per_section: 6,
            item_chars: 120,
            drugs: 6,
            smiles_ngram: 4,
            smiles_buckets: 2048,
            icd_codes: 8,
            icd_buckets: 1024,
        }
    }
}

/// The criteria items of a protocol as encoder texts: (section, text), section 0 inclusion.
pub fn criteria_items(p: &Protocol, limits: &FeatureLimits) -> Vec<(u32, String)> {
    let clip = |s: &str| -> String {
        match s.char_indices().nth(limits.item_chars) {
            Some((i, _)) => s[..i].to_string(),
            None => s.to_string(),
        }
    };
    let mut out = Vec::new();
    for (section, items) in [(0u32, &p.criteria.inclusion), (1, &p.criteria.exclusion)] {
        for item in items
            .iter()
            .filter(|i| !i.trim().is_empty())
            .take(limits.items_per_section)
        {
            out.push((section, clip(item.trim())));
        }
    }
    out
}

/// One protocol, featurised.
#[derive(Clone, Debug)]
pub struct TrialInput {
    /// (section, embedding) per criteria item; at least one (a zero vector stands in for none).
    pub items: Vec<(u32, Vec<f32>)>,
    /// Fingerprint buckets per drug; at least one (bucket 0 alone for none).
    pub molecules: Vec<Vec<u32>>,
    /// Hashed prefixes per ICD code; at least one (bucket 0 for none).
    pub codes: Vec<[u32; ICD_LEVELS]>,
}

/// Featurises protocols; item texts go through the embedder's cache in one call.
pub fn featurise(
    protocols: &[&Protocol],
    embedder: &dyn ProtocolEmbedder,
    limits: &FeatureLimits,
) -> Result<Vec<TrialInput>> {
    let items: Vec<Vec<(u32, String)>> = protocols
        .iter()
        .map(|p| criteria_items(p, limits))
        .collect();
    let texts: Vec<&str> = items
        .iter()
        .flat_map(|v| v.iter().map(|(_, t)| t.as_str()))
        .collect();
    let mut vectors = embedder.embed_texts(&texts)?.into_iter();
    let dim = embedder.dim();
    let mut out = Vec::with_capacity(protocols.len());
    for (p, its) in protocols.iter().zip(items) {
        let mut embedded: Vec<(u32, Vec<f32>)> = its
            .into_iter()
            .map(|(s, _)| (s, vectors.next().unwrap_or_else(|| vec![0.0; dim])))
            .collect();
        if embedded.is_empty() {
            embedded.push((0, vec![0.0; dim]));
        }
        let mut molecules: Vec<Vec<u32>> = p
            .drugs
            .iter()
            .filter_map(|d| d.smiles.as_deref())
            .map(|s| smiles_fingerprint(s, limits.smiles_ngram, limits.smiles_buckets))
            .filter(|ids| !ids.is_empty())
            .take(limits.drugs)
            .collect();
        if molecules.is_empty() {
            molecules.push(vec![PAD]);
        }
        let mut codes: Vec<[u32; ICD_LEVELS]> = p
            .icd_codes
            .iter()
            .flatten()
            .filter(|c| !c.trim().is_empty())
            .take(limits.icd_codes)
            .map(|c| icd_buckets(c, limits.icd_buckets))
            .collect();
        if codes.is_empty() {
            codes.push([0; ICD_LEVELS]);
        }
        out.push(TrialInput {
            items: embedded,
            molecules,
            codes,
        });
    }
    Ok(out)
}

/// A padded batch. `drugs_from[i]` says which trial's molecules row i uses, so pair matching can
/// give one trial's criteria another trial's drugs without copying anything. Each distinct molecule
/// of the batch is encoded once (trials share drugs, and pair matching repeats them).
pub struct Batch {
    /// (b, n_items, dim), (b, n_items) section ids, (b, n_items) 0/1.
    pub items: Tensor,
    pub sections: Tensor,
    pub item_mask: Tensor,
    /// (n_molecules, fingerprint buckets): each distinct molecule's `dense_fingerprints`.
    pub fingerprints: Tensor,
    /// (b * n_drugs) index into the distinct molecules; (b, n_drugs) 0/1.
    pub drug_index: Tensor,
    pub drug_mask: Tensor,
    /// (b, n_codes, ICD_LEVELS) ids; (b, n_codes) 0/1.
    pub codes: Tensor,
    pub code_mask: Tensor,
    pub size: usize,
    pub n_items: usize,
    pub n_drugs: usize,
    pub n_codes: usize,
}

/// (molecules, buckets): each molecule's buckets weighted 1/count, so that multiplying by the bucket
/// embeddings averages them (one dense product instead of a gather of every bucket's row).
pub fn dense_fingerprints(molecules: &[&[u32]], buckets: usize) -> Result<Tensor> {
    let mut dense = vec![0f32; molecules.len() * buckets];
    for (k, m) in molecules.iter().enumerate() {
        let w = 1.0 / m.len().max(1) as f32;
        for &bucket in m.iter() {
            dense[k * buckets + (bucket as usize).min(buckets - 1)] += w;
        }
    }
    Ok(Tensor::from_vec(
        dense,
        (molecules.len(), buckets),
        &Device::Cpu,
    )?)
}

/// Pads `rows` (criteria and codes from `inputs[rows[i]]`, drugs from `inputs[drugs_from[i]]`).
pub fn batch(
    inputs: &[TrialInput],
    rows: &[usize],
    drugs_from: &[usize],
    buckets: usize,
) -> Result<Batch> {
    let dev = &Device::Cpu;
    let b = rows.len();
    let dim = inputs[rows[0]].items[0].1.len();
    let n_items = rows
        .iter()
        .map(|&r| inputs[r].items.len())
        .max()
        .unwrap_or(1);
    let n_codes = rows
        .iter()
        .map(|&r| inputs[r].codes.len())
        .max()
        .unwrap_or(1);
    let n_drugs = drugs_from
        .iter()
        .map(|&r| inputs[r].molecules.len())
        .max()
        .unwrap_or(1);

    let mut items = vec![0f32; b * n_items * dim];
    let mut sections = vec![0u32; b * n_items];
    let mut item_mask = vec![0f32; b * n_items];
    let mut codes = vec![0u32; b * n_codes * ICD_LEVELS];
    let mut code_mask = vec![0f32; b * n_codes];
    for (i, &r) in rows.iter().enumerate() {
        for (j, (s, v)) in inputs[r].items.iter().enumerate() {
            let at = (i * n_items + j) * dim;
            items[at..at + dim].copy_from_slice(v);
            sections[i * n_items + j] = *s;
            item_mask[i * n_items + j] = 1.0;
        }
        for (j, c) in inputs[r].codes.iter().enumerate() {
            let at = (i * n_codes + j) * ICD_LEVELS;
            codes[at..at + ICD_LEVELS].copy_from_slice(c);
            code_mask[i * n_codes + j] = 1.0;
        }
    }
    let mut distinct: HashMap<&[u32], u32> = HashMap::new();
    let mut molecules: Vec<&[u32]> = Vec::new();
    let mut drug_index = vec![0u32; b * n_drugs];
    let mut drug_mask = vec![0f32; b * n_drugs];
    for (i, &r) in drugs_from.iter().enumerate() {
        for (j, m) in inputs[r].molecules.iter().enumerate() {
            let id = *distinct.entry(m.as_slice()).or_insert_with(|| {
                molecules.push(m);
                molecules.len() as u32 - 1
            });
            drug_index[i * n_drugs + j] = id;
            drug_mask[i * n_drugs + j] = 1.0;
        }
    }
    Ok(Batch {
        items: Tensor::from_vec(items, (b, n_items, dim), dev)?,
        sections: Tensor::from_vec(sections, (b, n_items), dev)?,
        item_mask: Tensor::from_vec(item_mask, (b, n_items), dev)?,
        fingerprints: dense_fingerprints(&molecules, buckets)?,
        drug_index: Tensor::from_vec(drug_index, b * n_drugs, dev)?,
        drug_mask: Tensor::from_vec(drug_mask, (b, n_drugs), dev)?,
        codes: Tensor::from_vec(codes, (b, n_codes, ICD_LEVELS), dev)?,
        code_mask: Tensor::from_vec(code_mask, (b, n_codes), dev)?,
        size: b,
        n_items,
        n_drugs,
        n_codes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smiles_tokeniser_keeps_bracket_atoms_and_fingerprints_share_substructures() {
        assert_eq!(
            smiles_tokens("C[C@@H](Cl)c1ccccc1Br"),
            vec!["C", "[C@@H]", "(", "Cl", ")", "c", "1", "c", "c", "c", "c", "c", "1", "Br"]
        );
        let ethanol = smiles_fingerprint("CCO", 3, 1024);
        let ethylamine = smiles_fingerprint("CCN", 3, 1024);
        // C, O, CC, CO, CCO: five buckets; C and CC are shared with ethylamine.
        assert_eq!(ethanol.len(), 5);
        let shared = ethanol.iter().filter(|b| ethylamine.contains(b)).count();
        assert_eq!(shared, 2);
        assert!(ethanol.iter().all(|&b| b != PAD && b < 1024));
    }

    #[test]
    fn icd_codes_share_buckets_by_prefix() {
        let a = icd_buckets("D02.20", 4096);
        let b = icd_buckets("D02.21", 4096);
        let c = icd_buckets("C34.90", 4096);
        assert_eq!(a[..3], b[..3], "same letter, category and subcategory");
        assert_ne!(a[3], b[3]);
        assert_ne!(a[1], c[1]);
        assert_eq!(icd_buckets("d0220", 4096), a, "case and dots do not matter");
    }
}
