//! Charts (PNG files that decode, at the requested size, with drawn content and text) and the
//! report helpers (metrics JSONL, markdown).

use std::fs;
use std::path::Path;

use rlhf::data::DataError;
use rlhf::plot::{
    bar_chart, bar_chart_sized, interval_bar_chart, line_chart, line_chart_sized, IntervalBar,
    PlotError, Series,
};
use rlhf::report::{read_metrics, series, Report};

/// A decoded PNG: width, height, and its pixels as RGB triples.
struct Image {
    width: u32,
    height: u32,
    rgb: Vec<[u8; 3]>,
}

/// Decodes the PNG at `path` (any colour type the encoder may pick, 8-bit).
fn decode(path: &Path) -> Image {
    let file = fs::File::open(path).expect("chart file exists");
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().expect("PNG header decodes");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size fits")];
    let info = reader.next_frame(&mut buf).expect("PNG pixels decode");
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let channels = info.color_type.samples();
    let rgb = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| match channels {
            1 | 2 => [p[0]; 3],
            _ => [p[0], p[1], p[2]],
        })
        .collect();
    Image {
        width: info.width,
        height: info.height,
        rgb,
    }
}

/// How many pixels differ from the top-left one (the background).
fn non_background(img: &Image) -> usize {
    let bg = img.rgb[0];
    img.rgb.iter().filter(|&&p| p != bg).count()
}

/// How many pixels differ between two images of the same size.
fn differing(a: &Image, b: &Image) -> usize {
    assert_eq!((a.width, a.height), (b.width, b.height));
    a.rgb.iter().zip(&b.rgb).filter(|(p, q)| p != q).count()
}

fn loss_curves() -> Vec<Series> {
    let train = (0..200).map(|s| (s as f64, 4.0 * (-(s as f64) / 60.0).exp() + 1.0));
    let val = (0..=10).map(|i| {
        (
            20.0 * i as f64,
            4.2 * (-(20.0 * i as f64) / 70.0).exp() + 1.2,
        )
    });
    vec![
        Series::new("train loss", train.collect()),
        Series::new("held-out loss", val.collect()),
    ]
}

fn stage_scores() -> Vec<(String, f64)> {
    [
        ("pretrained", -1.4),
        ("SFT", 0.35),
        ("PPO", 1.1),
        ("PPO-ptx", 0.9),
    ]
    .iter()
    .map(|&(n, v)| (n.to_string(), v))
    .collect()
}

#[test]
fn line_chart_writes_a_png_of_the_requested_size_with_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loss.png");
    line_chart_sized(
        &path,
        (640, 400),
        "SFT loss",
        "step",
        "loss",
        &loss_curves(),
    )
    .unwrap();
    let img = decode(&path);
    assert_eq!((img.width, img.height), (640, 400));
    assert_eq!(img.rgb[0], [255, 255, 255], "white background");
    let drawn = non_background(&img);
    assert!(drawn > 2_000, "only {drawn} pixels drawn");
}

#[test]
fn default_size_charts_are_960_by_600() {
    let dir = tempfile::tempdir().unwrap();
    let (line, bars) = (dir.path().join("l.png"), dir.path().join("b.png"));
    line_chart(&line, "loss", "step", "loss", &loss_curves()).unwrap();
    bar_chart(&bars, "score", "score", &stage_scores()).unwrap();
    for path in [line, bars] {
        let img = decode(&path);
        assert_eq!((img.width, img.height), rlhf::plot::DEFAULT_SIZE);
    }
}

#[test]
fn bar_chart_writes_a_png_of_the_requested_size_with_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("score.png");
    let bars = stage_scores();
    bar_chart_sized(&path, (800, 500), "Held-out labeler score", "score", &bars).unwrap();
    let img = decode(&path);
    assert_eq!((img.width, img.height), (800, 500));
    // The PPO bar's colour (palette entry 2, green) fills a sizeable area.
    let green = img.rgb.iter().filter(|&&p| p == [44, 160, 44]).count();
    assert!(
        green > 1_000,
        "only {green} pixels of the third bar's colour"
    );
    assert!(non_background(&img) > 5_000);
}

