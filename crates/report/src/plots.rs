//! The report's figures, drawn with plotters: each one as SVG (embedded in the HTML page) and as a
//! PNG file. Text uses a bundled DejaVu Sans, registered once, so no system font library is needed.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::{ReportError, Result};

const WIDTH: u32 = 760;
const HEIGHT: u32 = 420;
/// Colour-blind-safe (Okabe-Ito) colours for up to eight series.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
];

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/DejaVuSans.ttf");
        if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_err() {
            tracing::warn!("the bundled font could not be registered; figures will have no text");
        }
    });
}

/// A reliability bin as drawn: (mean predicted probability, observed rate, trials).
pub type ReliabilityPoint = (f64, f64, usize);

/// What a figure shows.
#[derive(Clone, Debug)]
pub enum Plot {
    /// Overlaid histograms, each normalised to shares of its own series so sets of different sizes
    /// compare.
    Histogram {
        x_label: String,
        series: Vec<(String, Vec<f32>)>,
        bins: usize,
    },
    /// Points coloured by group (`groups` hold indices into `points`).
    Scatter {
        points: Vec<[f32; 2]>,
        groups: Vec<(String, Vec<usize>)>,
    },
    /// Reliability diagram: observed success rate against mean predicted probability per bin, one
    /// line per series `(name, [(predicted, observed, trials)])`, over the diagonal of perfect
    /// calibration.
    Reliability {
        series: Vec<(String, Vec<ReliabilityPoint>)>,
    },
    /// Grouped bars: one group per category, one bar per series.
    Bars {
        y_label: String,
        categories: Vec<String>,
        series: Vec<(String, Vec<f64>)>,
    },
}

#[derive(Clone, Debug)]
pub struct Figure {
    /// File stem of the PNG and anchor in the HTML page.
    pub name: String,
    pub title: String,
    pub plot: Plot,
}

fn plot_err(e: impl std::fmt::Display) -> ReportError {
    ReportError::Plot(e.to_string())
}

/// The series legend every figure draws, top right on a translucent white box.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<()> {
    draw_legend_at(chart, SeriesLabelPosition::UpperRight)
}

fn draw_legend_at<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(plot_err)
}

