//! Line and bar charts as PNG files, for the run folder's training curves and per-stage
//! comparisons.
//!
//! Text is drawn with DejaVu Sans, embedded in the binary (`rlhf/assets/DejaVuSans.ttf`, its
//! licence beside it) and rasterised by `ab_glyph`: a chart renders the same on a fresh machine
//! with no system fonts and no fontconfig. Charts are drawn into memory, encoded as PNG and
//! written atomically (temporary file + rename), so a killed run never leaves half a PNG.
//!
//! ```no_run
//! use rlhf::plot::{line_chart, Series};
//! let loss = Series::new("train", vec![(0.0, 4.2), (100.0, 2.1), (200.0, 1.7)]);
//! line_chart("loss.png", "SFT loss", "step", "loss", &[loss])?;
//! # Ok::<(), rlhf::plot::PlotError>(())
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The size in pixels (width, height) of a chart drawn by [`line_chart`] or [`bar_chart`].
pub const DEFAULT_SIZE: (u32, u32) = (960, 600);

/// The embedded font: DejaVu Sans 2.37 (Bitstream Vera + Arev licence, see
/// `rlhf/assets/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// The family name the embedded font is registered under.
const FAMILY: &str = "sans-serif";

/// Line and bar colours, in order: the Tableau 10 palette, chosen to stay distinct from one
/// another (and in greyscale, for the first few).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Grid lines.
const GRID: RGBColor = RGBColor(215, 215, 215);

/// How many labelled ticks an axis asks plotters for (at most).
const TICKS: usize = 10;

/// Series with at most this many points also get a dot at each point (so a single point, or a
/// short eval curve, is visible).
const MARK_POINTS_UP_TO: usize = 30;

/// One named line of a [`line_chart`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend entry.
    pub name: String,
    /// The (x, y) points, drawn in the given order.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series named `name` through `points`.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points,
        }
    }
}

/// An error drawing or writing a chart. Each names the file it was for.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Nothing to draw: no series, or no series with a finite point; no bars.
    #[error("{}: nothing to plot ({what})", path.display())]
    NoData {
        /// The chart file.
        path: PathBuf,
        /// What was missing.
        what: String,
    },
    /// A bar whose value is NaN or infinite.
    #[error("{}: bar {name:?} has the non-finite value {value}", path.display())]
    NonFinite {
        /// The chart file.
        path: PathBuf,
        /// The bar's label.
        name: String,
        /// Its value.
        value: f64,
    },
    /// A width or height of zero.
    #[error("{}: chart size {width}x{height} has no pixels", path.display())]
    Size {
        /// The chart file.
        path: PathBuf,
        /// The requested width.
        width: u32,
        /// The requested height.
        height: u32,
    },
    /// plotters failed to draw (it reports fonts, layout and backend errors this way).
    #[error("{}: cannot draw the chart: {msg}", path.display())]
    Draw {
        /// The chart file.
        path: PathBuf,
        /// plotters' message.
        msg: String,
    },
    /// The PNG could not be encoded.
    #[error("{}: cannot encode PNG: {msg}", path.display())]
    Encode {
        /// The chart file.
        path: PathBuf,
        /// The encoder's message.
        msg: String,
    },
    /// The file could not be written (the message names it).
    #[error(transparent)]
    Write(#[from] model::Error),
}

/// Draws `series` as lines on one chart of [`DEFAULT_SIZE`] and saves it as a PNG at `path`.
///
/// See [`line_chart_sized`].
pub fn line_chart(
    path: impl AsRef<Path>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), PlotError> {
    line_chart_sized(path, DEFAULT_SIZE, title, x_label, y_label, series)
}

/// Draws `series` as lines on one chart of `size` (width, height) pixels and saves it as a PNG
/// at `path`.
///
/// Axes span the finite points with a margin (a flat or single-point range is widened so it
/// still shows). Non-finite points (a diverged loss) are left out; series with no finite point
/// are left out, legend included. A legend is drawn when more than one series remains; short
/// series also get a dot at each point. Errors: no series, or no finite point in any.
pub fn line_chart_sized(
    path: impl AsRef<Path>,
    size: (u32, u32),
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), PlotError> {
    let path = path.as_ref();
    let finite: Vec<Series> = series
        .iter()
        .map(|s| Series::new(&*s.name, finite_points(&s.points)))
        .filter(|s| !s.points.is_empty())
        .collect();
    if finite.is_empty() {
        let what = if series.is_empty() {
            "no series"
        } else {
            "no finite point in any series"
        };
        return Err(no_data(path, what));
    }
    let (x, y) = (axis(&finite, |p| p.0, 0.02), axis(&finite, |p| p.1, 0.08));
    let axes = Axes {
        x,
        y,
        x_label,
        y_label,
    };
    render(path, size, |root| draw_lines(root, title, &axes, &finite))
}

