//! One self-contained HTML page: text, tables and figures (inline SVG: no network, no files beside
//! it needed to view it), plus every figure again as a PNG file.

use std::path::{Path, PathBuf};

use crate::plots::Figure;
use crate::{ReportError, Result};

#[derive(Clone, Debug, Default)]
pub struct Table {
    pub caption: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// One value of a [`Card`].
#[derive(Clone, Debug)]
pub enum CardValue {
    Text(String),
    /// Preformatted text (a trial as rendered, a model's raw output).
    Pre(String),
    /// Links: (text, URL). Only `https://` URLs are written as links; others as text.
    Links(Vec<(String, String)>),
}

/// A readable record: a heading and labelled values (the gallery's trials and attempts).
#[derive(Clone, Debug, Default)]
pub struct Card {
    pub heading: String,
    pub rows: Vec<(String, CardValue)>,
}

#[derive(Clone, Debug, Default)]
pub struct Section {
    /// Anchor of the section (`#id`).
    pub id: String,
    pub heading: String,
    pub paragraphs: Vec<String>,
    pub tables: Vec<Table>,
    pub figures: Vec<Figure>,
    pub cards: Vec<Card>,
}

#[derive(Clone, Debug, Default)]
pub struct Page {
    pub title: String,
    pub intro: Vec<String>,
    pub sections: Vec<Section>,
}

/// Where [`Page::write`] put things.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Written {
    pub html: PathBuf,
    pub png: Vec<PathBuf>,
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;max-width:62rem;margin:2rem auto;padding:0 1rem;color:#222;line-height:1.45}\
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2.2rem}\
table{border-collapse:collapse;margin:.8rem 0;font-size:.9rem}caption{text-align:left;font-weight:bold;padding:.3rem 0}\
th,td{border:1px solid #bbb;padding:.25rem .55rem;text-align:right}th:first-child,td:first-child{text-align:left}\
th{background:#f0f0f0}figure{margin:1rem 0}figcaption{font-size:.9rem;color:#555}nav a{margin-right:.8rem}\
svg{max-width:100%;height:auto}article.card{border:1px solid #ccc;border-radius:4px;padding:.2rem .9rem;margin:1rem 0}\
article.card h3{font-size:1.05rem}dt{font-weight:bold;margin-top:.4rem}dd{margin-left:1rem}\
pre{white-space:pre-wrap;font-size:.82rem;background:#f7f7f7;padding:.4rem;max-height:24rem;overflow:auto}";

/// The page template: the layout, every table, card and figure (the HTML is the template's; the
/// text is the page's, escaped).
const TEMPLATE: &str = include_str!("../templates/report.html");

/// What the template sees of a card row: one of text, pre or links.
#[derive(serde::Serialize)]
struct RowView<'a> {
    label: &'a str,
    text: Option<&'a str>,
    pre: Option<&'a str>,
    links: Option<Vec<LinkView<'a>>>,
}

#[derive(serde::Serialize)]
struct LinkView<'a> {
    text: &'a str,
    url: &'a str,
}

#[derive(serde::Serialize)]
struct FigureView<'a> {
    name: &'a str,
    title: &'a str,
    svg: String,
}

/// A template environment that escapes text as [`escape`] does (minijinja's own HTML escaping
/// also writes `/` as an entity, which made every path and "phase 1/phase 2" unreadable in the
/// source).
pub fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_formatter(|out, state, value| {
        if !value.is_safe() {
            if let Some(s) = value.as_str() {
                return out.write_str(&escape(s)).map_err(minijinja::Error::from);
            }
        }
        minijinja::escape_formatter(out, state, value)
    });
    env
}