impl Figure {
    pub fn svg(&self) -> Result<String> {
        register_font();
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
            self.draw(&root)?;
            root.present().map_err(plot_err)?;
        }
        Ok(out)
    }

    pub fn write_png(&self, path: &Path) -> Result<()> {
        register_font();
        let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
        self.draw(&root)?;
        root.present().map_err(|e| ReportError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(plot_err)?;
        match &self.plot {
            Plot::Histogram {
                x_label,
                series,
                bins,
            } => self.histogram(root, x_label, series, *bins),
            Plot::Scatter { points, groups } => self.scatter(root, points, groups),
            Plot::Reliability { series } => self.reliability(root, series),
            Plot::Bars {
                y_label,
                categories,
                series,
            } => self.bars(root, y_label, categories, series),
        }
    }

    fn histogram<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        x_label: &str,
        series: &[(String, Vec<f32>)],
        bins: usize,
    ) -> Result<()> {
        let bins = bins.max(1);
        let all = series.iter().flat_map(|(_, v)| v.iter().copied());
        let (lo, hi) = all.fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), x| {
            (l.min(x), h.max(x))
        });
        let (lo, hi) = if lo.is_finite() && hi > lo {
            (lo, hi)
        } else if lo.is_finite() {
            (lo - 0.5, lo + 0.5)
        } else {
            (0.0, 1.0)
        };
        let width = (hi - lo) / bins as f32;
        let shares: Vec<Vec<f32>> = series
            .iter()
            .map(|(_, v)| {
                let mut counts = vec![0f32; bins];
                for &x in v {
                    let b = (((x - lo) / width) as usize).min(bins - 1);
                    counts[b] += 1.0;
                }
                let n = v.len().max(1) as f32;
                counts.iter().map(|c| c / n).collect()
            })
            .collect();
        let top = shares.iter().flatten().copied().fold(0.0f32, f32::max) * 1.35 + 1e-6;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(lo..hi, 0f32..top)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc("share of pairs / trials")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(plot_err)?;
        for (i, ((name, values), share)) in series.iter().zip(&shares).enumerate() {
            let c = colour(i);
            // A step outline per series, so overlapping histograms stay readable.
            let mut steps = vec![(lo, 0.0)];
            for (b, s) in share.iter().enumerate() {
                let x0 = lo + b as f32 * width;
                steps.push((x0, *s));
                steps.push((x0 + width, *s));
            }
            steps.push((hi, 0.0));
            chart
                .draw_series(share.iter().enumerate().map(|(b, s)| {
                    let x0 = lo + b as f32 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width, *s)], c.mix(0.18).filled())
                }))
                .map_err(plot_err)?;
            chart
                .draw_series(LineSeries::new(steps, c.stroke_width(2)))
                .map_err(plot_err)?
                .label(format!("{name} (n = {})", values.len()))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        draw_legend(&mut chart)
    }

    fn scatter<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        points: &[[f32; 2]],
        groups: &[(String, Vec<usize>)],
    ) -> Result<()> {
        let bounds = |k: usize| {
            let (l, h) = points
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), p| {
                    (l.min(p[k]), h.max(p[k]))
                });
            if l.is_finite() && h > l {
                let pad = (h - l) * 0.05;
                (l - pad)..(h + pad)
            } else {
                -1.0..1.0
            }
        };
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(bounds(0), bounds(1))
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(plot_err)?;
        for (i, (name, members)) in groups.iter().enumerate() {
            let c = colour(i);
            // Small groups (a few synthetic trials among thousands of real ones) drawn larger.
            let radius = if members.len() < 200 { 5 } else { 3 };
            chart
                .draw_series(
                    members
                        .iter()
                        .filter_map(|&m| points.get(m))
                        .map(|p| Circle::new((p[0], p[1]), radius, c.mix(0.8).filled())),
                )
                .map_err(plot_err)?
                .label(format!("{name} (n = {})", members.len()))
                .legend(move |(x, y)| Circle::new((x + 6, y), 4, c.filled()));
        }
        draw_legend(&mut chart)
    }

    fn reliability<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        series: &[(String, Vec<ReliabilityPoint>)],
    ) -> Result<()> {
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("mean predicted probability of success")
            .y_desc("observed success rate")
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(plot_err)?;
        let grey = RGBColor(150, 150, 150);
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                grey.stroke_width(1),
            ))
            .map_err(plot_err)?
            .label("perfectly calibrated")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], grey));
        for (i, (name, points)) in series.iter().enumerate() {
            let c = colour(i);
            let xy: Vec<(f64, f64)> = points.iter().map(|&(p, o, _)| (p, o)).collect();
            chart
                .draw_series(LineSeries::new(xy.clone(), c.stroke_width(2)))
                .map_err(plot_err)?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], c.stroke_width(2)));
            // Point area grows with the bin's trials, so a bin of three is seen as such.
            let total = points.iter().map(|p| p.2).sum::<usize>().max(1) as f64;
            chart
                .draw_series(points.iter().map(|&(p, o, n)| {
                    let r = (3.0 + 12.0 * (n as f64 / total).sqrt()) as i32;
                    Circle::new((p, o), r, c.mix(0.6).filled())
                }))
                .map_err(plot_err)?;
        }
        // Upper left: above the diagonal's far end, where few bins fall.
        draw_legend_at(&mut chart, SeriesLabelPosition::UpperLeft)
    }

    fn bars<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        y_label: &str,
        categories: &[String],
        series: &[(String, Vec<f64>)],
    ) -> Result<()> {
        let n = categories.len().max(1) as f64;
        let top = series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold(0.0f64, f64::max)
            * 1.35
            + 1e-9;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..n, 0f64..top)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(y_label)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(plot_err)?;
        let k = series.len().max(1) as f64;
        // Category names cut to what fits under their group at about 7 px a character.
        let max_chars = ((WIDTH as f64 - 90.0) / n / 7.0).max(3.0) as usize;
        let slot = 0.8 / k;
        for (j, (name, values)) in series.iter().enumerate() {
            let c = colour(j);
            chart
                .draw_series(values.iter().enumerate().map(|(i, v)| {
                    let x0 = i as f64 + 0.1 + j as f64 * slot;
                    Rectangle::new([(x0, 0.0), (x0 + slot, *v)], c.filled())
                }))
                .map_err(plot_err)?
                .label(name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        // Category names under their groups (pixel offsets from the axis point).
        let style =
            TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        chart
            .draw_series(categories.iter().enumerate().map(|(i, name)| {
                let short: String = if name.chars().count() > max_chars {
                    name.chars()
                        .take(max_chars - 1)
                        .chain(std::iter::once('…'))
                        .collect()
                } else {
                    name.clone()
                };
                EmptyElement::at((i as f64 + 0.5, 0.0)) + Text::new(short, (0, 6), style.clone())
            }))
            .map_err(plot_err)?;
        draw_legend(&mut chart)
    }
}

