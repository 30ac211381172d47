//! Splitting free-text eligibility criteria into inclusion and exclusion items.
//!
//! Handles TOP's layout (indented `-` bullets separated by blank lines, wrapped lines indented deeper)
//! and ClinicalTrials.gov API v2 text (`*` bullets, `1.` numbering, "Key Inclusion Criteria:").
//! Text before any heading counts as inclusion. Sub-headings such as "DISEASE CHARACTERISTICS:" are
//! dropped; wrapped lines are joined to their item.

use std::sync::OnceLock;

use regex::Regex;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Inclusion,
    Exclusion,
}

fn heading_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?i)^(?:[a-z][\w-]*\s+){0,3}?(inclusion|exclusion)(?:\s+criteria)?(?:\s*\(.*?\))?\s*(?::\s*(.*)|$)",
        )
        .expect("static regex")
    })
}

fn bullet_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^(?:[-*•·–]|\d{1,2}[.)]|\(\d{1,2}\)|\(?[a-z][.)])\s+(.*)$")
            .expect("static regex")
    })
}

/// "inclusion criteria:" / "exclusion criteria:" anywhere in a line.
fn inline_heading_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"(?i)\b(?:inclusion|exclusion) criteria:").expect("static regex"))
}

/// Moves headings that sit in the middle of a line onto their own line ("... NSAIDs. -- Exclusion
/// criteria: pregnancy", or flattened text "... kg/m^2 Exclusion Criteria: - Treatment ..."). A
/// heading stays put when what precedes it is a short title ("Key Inclusion Criteria:").
fn break_inline_headings(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.lines() {
        let mut start = 0;
        for m in inline_heading_re().find_iter(line) {
            let before = line[start..m.start()]
                .trim_end()
                .trim_end_matches('-')
                .trim_end();
            let sentence_end = before.ends_with(['.', ';', ')']);
            if !before.trim().is_empty() && (sentence_end || before.split_whitespace().count() > 3)
            {
                out.push_str(before);
                out.push('\n');
                start = m.start();
            }
        }
        out.push_str(&line[start..]);
        out.push('\n');
    }
    out
}

