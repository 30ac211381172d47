//! `chat`: one question to the local LLM.

use clap::Args;
use trialforge_core::bench::{chat as run_chat, ChatRequest};

use super::Ctx;
use crate::args::LlmArgs;

#[derive(Args)]
pub struct ChatArgs {
    /// The question.
    pub prompt: String,
    /// An optional system message.
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub llm: LlmArgs,
}

pub fn chat(ctx: &Ctx, a: ChatArgs) -> anyhow::Result<()> {
    let req = ChatRequest {
        prompt: a.prompt,
        system: a.system,
        llm: a.llm.model.choice(),
        sampling: a.llm.sampling(),
    };
    let c = run_chat(&ctx.env, &req, &ctx.progress)?;
    ctx.emit(&c, || crate::format::completion(&c))
}