/// Draws one bar per `(label, value)` on a chart of [`DEFAULT_SIZE`] and saves it as a PNG at
/// `path`.
///
/// See [`bar_chart_sized`].
pub fn bar_chart(
    path: impl AsRef<Path>,
    title: &str,
    y_label: &str,
    bars: &[(String, f64)],
) -> Result<(), PlotError> {
    bar_chart_sized(path, DEFAULT_SIZE, title, y_label, bars)
}

/// Draws one bar per `(label, value)`, in order, on a chart of `size` (width, height) pixels
/// and saves it as a PNG at `path`: for per-stage comparisons (held-out labeler score, win
/// rate, rude-word rate per stage).
///
/// Bars start at 0 (negative values go down), each in its own palette colour with its value
/// written above it; the y axis always includes 0. Errors: no bars, or a non-finite value.
pub fn bar_chart_sized(
    path: impl AsRef<Path>,
    size: (u32, u32),
    title: &str,
    y_label: &str,
    bars: &[(String, f64)],
) -> Result<(), PlotError> {
    let path = path.as_ref();
    check_bars(path, bars)?;
    let y = bar_axis(bars.iter().map(|b| b.1));
    render(path, size, |root| {
        draw_bars(root, title, y_label, bars, y, &[], None)
    })
}

/// A bar chart's input errors: no bars, or a bar whose value is not finite.
fn check_bars(path: &Path, bars: &[(String, f64)]) -> Result<(), PlotError> {
    if bars.is_empty() {
        return Err(no_data(path, "no bars"));
    }
    if let Some((name, value)) = bars.iter().find(|b| !b.1.is_finite()) {
        return Err(PlotError::NonFinite {
            path: path.to_path_buf(),
            name: name.clone(),
            value: *value,
        });
    }
    Ok(())
}

/// One bar of an [`interval_bar_chart`]: a value with its 95% interval (`low`, `high`; NaN
/// when unknown).
#[derive(Clone, Debug)]
pub struct IntervalBar {
    pub label: String,
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// Like [`bar_chart`], with a black whisker on each bar from its `low` to its `high` (none
/// where the interval is unknown) and a grey horizontal line at `reference` — 0.5 for a win
/// rate (a coin toss), 0 for a difference — so a reader sees at once whether an interval
/// clears it. Errors: no bars, or a non-finite value.
pub fn interval_bar_chart(
    path: impl AsRef<Path>,
    title: &str,
    y_label: &str,
    bars: &[IntervalBar],
    reference: f64,
) -> Result<(), PlotError> {
    let path = path.as_ref();
    let plain: Vec<(String, f64)> = bars.iter().map(|b| (b.label.clone(), b.value)).collect();
    check_bars(path, &plain)?;
    let whiskers: Vec<(f64, f64)> = bars.iter().map(|b| (b.low, b.high)).collect();
    let ends = bars
        .iter()
        .flat_map(|b| [b.value, b.low, b.high])
        .chain([reference])
        .filter(|v| v.is_finite());
    let y = bar_axis(ends);
    render(path, DEFAULT_SIZE, |root| {
        draw_bars(root, title, y_label, &plain, y, &whiskers, Some(reference))
    })
}

/// The points of `points` whose coordinates are both finite.
fn finite_points(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

fn no_data(path: &Path, what: &str) -> PlotError {
    PlotError::NoData {
        path: path.to_path_buf(),
        what: what.to_string(),
    }
}

/// The range of one coordinate over all points, widened by `margin` of its span on each side.
fn axis(series: &[Series], coord: impl Fn(&(f64, f64)) -> f64, margin: f64) -> Range<f64> {
    let values = series.iter().flat_map(|s| s.points.iter().map(&coord));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    padded(lo, hi, margin)
}

/// `lo..hi` widened by `margin` of its span on each side; a zero span is widened to ±10% of
/// the value (±1 around zero) so a flat line or a single point sits mid-axis.
fn padded(lo: f64, hi: f64, margin: f64) -> Range<f64> {
    let span = hi - lo;
    if span > 0.0 {
        return (lo - margin * span)..(hi + margin * span);
    }
    let half = if lo == 0.0 { 1.0 } else { 0.1 * lo.abs() };
    (lo - half)..(hi + half)
}

/// The corner of the plot for the legend: the one whose quarter-width, third-height box holds
/// the fewest points (upper right on a tie), so the legend hides as little data as it can.
fn legend_corner(series: &[Series], x: &Range<f64>, y: &Range<f64>) -> SeriesLabelPosition {
    use SeriesLabelPosition::{LowerLeft, LowerRight, UpperLeft, UpperRight};
    // Whether `v` lies in the `share` of `range` at its high end (or its low end).
    let near = |v: f64, range: &Range<f64>, share: f64, high: bool| {
        let t = (v - range.start) / (range.end - range.start);
        if high {
            t >= 1.0 - share
        } else {
            t <= share
        }
    };
    let count = |right: bool, top: bool| {
        let points = series.iter().flat_map(|s| &s.points);
        points
            .filter(|p| near(p.0, x, 0.25, right) && near(p.1, y, 0.33, top))
            .count()
    };
    let corners = [
        (UpperRight, true, true),
        (UpperLeft, false, true),
        (LowerRight, true, false),
        (LowerLeft, false, false),
    ];
    // `min_by_key` keeps the first of equal minima: upper right wins ties.
    let best = corners.into_iter().min_by_key(|&(_, r, t)| count(r, t));
    best.map_or(UpperRight, |c| c.0)
}

/// A bar chart's y range: always including 0, with headroom for the value labels.
fn bar_axis(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let bottom = if lo < 0.0 { lo - 0.12 * span } else { 0.0 };
    let top = if hi > 0.0 || lo == 0.0 {
        hi + 0.12 * span
    } else {
        0.0
    };
    bottom..top
}

/// The embedded font, registered with plotters on first use.
fn font_ready() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok())
}