impl Page {
    /// The whole page as one string.
    pub fn render(&self) -> Result<String> {
        let mut sections = Vec::new();
        for s in &self.sections {
            let mut figures = Vec::new();
            for f in &s.figures {
                figures.push(FigureView {
                    name: &f.name,
                    title: &f.title,
                    svg: f.svg()?,
                });
            }
            let cards: Vec<serde_json::Value> = s
                .cards
                .iter()
                .map(|c| {
                    let rows: Vec<RowView> = c
                        .rows
                        .iter()
                        .map(|(label, value)| {
                            let mut row = RowView {
                                label,
                                text: None,
                                pre: None,
                                links: None,
                            };
                            match value {
                                CardValue::Text(t) => row.text = Some(t),
                                CardValue::Pre(t) => row.pre = Some(t),
                                CardValue::Links(links) => {
                                    row.links = Some(
                                        links
                                            .iter()
                                            .map(|(text, url)| LinkView { text, url })
                                            .collect(),
                                    )
                                }
                            }
                            row
                        })
                        .collect();
                    serde_json::json!({"heading": c.heading, "rows": rows})
                })
                .collect();
            sections.push(serde_json::json!({
                "id": s.id,
                "heading": s.heading,
                "paragraphs": s.paragraphs,
                "tables": s.tables.iter().map(|t| serde_json::json!({
                    "caption": t.caption, "header": t.header, "rows": t.rows,
                })).collect::<Vec<_>>(),
                "cards": cards,
                "figures": figures,
            }));
        }
        let env = environment();
        let template = env
            .template_from_named_str("report.html", TEMPLATE)
            .map_err(|e| ReportError::Template(e.to_string()))?;
        template
            .render(minijinja::context! {
                title => &self.title,
                intro => &self.intro,
                style => STYLE,
                sections => sections,
            })
            .map_err(|e| ReportError::Template(e.to_string()))
    }

    /// Writes `DIR/report.html` and `DIR/figures/NAME.png` for each figure.
    pub fn write(&self, dir: &Path) -> Result<Written> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ReportError::Io { path, source }
        };
        let figures_dir = dir.join("figures");
        std::fs::create_dir_all(&figures_dir).map_err(io(&figures_dir))?;
        let mut png = Vec::new();
        for f in self.sections.iter().flat_map(|s| &s.figures) {
            let path = figures_dir.join(format!("{}.png", f.name));
            f.write_png(&path)?;
            png.push(path);
        }
        let html = dir.join("report.html");
        let tmp = dir.join("report.html.partial");
        std::fs::write(&tmp, self.render()?).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &html).map_err(io(&html))?;
        Ok(Written { html, png })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plots::Plot;

    #[test]
    fn page_holds_escaped_text_tables_and_inline_figures() {
        let page = Page {
            title: "Report <&>".into(),
            intro: vec!["made by \"tests\"".into()],
            sections: vec![Section {
                id: "fidelity".into(),
                cards: Vec::new(),
                heading: "Fidelity".into(),
                paragraphs: vec!["a < b".into()],
                tables: vec![Table {
                    caption: "Cosine".into(),
                    header: vec!["pairs".into(), "mean".into()],
                    rows: vec![vec!["real-real".into(), "0.384".into()]],
                }],
                figures: vec![Figure {
                    name: "cosine".into(),
                    title: "Cosine of random pairs".into(),
                    plot: Plot::Histogram {
                        x_label: "cosine".into(),
                        series: vec![("real-real".into(), vec![0.1, 0.4])],
                        bins: 5,
                    },
                }],
            }],
        };
        let dir = tempfile::tempdir().unwrap();
        let written = page.write(dir.path()).unwrap();
        let html = std::fs::read_to_string(&written.html).unwrap();
        assert!(html.contains("<title>Report &lt;&amp;&gt;</title>"));
        assert!(html.contains("<p>a &lt; b</p>"));
        assert!(html.contains("<td>real-real</td><td>0.384</td>"));
        assert!(html.contains("<figure id=\"fig-cosine\">\n<svg"));
        assert!(
            !html.contains("http://") || html.matches("http://").all(|_| html.contains("xmlns"))
        );
        assert_eq!(written.png, vec![dir.path().join("figures/cosine.png")]);
        assert!(written.png[0].is_file());
    }
}
