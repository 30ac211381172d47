//! `models fetch`.

use super::Ctx;

pub fn fetch(ctx: &Ctx) -> anyhow::Result<()> {
    let rows = ctx.env.ensure_models(&ctx.progress)?;
    ctx.emit(&rows, || {
        rows.iter()
            .map(|r| format!("{:<24} {:<9} {} ({})", r.name, r.outcome, r.path, r.package))
            .collect::<Vec<_>>()
            .join("\n")
    })
}