#[test]
fn text_renders_with_the_embedded_font() {
    let dir = tempfile::tempdir().unwrap();
    let (titled, untitled) = (dir.path().join("t.png"), dir.path().join("u.png"));
    let one = &loss_curves()[..1];
    line_chart(&titled, "Reward model accuracy", "step", "loss", one).unwrap();
    line_chart(&untitled, "", "step", "loss", one).unwrap();
    let diff = differing(&decode(&titled), &decode(&untitled));
    assert!(diff > 500, "the title changed only {diff} pixels");
}

#[test]
fn legend_draws_for_more_than_one_series_only() {
    let dir = tempfile::tempdir().unwrap();
    let curves = loss_curves();
    // The same curves, the second renamed: only the legend text can change.
    let mut renamed = curves.clone();
    renamed[1].name = "validation".into();
    let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
    line_chart(&a, "loss", "step", "loss", &curves).unwrap();
    line_chart(&b, "loss", "step", "loss", &renamed).unwrap();
    let legend_diff = differing(&decode(&a), &decode(&b));
    assert!(
        legend_diff > 50,
        "renaming a series changed {legend_diff} pixels"
    );
    // With a single series the name is not drawn anywhere.
    let (c, d) = (dir.path().join("c.png"), dir.path().join("d.png"));
    line_chart(&c, "loss", "step", "loss", &curves[..1]).unwrap();
    let mut single = curves[0].clone();
    single.name = "something else".into();
    line_chart(&d, "loss", "step", "loss", &[single]).unwrap();
    assert_eq!(differing(&decode(&c), &decode(&d)), 0);
}

#[test]
fn a_single_point_and_a_flat_line_draw() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.png");
    line_chart(
        &path,
        "one",
        "x",
        "y",
        &[Series::new("p", vec![(3.0, 0.5)])],
    )
    .unwrap();
    assert!(non_background(&decode(&path)) > 1_000);
    let flat = Series::new("flat", vec![(0.0, 0.0), (1.0, 0.0), (2.0, 0.0)]);
    line_chart(&path, "flat", "x", "y", &[flat]).unwrap();
    assert!(non_background(&decode(&path)) > 1_000);
}

#[test]
fn nothing_to_plot_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.png");
    let err = line_chart(&path, "t", "x", "y", &[]).unwrap_err();
    assert!(matches!(err, PlotError::NoData { .. }), "{err}");
    assert!(err.to_string().contains("empty.png"), "{err}");
    let no_points = [
        Series::new("a", vec![]),
        Series::new("b", vec![(1.0, f64::NAN)]),
    ];
    let err = line_chart(&path, "t", "x", "y", &no_points).unwrap_err();
    assert!(matches!(err, PlotError::NoData { .. }), "{err}");
    let err = bar_chart(&path, "t", "y", &[]).unwrap_err();
    assert!(matches!(err, PlotError::NoData { .. }), "{err}");
    assert!(!path.exists(), "no file is written on error");
}

fn win_rates(half_width: f64) -> Vec<IntervalBar> {
    [("PPO", 0.56), ("DPO", 0.44), ("ideal", 0.61)]
        .iter()
        .map(|&(label, value)| IntervalBar {
            label: label.into(),
            value,
            low: value - half_width,
            high: value + half_width,
        })
        .collect()
}

