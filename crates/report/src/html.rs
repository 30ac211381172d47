//! One self-contained HTML page: text, tables and figures (inline SVG: no network, no files beside
//! it needed to view it), plus every figure again as a PNG file.

use std::fmt::Write as _;
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

impl Page {
    /// The whole page as one string.
    pub fn render(&self) -> Result<String> {
        let mut h = String::new();
        let w = |h: &mut String, s: &str| h.push_str(s);
        w(
            &mut h,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        );
        let _ = writeln!(h, "<title>{}</title>", escape(&self.title));
        let _ = writeln!(h, "<style>{STYLE}</style>\n</head>\n<body>");
        let _ = writeln!(h, "<h1>{}</h1>", escape(&self.title));
        for p in &self.intro {
            let _ = writeln!(h, "<p>{}</p>", escape(p));
        }
        w(&mut h, "<nav>");
        for s in &self.sections {
            let _ = write!(
                h,
                "<a href=\"#{}\">{}</a>",
                escape(&s.id),
                escape(&s.heading)
            );
        }
        w(&mut h, "</nav>\n");
        for s in &self.sections {
            let _ = writeln!(
                h,
                "<section id=\"{}\">\n<h2>{}</h2>",
                escape(&s.id),
                escape(&s.heading)
            );
            for p in &s.paragraphs {
                let _ = writeln!(h, "<p>{}</p>", escape(p));
            }
            for t in &s.tables {
                let _ = writeln!(h, "<table>\n<caption>{}</caption>", escape(&t.caption));
                w(&mut h, "<tr>");
                for c in &t.header {
                    let _ = write!(h, "<th>{}</th>", escape(c));
                }
                w(&mut h, "</tr>\n");
                for r in &t.rows {
                    w(&mut h, "<tr>");
                    for c in r {
                        let _ = write!(h, "<td>{}</td>", escape(c));
                    }
                    w(&mut h, "</tr>\n");
                }
                w(&mut h, "</table>\n");
            }
            for c in &s.cards {
                let _ = writeln!(
                    h,
                    "<article class=\"card\">\n<h3>{}</h3>\n<dl>",
                    escape(&c.heading)
                );
                for (label, value) in &c.rows {
                    let _ = write!(h, "<dt>{}</dt><dd>", escape(label));
                    match value {
                        CardValue::Text(t) => h.push_str(&escape(t)),
                        CardValue::Pre(t) => {
                            let _ = write!(h, "<pre>{}</pre>", escape(t));
                        }
                        CardValue::Links(links) => {
                            let parts: Vec<String> = links
                                .iter()
                                .map(|(text, url)| {
                                    if url.starts_with("https://") {
                                        format!("<a href=\"{}\">{}</a>", escape(url), escape(text))
                                    } else {
                                        escape(text)
                                    }
                                })
                                .collect();
                            h.push_str(&parts.join(", "));
                        }
                    }
                    h.push_str("</dd>\n");
                }
                w(&mut h, "</dl>\n</article>\n");
            }
            for f in &s.figures {
                let _ = writeln!(h, "<figure id=\"fig-{}\">", escape(&f.name));
                h.push_str(&f.svg()?);
                let _ = writeln!(
                    h,
                    "\n<figcaption>{} (also figures/{}.png)</figcaption>\n</figure>",
                    escape(&f.title),
                    escape(&f.name)
                );
            }
            w(&mut h, "</section>\n");
        }
        w(&mut h, "</body>\n</html>\n");
        Ok(h)
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