/// Draws with `draw` onto a white RGB canvas of `size`, encodes it as PNG and writes it
/// atomically to `path`.
fn render<F>(path: &Path, (width, height): (u32, u32), draw: F) -> Result<(), PlotError>
where
    F: FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<(), String>,
{
    if width == 0 || height == 0 {
        return Err(PlotError::Size {
            path: path.to_path_buf(),
            width,
            height,
        });
    }
    let draw_err = |msg: String| PlotError::Draw {
        path: path.to_path_buf(),
        msg,
    };
    if !font_ready() {
        return Err(draw_err("the embedded font does not parse".into()));
    }
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(e.to_string()))?;
        draw(&root).map_err(draw_err)?;
        root.present().map_err(|e| draw_err(e.to_string()))?;
    }
    let png = encode_png(&pixels, width, height).map_err(|msg| PlotError::Encode {
        path: path.to_path_buf(),
        msg,
    })?;
    model::checkpoint::write_atomic(path, &png)?;
    Ok(())
}

/// 8-bit RGB `pixels` (row-major, `width * height * 3` bytes) as a PNG file's bytes.
fn encode_png(pixels: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(pixels).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// A text style in the embedded font, `size` pixels high.
fn font(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&BLACK)
}

/// The title, axes and mesh shared by both kinds of chart, ready for plotting.
fn chart_builder<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    title: &str,
    x_label_area: u32,
) -> ChartBuilder<'a, 'b, BitMapBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, font(28))
        .margin(16)
        .x_label_area_size(x_label_area)
        .y_label_area_size(86);
    builder
}

/// A line chart's axes: their ranges and descriptions.
struct Axes<'a> {
    x: Range<f64>,
    y: Range<f64>,
    x_label: &'a str,
    y_label: &'a str,
}