#[test]
fn interval_bars_draw_whiskers_and_a_reference_line() {
    let dir = tempfile::tempdir().unwrap();
    let (wide, narrow, none) = (
        dir.path().join("wide.png"),
        dir.path().join("narrow.png"),
        dir.path().join("none.png"),
    );
    interval_bar_chart(&wide, "win rate", "won", &win_rates(0.08), 0.5).unwrap();
    interval_bar_chart(&narrow, "win rate", "won", &win_rates(0.02), 0.5).unwrap();
    // Unknown intervals (NaN) draw bars without whiskers rather than failing.
    interval_bar_chart(&none, "win rate", "won", &win_rates(f64::NAN), 0.5).unwrap();
    let (w, n, x) = (decode(&wide), decode(&narrow), decode(&none));
    assert_eq!((w.width, w.height), (960, 600));
    assert!(non_background(&x) > 10_000, "bars drawn");
    // The whiskers are what differs: black pixels, more of them for the wider intervals.
    let black = |img: &Image| img.rgb.iter().filter(|p| p.iter().all(|&c| c < 40)).count();
    assert!(
        black(&w) > black(&n) && black(&n) > black(&x),
        "{} {} {}",
        black(&w),
        black(&n),
        black(&x)
    );
    assert!(differing(&w, &n) > 100);
    // The reference line is grey, across the whole plot.
    let grey = |img: &Image| img.rgb.iter().filter(|p| **p == [90, 90, 90]).count();
    assert!(grey(&x) > 500, "reference line: {} grey pixels", grey(&x));

    let mut bad = win_rates(0.05);
    bad[1].value = f64::NAN;
    let err = interval_bar_chart(dir.path().join("bad.png"), "t", "y", &bad, 0.5).unwrap_err();
    assert!(
        matches!(err, PlotError::NonFinite { ref name, .. } if name == "DPO"),
        "{err}"
    );
    let err = interval_bar_chart(dir.path().join("empty.png"), "t", "y", &[], 0.5).unwrap_err();
    assert!(matches!(err, PlotError::NoData { .. }), "{err}");
}

#[test]
fn non_finite_points_are_left_out_and_non_finite_bars_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.png");
    let diverged = Series::new("loss", vec![(0.0, 2.0), (1.0, 1.5), (2.0, f64::NAN)]);
    line_chart(&path, "diverged", "step", "loss", &[diverged]).unwrap();
    assert!(non_background(&decode(&path)) > 1_000);
    let bars = vec![("SFT".to_string(), 0.5), ("PPO".to_string(), f64::INFINITY)];
    let err = bar_chart(dir.path().join("bad.png"), "t", "y", &bars).unwrap_err();
    assert!(
        matches!(err, PlotError::NonFinite { ref name, .. } if name == "PPO"),
        "{err}"
    );
}

#[test]
fn a_zero_size_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = line_chart_sized(
        dir.path().join("z.png"),
        (0, 100),
        "t",
        "x",
        "y",
        &loss_curves(),
    )
    .unwrap_err();
    assert!(matches!(err, PlotError::Size { .. }), "{err}");
}

#[test]
fn writing_replaces_the_file_and_leaves_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chart.png");
    fs::write(&path, b"old").unwrap();
    bar_chart(&path, "win rate", "win rate vs SFT", &stage_scores()).unwrap();
    assert_eq!(&fs::read(&path).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("chart.png")]);
}

#[test]
fn an_unwritable_path_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-folder").join("c.png");
    let err = line_chart(&path, "t", "x", "y", &loss_curves()).unwrap_err();
    assert!(matches!(err, PlotError::Write(_)), "{err}");
    assert!(err.to_string().contains("missing-folder"), "{err}");
}

#[test]
fn metrics_are_read_into_series_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    let lines = [
        r#"{"step": 0, "loss": 4.5}"#,
        r#"{"step": 10, "loss": 3.25, "val_loss": 3.5}"#,
        "",
        r#"{"step": 20, "loss": 2.0, "note": "lr decay"}"#,
        r#"{"iteration": 1, "score": -0.5, "kl": 0.01}"#,
    ];
    fs::write(&path, lines.join("\n")).unwrap();
    let records = read_metrics(&path).unwrap();
    assert_eq!(records.len(), 4);
    assert_eq!(
        series(&records, "step", "loss"),
        vec![(0.0, 4.5), (10.0, 3.25), (20.0, 2.0)]
    );
    assert_eq!(series(&records, "step", "val_loss"), vec![(10.0, 3.5)]);
    assert_eq!(series(&records, "iteration", "kl"), vec![(1.0, 0.01)]);
    assert_eq!(
        series(&records, "step", "note"),
        vec![],
        "non-numbers are skipped"
    );
    assert_eq!(series(&records, "step", "missing"), vec![]);
}