/// A reliability diagram of named rows: each row's raw probabilities and, with `platt`, where
/// validation fitted one, its Platt-scaled ones.
pub fn reliability_figure(
    title: &str,
    rows: &[(&str, &trialforge_predict::benchmark::Reliability)],
    platt: bool,
) -> Figure {
    let points = |bins: &[trialforge_predict::calibrate::ReliabilityBin]| -> Vec<ReliabilityPoint> {
        bins.iter()
            .filter_map(|b| Some((b.predicted?, b.observed?, b.trials)))
            .collect()
    };
    let mut series = Vec::new();
    for (name, r) in rows {
        series.push((name.to_string(), points(&r.raw)));
        if let Some(scaled) = r.platt.as_ref().filter(|_| platt) {
            series.push((format!("{name} (Platt)"), points(scaled)));
        }
    }
    Figure {
        name: "reliability".into(),
        title: title.to_string(),
        plot: Plot::Reliability { series },
    }
}

/// The benchmark's diagram: every model's raw probabilities (first training seed) and HINT's, on the
/// whole test set; one colour each (the Platt-scaled bins are in the report's JSON).
pub fn benchmark_reliability(report: &trialforge_predict::benchmark::BenchmarkReport) -> Figure {
    let rows: Vec<(&str, &trialforge_predict::benchmark::Reliability)> = report
        .rows
        .iter()
        .chain(std::iter::once(&report.reference))
        .filter_map(|r| Some((r.model.as_str(), r.reliability.as_ref()?)))
        .collect();
    reliability_figure(
        &format!("TOP phase {:?}: reliability on the test set", report.phase),
        &rows,
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> Vec<Figure> {
        vec![
            Figure {
                name: "hist".into(),
                title: "Cosine similarity".into(),
                plot: Plot::Histogram {
                    x_label: "cosine".into(),
                    series: vec![
                        ("real-real".into(), vec![0.1, 0.2, 0.2, 0.3]),
                        ("synthetic".into(), vec![0.5, 0.6]),
                    ],
                    bins: 10,
                },
            },
            Figure {
                name: "scatter".into(),
                title: "t-SNE".into(),
                plot: Plot::Scatter {
                    points: vec![[0.0, 0.0], [1.0, 1.0], [2.0, 0.5]],
                    groups: vec![("real".into(), vec![0, 1]), ("synthetic".into(), vec![2])],
                },
            },
            Figure {
                name: "reliability".into(),
                title: "Reliability".into(),
                plot: Plot::Reliability {
                    series: vec![("cladmop".into(), vec![(0.3, 0.4, 20), (0.6, 0.55, 90)])],
                },
            },
            Figure {
                name: "bars".into(),
                title: "Phases".into(),
                plot: Plot::Bars {
                    y_label: "share".into(),
                    categories: vec!["PHASE1".into(), "a very long category name".into()],
                    series: vec![
                        ("real".into(), vec![0.7, 0.3]),
                        ("synthetic".into(), vec![1.0, 0.0]),
                    ],
                },
            },
        ]
    }

    #[test]
    fn every_plot_draws_as_svg_with_its_text_and_as_png() {
        let dir = tempfile::tempdir().unwrap();
        for f in figures() {
            let svg = f.svg().unwrap();
            assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
            assert!(svg.contains(&f.title), "title missing in {}", f.name);
            let png = dir.path().join(format!("{}.png", f.name));
            f.write_png(&png).unwrap();
            let bytes = std::fs::read(&png).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        }
        let svg = figures()[0].svg().unwrap();
        assert!(svg.contains("real-real (n = 4)") && svg.contains("synthetic (n = 2)"));
        let svg = figures()[2].svg().unwrap();
        assert!(svg.contains("observed success rate") && svg.contains("perfectly calibrated"));
        let svg = figures()[3].svg().unwrap();
        assert!(svg.contains("a very long cat"), "category labels are drawn");
    }
}