fn draw_lines(
    root: &DrawingArea<BitMapBackend, Shift>,
    title: &str,
    axes: &Axes,
    series: &[Series],
) -> Result<(), String> {
    let (x_fmt, y_fmt) = (tick_format(&axes.x), tick_format(&axes.y));
    let mut chart = chart_builder(root, title, 56)
        .build_cartesian_2d(axes.x.clone(), axes.y.clone())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_labels(TICKS)
        .y_labels(TICKS)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .x_desc(axes.x_label)
        .y_desc(axes.y_label)
        .axis_desc_style(font(20))
        .label_style(font(16))
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID)
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let line = LineSeries::new(s.points.iter().copied(), colour.stroke_width(2));
        chart
            .draw_series(line)
            .map_err(|e| e.to_string())?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
            });
        if s.points.len() <= MARK_POINTS_UP_TO {
            let dots = s.points.iter().map(|&p| Circle::new(p, 3, colour.filled()));
            chart.draw_series(dots).map_err(|e| e.to_string())?;
        }
    }
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .label_font(font(16))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .position(legend_corner(series, &axes.x, &axes.y))
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Draws `bars`; with `whiskers` (one `(low, high)` per bar, or none at all) a whisker on each
/// bar whose ends are finite, and with `reference` a grey horizontal line at that value.
fn draw_bars(
    root: &DrawingArea<BitMapBackend, Shift>,
    title: &str,
    y_label: &str,
    bars: &[(String, f64)],
    y: Range<f64>,
    whiskers: &[(f64, f64)],
    reference: Option<f64>,
) -> Result<(), String> {
    // A discrete `0..last` range holds `last + 1` values: one slot per bar.
    let last = bars.len() as u32 - 1;
    let y_fmt = tick_format(&y);
    let mut chart = chart_builder(root, title, 44)
        .build_cartesian_2d((0..last).into_segmented(), y)
        .map_err(|e| e.to_string())?;
    let name_of = |v: &SegmentValue<u32>| match v {
        SegmentValue::CenterOf(i) => bars.get(*i as usize).map_or(String::new(), |b| b.0.clone()),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len())
        .x_label_formatter(&name_of)
        .y_desc(y_label)
        .axis_desc_style(font(20))
        .label_style(font(16))
        .y_labels(TICKS)
        .y_label_formatter(&y_fmt)
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID)
        .draw()
        .map_err(|e| e.to_string())?;
    // Gaps of at least 14 pixels; bars at most 160 pixels wide.
    let slot = chart.plotting_area().dim_in_pixel().0 / bars.len() as u32;
    let gap = 14.max(slot.saturating_sub(160) / 2);
    let rects = bars.iter().enumerate().map(|(i, (_, v))| {
        let i = i as u32;
        let colour = PALETTE[i as usize % PALETTE.len()];
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), *v),
            ],
            colour.filled(),
        );
        bar.set_margin(0, 0, gap, gap);
        bar
    });
    chart.draw_series(rects).map_err(|e| e.to_string())?;
    if let Some(r) = reference {
        let line = [
            (SegmentValue::Exact(0), r),
            (SegmentValue::Exact(last + 1), r),
        ];
        chart
            .draw_series(std::iter::once(PathElement::new(
                line,
                RGBColor(90, 90, 90).stroke_width(2),
            )))
            .map_err(|e| e.to_string())?;
    }
    let whisker_of = |i: usize| {
        whiskers
            .get(i)
            .filter(|(lo, hi)| lo.is_finite() && hi.is_finite())
    };
    let whisker_style = BLACK.stroke_width(2);
    for (i, &(lo, hi)) in (0..bars.len()).filter_map(|i| whisker_of(i).map(|w| (i, w))) {
        let x = SegmentValue::CenterOf(i as u32);
        let cap = |v: f64| {
            EmptyElement::at((x.clone(), v)) + PathElement::new([(-8, 0), (8, 0)], whisker_style)
        };
        chart
            .draw_series([PathElement::new(
                [(x.clone(), lo), (x.clone(), hi)],
                whisker_style,
            )])
            .map_err(|e| e.to_string())?;
        chart
            .draw_series([cap(lo), cap(hi)])
            .map_err(|e| e.to_string())?;
    }
    let decimals = value_decimals(bars.iter().map(|b| b.1));
    let labels = bars.iter().enumerate().map(|(i, (_, v))| {
        // Above a bar that goes up, below one that goes down, 4 pixels clear of its end (or of
        // its whisker's).
        let (anchor, dy, at) = if *v >= 0.0 {
            (VPos::Bottom, -4, whisker_of(i).map_or(*v, |w| w.1.max(*v)))
        } else {
            (VPos::Top, 4, whisker_of(i).map_or(*v, |w| w.0.min(*v)))
        };
        let style = font(16).pos(Pos::new(HPos::Center, anchor));
        let text = format!("{v:.decimals$}");
        EmptyElement::at((SegmentValue::CenterOf(i as u32), at)) + Text::new(text, (0, dy), style)
    });
    chart.draw_series(labels).map_err(|e| e.to_string())?;
    Ok(())
}

/// Decimals for bar value labels, the same for every bar: none when all are integers, else
/// enough for 3 significant digits of the largest magnitude (at least 2).
fn value_decimals(values: impl Iterator<Item = f64> + Clone) -> usize {
    if values.clone().all(|v| v == v.round()) {
        return 0;
    }
    let largest = values.fold(0.0f64, |m, v| m.max(v.abs()));
    match largest {
        m if m >= 100.0 => 1,
        m if m >= 1.0 => 2,
        _ => 3,
    }
}

/// A tick label formatter for an axis over `range`: every label with the same number of
/// decimals, just enough for the tick values plotters will pick (`200`, not `200.0`; `0.05`).
fn tick_format(range: &Range<f64>) -> impl Fn(&f64) -> String {
    let coord: RangedCoordf64 = range.clone().into();
    let decimals = coord
        .key_points(TICKS)
        .into_iter()
        .map(decimals_of)
        .max()
        .unwrap_or(0);
    move |v| {
        let text = format!("{v:.decimals$}");
        // A tick a rounding error below zero would read "-0.0".
        match text.strip_prefix('-') {
            Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
            _ => text,
        }
    }
}

/// The fewest decimals (up to 9) that write `v` exactly, to 1e-9 of its magnitude.
fn decimals_of(v: f64) -> usize {
    let tolerance = 1e-9 * v.abs().max(1.0);
    (0..9)
        .find(|&d| {
            let scale = 10f64.powi(d as i32);
            ((v * scale).round() / scale - v).abs() <= tolerance
        })
        .unwrap_or(9)
}