/// Splits criteria text into (inclusion items, exclusion items).
pub fn split_items(text: &str) -> (Vec<String>, Vec<String>) {
    let text = break_inline_headings(text);
    let mut inclusion = Vec::new();
    let mut exclusion = Vec::new();
    let mut section = Section::Inclusion;
    let mut current: Option<String> = None;
    let mut prev_blank = true;

    let mut flush = |current: &mut Option<String>, section: Section| {
        if let Some(item) = current.take() {
            let item = item.trim().to_string();
            if !item.is_empty() {
                match section {
                    Section::Inclusion => inclusion.push(item),
                    Section::Exclusion => exclusion.push(item),
                }
            }
        }
    };

    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() {
            flush(&mut current, section);
            prev_blank = true;
            continue;
        }
        // Some texts bullet their headings ("-  Inclusion Criteria:").
        let unbulleted = bullet_re()
            .captures(line)
            .map_or(line, |c| c.get(1).map_or(line, |m| m.as_str()));
        let heading = heading_re().captures(line).or_else(|| {
            // ...but "- See inclusion criteria" is an item: a bulleted heading ends in a colon.
            heading_re().captures(unbulleted).filter(|c| {
                unbulleted.ends_with(':') && c.get(2).is_some_and(|m| m.as_str().trim().is_empty())
            })
        });
        if let Some(caps) = heading {
            // A heading is short; a long line that starts "Inclusion ..." is an item.
            let rest = caps.get(2).map_or("", |m| m.as_str()).trim();
            if caps[0].len() - rest.len() <= 60 {
                flush(&mut current, section);
                section = if caps[1].eq_ignore_ascii_case("inclusion") {
                    Section::Inclusion
                } else {
                    Section::Exclusion
                };
                let rest = bullet_re()
                    .captures(rest)
                    .map_or(rest, |c| c.get(1).map_or(rest, |m| m.as_str()));
                if !rest.is_empty() {
                    current = Some(rest.to_string());
                }
                prev_blank = false;
                continue;
            }
        }
        let continuation = if prev_blank { None } else { current.as_mut() };
        if let Some(caps) = bullet_re().captures(line) {
            flush(&mut current, section);
            current = Some(caps[1].to_string());
        } else if let Some(item) = continuation {
            item.push(' ');
            item.push_str(line);
        } else if line.ends_with(':') && line.len() <= 60 {
            flush(&mut current, section); // a sub-heading: not an item itself
        } else {
            flush(&mut current, section);
            current = Some(line.to_string());
        }
        prev_blank = false;
    }
    flush(&mut current, section);
    (inclusion, exclusion)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_layout_with_wrapped_lines() {
        let text = "\n        Inclusion Criteria:\n\n          -  women 18-70 years of age;\n\n          -  HER2 overexpression;\n\n        Exclusion Criteria:\n\n          -  prior treatment with Herceptin;\n\n          -  history of another malignancy (except basal cell skin cancer and cancer in situ of the\n             uterine cervix) within 5 years of study.\n      ";
        let (inc, exc) = split_items(text);
        assert_eq!(
            inc,
            vec!["women 18-70 years of age;", "HER2 overexpression;"]
        );
        assert_eq!(
            exc,
            vec![
                "prior treatment with Herceptin;",
                "history of another malignancy (except basal cell skin cancer and cancer in situ of the uterine cervix) within 5 years of study."
            ]
        );
    }

    #[test]
    fn v2_layout_numbered_with_key_headings() {
        let text = "Key Inclusion Criteria:\n\n1. Adults 18 to 64 years\n2. EASI score ≥16\n\nKey Exclusion Criteria:\n\n* Prior dupilumab\n* Pregnancy";
        let (inc, exc) = split_items(text);
        assert_eq!(inc, vec!["Adults 18 to 64 years", "EASI score ≥16"]);
        assert_eq!(exc, vec!["Prior dupilumab", "Pregnancy"]);
    }

    #[test]
    fn sub_headings_are_dropped_and_inline_headings_kept() {
        let (inc, exc) =
            split_items("Inclusion criteria: AS, NSAIDs. -- Exclusion criteria:\n pregnancy");
        assert_eq!(
            (inc, exc),
            (
                vec!["AS, NSAIDs.".to_string()],
                vec!["pregnancy".to_string()]
            )
        );
        let (inc, exc) = split_items("-  Inclusion Criteria:\n   1. x\n-  Exclusion Criteria:\n   1. y\n   - See inclusion criteria");
        assert_eq!(
            (inc, exc),
            (
                vec!["x".to_string()],
                vec!["y".to_string(), "See inclusion criteria".to_string()]
            )
        );
        let (inc, exc) = split_items(
            "Inclusion Criteria: - adults with T2D aged 18 or more Exclusion Criteria: - pregnancy",
        );
        assert_eq!(
            (inc, exc),
            (
                vec!["adults with T2D aged 18 or more".to_string()],
                vec!["pregnancy".to_string()]
            )
        );
        let (inc, exc) = split_items("Part A Inclusion:\n- x\nPart A Exclusion:\n- y");
        assert_eq!((inc, exc), (vec!["x".to_string()], vec!["y".to_string()]));
        let text = "DISEASE CHARACTERISTICS:\n\n- Histologically confirmed NSCLC\n\nPATIENT CHARACTERISTICS:\n\n- ECOG 0-1\n\nExclusion criteria: active infection";
        let (inc, exc) = split_items(text);
        assert_eq!(inc, vec!["Histologically confirmed NSCLC", "ECOG 0-1"]);
        assert_eq!(exc, vec!["active infection"]);
    }

    #[test]
    fn no_headings_means_inclusion() {
        let (inc, exc) = split_items("Healthy volunteers\n\nAge 18-45");
        assert_eq!(inc, vec!["Healthy volunteers", "Age 18-45"]);
        assert!(exc.is_empty());
    }
}
