//! The two prompts of the method: reasons, then the new trial. Examples are rendered with the
//! documented protocol rendering (no status, no stop reason, no label words).

use trialforge_llm::ChatMessage;
use trialforge_trial::render::protocol_text;
use trialforge_trial::{Label, Protocol};

use crate::plan::Cell;

/// An example trial as shown to the LLM, cut at `max_chars` on a line boundary where possible.
pub fn render_example(p: &Protocol, max_chars: usize) -> String {
    let text = protocol_text(p);
    if text.chars().count() <= max_chars {
        return text;
    }
    let cut: String = text.chars().take(max_chars).collect();
    match cut.rfind('\n') {
        Some(i) if i > max_chars / 2 => format!("{}\n...", &cut[..i]),
        _ => format!("{cut}..."),
    }
}

fn outcome_words(label: Label) -> (&'static str, &'static str) {
    match label {
        Label::Success => ("successful", "succeed"),
        Label::Failure => ("failed", "fail"),
    }
}

fn examples_block(cell: &Cell, examples: &[String]) -> String {
    let (adj, _) = outcome_words(cell.label);
    examples
        .iter()
        .enumerate()
        .map(|(i, e)| format!("Example {} ({adj} clinical trial):\n{e}", i + 1))
        .collect::<Vec<_>>()
        .join("\n\n")
}

const SYSTEM: &str = "You are an expert in clinical trial design. Be specific and concise.";

pub fn reasoning_messages(cell: &Cell, examples: &[String], n_reasons: usize) -> Vec<ChatMessage> {
    let (adj, verb) = outcome_words(cell.label);
    vec![
        ChatMessage::system(SYSTEM),
        ChatMessage::user(format!(
            "Here are {adj} clinical trials related to {drug}.\n\n{block}\n\nGive exactly {n_reasons} short, numbered reasons why a {phase} clinical trial of {drug} like these would {verb}. One reason per line.",
            drug = cell.drug,
            block = examples_block(cell, examples),
            phase = cell.phase,
        )),
    ]
}

pub fn generation_messages(
    cell: &Cell,
    examples: &[String],
    reasons: &[String],
) -> Vec<ChatMessage> {
    let (adj, verb) = outcome_words(cell.label);
    let reasons: String = reasons
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{}. {r}\n", i + 1))
        .collect();
    vec![
        ChatMessage::system(SYSTEM),
        ChatMessage::user(format!(
            "{block}\n\nReasons why such a trial would {verb}:\n{reasons}\nWrite a new, {adj} {phase} clinical trial of {drug} that follows the style of the examples and reflects the reasons. Do not copy the examples. The drugs must include {drug}. Use no names of people, no contact details and no registry identifiers. Answer with one JSON object with the fields title, phases, conditions, drugs, inclusion_criteria, exclusion_criteria, design, primary_outcome and rationale.",
            block = examples_block(cell, examples),
            drug = cell.drug,
            phase = cell.phase,
        )),
    ]
}

/// Numbered or bulleted lines of an answer, up to `n`.
pub fn parse_reasons(text: &str, n: usize) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter_map(|l| {
            let body = l.trim_start_matches(|c: char| {
                c.is_ascii_digit() || matches!(c, '.' | ')' | '-' | '*' | '•')
            });
            (body.len() < l.len() || l.is_empty()).then(|| body.trim().to_string())
        })
        .filter(|r| r.len() >= 5)
        .take(n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_parsed_from_numbered_lines() {
        let text = "Here are reasons:\n1. Good safety profile.\n2) Clear endpoint\n- Strong rationale\nThanks";
        assert_eq!(
            parse_reasons(text, 5),
            vec!["Good safety profile.", "Clear endpoint", "Strong rationale"]
        );
        assert_eq!(parse_reasons(text, 1).len(), 1);
    }

    #[test]
    fn long_examples_are_cut_on_a_line() {
        let p = Protocol {
            title: "T".repeat(50),
            criteria: trialforge_trial::Criteria::from_raw(&format!(
                "Inclusion Criteria:\n- {}\n- {}",
                "a".repeat(40),
                "b".repeat(40)
            )),
            ..Default::default()
        };
        let r = render_example(&p, 110);
        assert!(r.ends_with("\n...") && r.chars().count() <= 115, "{r}");
    }
}
