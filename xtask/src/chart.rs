//! The benchmark chart: IOPS of each dm-remap config as a ratio to its baseline, one bar per
//! workload, with the targets drawn as lines.

use anyhow::{Context, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::Path;

/// One group of bars: a config and its ratios (percent), one per workload.
pub struct Group {
    pub label: String,
    pub ratios: Vec<Option<f64>>,
}

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// Draws the chart to `out` (PNG), with the font at `font`.
pub fn draw(out: &Path, font: &Path, workloads: &[String], groups: &[Group]) -> Result<()> {
    let bytes = std::fs::read(font).with_context(|| format!("reading the chart font {}", font.display()))?;
    // plotters keeps a reference for the life of the program.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| anyhow::anyhow!("bad font file"))?;
    let root = BitMapBackend::new(out, (1200, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = groups.len() as f64;
    let lo = groups.iter().flat_map(|g| g.ratios.iter().flatten()).fold(100.0f64, |a, &b| a.min(b)).min(94.0) - 2.0;
    let top = groups.iter().flat_map(|g| g.ratios.iter().flatten()).fold(100.0f64, |a, &b| a.max(b));
    // Headroom above the bars for the legend.
    let hi = top + (top - lo) * 0.45;
    let mut chart = ChartBuilder::on(&root)
        .caption("dm-remap IOPS as % of its baseline (icount, median)", ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(70)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n, lo..hi)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        // Ticks every half group; only the centres (x.5) are labelled.
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&|x| {
            if (x - x.floor() - 0.5).abs() < 1e-6 {
                groups.get(x.floor() as usize).map(|g| g.label.clone()).unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("% of baseline")
        .label_style(("sans-serif", 13))
        .draw()?;
    let w = 0.8 / workloads.len() as f64;
    for (j, wl) in workloads.iter().enumerate() {
        let color = COLORS[j % COLORS.len()];
        let bars = groups.iter().enumerate().filter_map(|(i, g)| {
            let r = (*g.ratios.get(j)?)?;
            let x0 = i as f64 + 0.1 + j as f64 * w;
            Some(Rectangle::new([(x0, lo), (x0 + w * 0.9, r)], color.filled()))
        });
        chart.draw_series(bars)?.label(wl.as_str()).legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    for (t, label) in [(100.0, "100%"), (99.5, "99.5% target"), (98.0, "98% target"), (95.0, "95% target")] {
        if t > lo {
            chart
                .draw_series(LineSeries::new([(0.0, t), (n, t)], BLACK.stroke_width(1)))?
                .label(label)
                .legend(|(x, y)| PathElement::new([(x, y), (x + 10, y)], BLACK));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()?;
    root.present()?;
    Ok(())
}
