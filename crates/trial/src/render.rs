//! The one documented text rendering of a protocol, shared by encoders, retrieval and prompts.
//!
//! It takes a [`Protocol`], never a [`crate::Trial`], so status and stop reason cannot appear in it.
//! Layout (empty parts are left out):
//!
//! ```text
//! Title: <title>
//! Phase: Phase 1 / Phase 2
//! Conditions: <c1>; <c2>
//! Drugs: <d1>; <d2>
//! Inclusion criteria:
//! - <item>
//! Exclusion criteria:
//! - <item>
//! ```

use std::fmt::Write;

use crate::record::Protocol;

/// Renders a protocol as plain text (see the module docs for the layout).
pub fn protocol_text(p: &Protocol) -> String {
    let mut s = String::new();
    if !p.title.is_empty() {
        let _ = writeln!(s, "Title: {}", p.title);
    }
    if !p.phases.is_empty() {
        let phases: Vec<String> = p.phases.iter().map(ToString::to_string).collect();
        let _ = writeln!(s, "Phase: {}", phases.join(" / "));
    }
    if !p.conditions.is_empty() {
        let _ = writeln!(s, "Conditions: {}", p.conditions.join("; "));
    }
    if !p.drugs.is_empty() {
        let names: Vec<&str> = p.drugs.iter().map(|d| d.name.as_str()).collect();
        let _ = writeln!(s, "Drugs: {}", names.join("; "));
    }
    for (heading, items) in [
        ("Inclusion criteria:", &p.criteria.inclusion),
        ("Exclusion criteria:", &p.criteria.exclusion),
    ] {
        if !items.is_empty() {
            let _ = writeln!(s, "{heading}");
            for item in items {
                let _ = writeln!(s, "- {item}");
            }
        }
    }
    s.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::*;

    #[test]
    fn rendering_has_fixed_layout_and_ignores_post_hoc_fields() {
        let mut t = Trial {
            id: "NCT00000001".into(),
            source: Source::Ctgov,
            protocol: Protocol {
                title: "A study".into(),
                phases: vec![Phase::Phase1, Phase::Phase2],
                conditions: vec!["asthma".into()],
                drugs: vec![Drug {
                    name: "dupilumab".into(),
                    smiles: None,
                }],
                criteria: Criteria::from_raw(
                    "Inclusion Criteria:\n- adults\nExclusion Criteria:\n- smokers",
                ),
                ..Default::default()
            },
            label: Some(Label::Success),
            split: Split::Train,
            post_hoc: PostHoc {
                status: Some("completed".into()),
                why_stopped: None,
            },
        };
        let before = protocol_text(&t.protocol);
        assert_eq!(
            before,
            "Title: A study\nPhase: Phase 1 / Phase 2\nConditions: asthma\nDrugs: dupilumab\nInclusion criteria:\n- adults\nExclusion criteria:\n- smokers"
        );
        t.post_hoc = PostHoc {
            status: Some("terminated".into()),
            why_stopped: Some("lack of efficacy".into()),
        };
        t.label = Some(Label::Failure);
        assert_eq!(protocol_text(&t.protocol), before);
    }
}