#[test]
fn a_malformed_metrics_line_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    fs::write(
        &path,
        "{\"step\": 0, \"loss\": 1.0}\n\n{\"step\": 1, \"loss\"\n",
    )
    .unwrap();
    let err = read_metrics(&path).unwrap_err();
    assert!(matches!(err, DataError::Malformed { line: 3, .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("metrics.jsonl:3:"), "{msg}");
    // A JSON value that is not an object is malformed too.
    fs::write(&path, "{\"step\": 0}\n[1, 2]\n").unwrap();
    let err = read_metrics(&path).unwrap_err();
    assert!(matches!(err, DataError::Malformed { line: 2, .. }), "{err}");
    let err = read_metrics(dir.path().join("absent.jsonl")).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }) && err.to_string().contains("absent.jsonl"));
}

#[test]
fn the_report_has_its_headings_table_and_image_link() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.md");
    let mut report = Report::new("ferrochat run");
    report
        .heading("Per-stage comparison")
        .paragraph("Held-out prompts, scored by the simulated labeler.")
        .table(
            &["stage", "score", "rude"],
            &[
                vec!["SFT".into(), "0.35".into(), "4%".into()],
                vec!["PPO | ptx".into(), "1.10".into()],
            ],
        )
        .image("Labeler score per stage", "score.png")
        .image("SFT loss", "sft loss.png");
    report.save(&path).unwrap();
    let md = fs::read_to_string(&path).unwrap();
    assert_eq!(md, report.markdown());
    let expected = "# ferrochat run\n\
        \n## Per-stage comparison\n\
        \nHeld-out prompts, scored by the simulated labeler.\n\
        \n| stage | score | rude |\n| --- | --- | --- |\n| SFT | 0.35 | 4% |\n| PPO \\| ptx | 1.10 |  |\n\
        \n![Labeler score per stage](score.png)\n\
        \n![SFT loss](<sft loss.png>)\n";
    assert_eq!(md, expected);
}

#[test]
fn saving_a_report_into_a_missing_folder_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = Report::new("r")
        .save(dir.path().join("nope").join("report.md"))
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

/// Pixels of the legend box's border colour in the left and the right half of `img` (a
/// few antialiased text pixels may share the colour).
fn legend_border_by_half(img: &Image) -> (usize, usize) {
    let border = [160, 160, 160];
    let (mut left, mut right) = (0, 0);
    for (i, p) in img.rgb.iter().enumerate() {
        if *p == border {
            if (i as u32 % img.width) < img.width / 2 {
                left += 1;
            } else {
                right += 1;
            }
        }
    }
    (left, right)
}

#[test]
fn the_legend_goes_to_a_corner_free_of_data() {
    let dir = tempfile::tempdir().unwrap();
    let rising: Vec<_> = (0..50).map(|i| (i as f64, i as f64)).collect();
    let flat: Vec<_> = (0..50).map(|i| (i as f64, 10.0)).collect();
    let up = [
        Series::new("score", rising.clone()),
        Series::new("kl", flat.clone()),
    ];
    let path = dir.path().join("up.png");
    line_chart(&path, "rising", "iteration", "value", &up).unwrap();
    let (left, right) = legend_border_by_half(&decode(&path));
    assert!(
        left > 100 && right < 10,
        "legend border pixels: {left} left, {right} right"
    );
    // Falling data leaves the upper right free: the legend goes there.
    let falling: Vec<_> = rising.iter().map(|&(x, y)| (x, 49.0 - y)).collect();
    let down = [Series::new("loss", falling), Series::new("kl", flat)];
    line_chart(&path, "falling", "step", "loss", &down).unwrap();
    let (left, right) = legend_border_by_half(&decode(&path));
    assert!(
        right > 100 && left < 10,
        "legend border pixels: {left} left, {right} right"
    );
}
