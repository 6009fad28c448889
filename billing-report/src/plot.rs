//! SVG and PNG plots of a savings [`Report`], drawn with `plotters`.
//!
//! For each scenario, one figure with two panels: the CDN bytes of every run
//! in both modes (`D_cs` without and `D_p2p` with peer assistance, bytes, as
//! bars) and the saving `W = (D_cs − D_p2p) / D_cs` of every run (percent) with
//! the scenario's mean saving as a dashed line. Across scenarios, one figure of
//! the mean saving per scenario (percent) with the population standard
//! deviation as error bars — the spread the 2017 Sony Mobile study reports.
//!
//! Text is rendered by `plotters`' pure-Rust `ab_glyph` backend from a
//! TrueType/OpenType file loaded at run time ([`load_font`]): no fontconfig or
//! freetype library is needed to build or run, only one font file.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use plotters::coord::Shift;
use plotters::prelude::*;
use thiserror::Error;

use crate::savings::{Report, RunSaving, ScenarioSummary};

/// Environment variable naming a font file to use when `--font` is not given.
pub const FONT_ENV: &str = "OTA_BILLING_REPORT_FONT";

/// Font files tried, in order, when neither `--font` nor [`FONT_ENV`] is set
/// (Debian/Ubuntu, Fedora, Arch, Alpine, macOS and Windows locations). After
/// these, `/usr/share/fonts` and `/usr/local/share/fonts` are searched.
pub const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Size of a per-scenario figure, pixels.
pub const SCENARIO_SIZE: (u32, u32) = (1000, 800);
/// Size of the across-scenarios figure, pixels.
pub const SUMMARY_SIZE: (u32, u32) = (1000, 560);

const CS_COLOR: RGBColor = RGBColor(31, 119, 180);
const P2P_COLOR: RGBColor = RGBColor(255, 127, 14);
const SAVING_COLOR: RGBColor = RGBColor(44, 160, 44);
const ERROR_COLOR: RGBColor = RGBColor(214, 39, 40);
const MAX_X_LABELS: usize = 20;
const FONT: &str = "sans-serif";

/// Why plots could not be written.
#[derive(Debug, Error)]
pub enum PlotError {
    /// No usable font file for labels.
    #[error("no font for plot labels: {0}")]
    Font(String),
    /// The output directory could not be created.
    #[error("cannot create plot directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Drawing or writing one file failed.
    #[error("{path}: {message}")]
    Draw {
        /// The file being written.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The first existing font file among [`FONT_ENV`], [`FONT_CANDIDATES`] and a
/// search of `/usr/share/fonts` and `/usr/local/share/fonts` (preferring file
/// names containing "Sans").
pub fn find_font() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(FONT_ENV) {
        return Some(PathBuf::from(path));
    }
    if let Some(found) = FONT_CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file()) {
        return Some(found);
    }
    let mut found: Vec<PathBuf> = Vec::new();
    for root in ["/usr/share/fonts", "/usr/local/share/fonts"] {
        collect_fonts(Path::new(root), 4, &mut found);
    }
    found.sort();
    let sans = found.iter().find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains("Sans"))
    });
    sans.or(found.first()).cloned()
}

fn collect_fonts(dir: &Path, depth: u32, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && depth > 0 {
            collect_fonts(&path, depth - 1, found);
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("ttf") || e.eq_ignore_ascii_case("otf"))
        {
            found.push(path);
        }
    }
}

static LOADED_FONT: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Loads the font used for all plot text: `explicit` if given, else
/// [`find_font`]. The first font loaded successfully stays in use for the rest
/// of the process (plotters keeps a global font table); later calls return it.
pub fn load_font(explicit: Option<&Path>) -> Result<PathBuf, PlotError> {
    let mut loaded = LOADED_FONT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = loaded.as_ref() {
        return Ok(path.clone());
    }
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => find_font().ok_or_else(|| {
            PlotError::Font(format!(
                "no TrueType font found; pass --font FILE or set {FONT_ENV} (e.g. DejaVuSans.ttf from Debian's fonts-dejavu-core)"
            ))
        })?,
    };
    let bytes = std::fs::read(&path).map_err(|e| PlotError::Font(format!("{}: {e}", path.display())))?;
    // plotters' font table wants `'static` data; one font per process is leaked on purpose.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FONT, FontStyle::Normal, bytes)
        .map_err(|_| PlotError::Font(format!("{}: not a TrueType/OpenType font", path.display())))?;
    *loaded = Some(path.clone());
    Ok(path)
}

/// File-name stem of scenario number `index` (0-based): `scenario-01-<slug>`,
/// where the slug keeps ASCII letters and digits of `name` (lowercased) and
/// turns runs of anything else into `-` (at most 40 characters).
pub fn scenario_file_stem(index: usize, name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    format!(
        "scenario-{:02}-{}",
        index + 1,
        if slug.is_empty() { "unnamed" } else { slug }
    )
}

/// File-name stem of the across-scenarios figure.
pub const SUMMARY_FILE_STEM: &str = "scenarios-mean-saving";

/// Human-readable decimal byte count (`1.50 GB`; 1 GB = 10^9 bytes).
pub fn human_bytes(bytes: f64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes;
    let mut unit = 0;
    while value.abs() >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.2} {}", units[unit])
    }
}

/// Writes, into `dir` (created if missing), one SVG and one PNG per scenario
/// (`scenario-NN-<slug>.{svg,png}`, see [`scenario_file_stem`]) and one of
/// each across scenarios (`scenarios-mean-saving.{svg,png}`). `font` overrides
/// the font search of [`load_font`]. Returns the paths written.
pub fn write_plots(report: &Report, dir: &Path, font: Option<&Path>) -> Result<Vec<PathBuf>, PlotError> {
    load_font(font)?;
    std::fs::create_dir_all(dir).map_err(|source| PlotError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for (index, scenario) in report.scenarios.iter().enumerate() {
        let runs: Vec<&RunSaving> = report.runs.iter().filter(|r| r.scenario == scenario.name).collect();
        let stem = scenario_file_stem(index, &scenario.name);
        written.extend(write_both(
            dir,
            &stem,
            SCENARIO_SIZE,
            |a| draw_scenario(a, scenario, &runs),
            |a| draw_scenario(a, scenario, &runs),
        )?);
    }
    written.extend(write_both(
        dir,
        SUMMARY_FILE_STEM,
        SUMMARY_SIZE,
        |a| draw_summary(a, report),
        |a| draw_summary(a, report),
    )?);
    Ok(written)
}

/// Draws the same figure into `<stem>.svg` and `<stem>.png`.
fn write_both(
    dir: &Path,
    stem: &str,
    size: (u32, u32),
    svg: impl FnOnce(DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>,
    png: impl FnOnce(DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<Vec<PathBuf>, PlotError> {
    let svg_path = dir.join(format!("{stem}.svg"));
    let png_path = dir.join(format!("{stem}.png"));
    svg(SVGBackend::new(&svg_path, size).into_drawing_area()).map_err(|message| PlotError::Draw {
        path: svg_path.clone(),
        message,
    })?;
    png(BitMapBackend::new(&png_path, size).into_drawing_area()).map_err(|message| PlotError::Draw {
        path: png_path.clone(),
        message,
    })?;
    Ok(vec![svg_path, png_path])
}

fn de<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Label of category `x` (an integer position) on a categorical f64 axis.
fn category_label(names: &[String], x: f64) -> String {
    let i = x.round();
    if (x - i).abs() > 1e-6 || i < 0.0 {
        return String::new();
    }
    names.get(i as usize).cloned().unwrap_or_default()
}

/// Axis range covering `values` and 0, padded by 10 % of the span below
/// (only when negative) and by `top` × span above, which leaves the legend
/// room (±5 when flat).
fn padded_range(values: impl Iterator<Item = f64>, top: f64) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let span = if hi > lo { hi - lo } else { 50.0 };
    (if lo < 0.0 { lo - 0.1 * span } else { 0.0 })..(hi + top * span)
}

/// Headroom above the data for legends, fraction of the data span.
const LEGEND_ROOM: f64 = 0.35;

fn draw_scenario<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    s: &ScenarioSummary,
    runs: &[&RunSaving],
) -> Result<(), String> {
    root.fill(&WHITE).map_err(de)?;
    let title = format!(
        "Scenario {} — {} run(s), mean saving W {:.2} %",
        s.name, s.runs, s.mean_saving_pct
    );
    let root = root.titled(&title, (FONT, 24)).map_err(de)?;
    let half = root.dim_in_pixel().1 as i32 / 2;
    let (top, bottom) = root.split_vertically(half);
    let names: Vec<String> = runs.iter().map(|r| r.run.clone()).collect();
    let label = |x: &f64| category_label(&names, *x);
    let n = runs.len();
    let x_range = -0.5..(n as f64 - 0.5);
    let x_labels = n.min(MAX_X_LABELS) + 1;

    let bytes_range = padded_range(
        runs.iter()
            .flat_map(|r| [r.client_server_bytes as f64, r.p2p_bytes as f64]),
        LEGEND_ROOM,
    );
    let mut chart = ChartBuilder::on(&top)
        .margin(12)
        .caption(
            "CDN bytes per run: D_cs (client-server) and D_p2p (peer-assisted)",
            (FONT, 18),
        )
        .x_label_area_size(36)
        .y_label_area_size(90)
        .build_cartesian_2d(x_range.clone(), bytes_range)
        .map_err(de)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(x_labels)
        .x_label_formatter(&label)
        .y_label_formatter(&|y| human_bytes(*y))
        .x_desc("run")
        .y_desc("CDN bytes")
        .draw()
        .map_err(de)?;
    chart
        .draw_series(runs.iter().enumerate().map(|(i, r)| {
            Rectangle::new(
                [(i as f64 - 0.4, 0.0), (i as f64, r.client_server_bytes as f64)],
                CS_COLOR.filled(),
            )
        }))
        .map_err(de)?
        .label("D_cs, without P2P")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], CS_COLOR.filled()));
    chart
        .draw_series(runs.iter().enumerate().map(|(i, r)| {
            Rectangle::new(
                [(i as f64, 0.0), (i as f64 + 0.4, r.p2p_bytes as f64)],
                P2P_COLOR.filled(),
            )
        }))
        .map_err(de)?
        .label("D_p2p, with P2P")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], P2P_COLOR.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()
        .map_err(de)?;

    let saving_range = padded_range(
        runs.iter().map(|r| r.saving_pct).chain([s.mean_saving_pct]),
        LEGEND_ROOM,
    );
    let mut chart = ChartBuilder::on(&bottom)
        .margin(12)
        .caption("Saving per run: W = (D_cs − D_p2p) / D_cs", (FONT, 18))
        .x_label_area_size(36)
        .y_label_area_size(90)
        .build_cartesian_2d(x_range, saving_range)
        .map_err(de)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(x_labels)
        .x_label_formatter(&label)
        .y_label_formatter(&|y| format!("{y:.0} %"))
        .x_desc("run")
        .y_desc("saving W (%)")
        .draw()
        .map_err(de)?;
    let points: Vec<(f64, f64)> = runs.iter().enumerate().map(|(i, r)| (i as f64, r.saving_pct)).collect();
    chart
        .draw_series(LineSeries::new(points.clone(), SAVING_COLOR.stroke_width(2)))
        .map_err(de)?
        .label("W per run")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], SAVING_COLOR.stroke_width(2)));
    chart
        .draw_series(points.iter().map(|&p| Circle::new(p, 4, SAVING_COLOR.filled())))
        .map_err(de)?;
    let mean = s.mean_saving_pct;
    chart
        .draw_series(DashedLineSeries::new(
            vec![(-0.5, mean), (n as f64 - 0.5, mean)],
            8,
            6,
            BLACK.stroke_width(2),
        ))
        .map_err(de)?
        .label(format!("mean W = {mean:.2} % (stdev {:.2})", s.stdev_saving_pct))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()
        .map_err(de)?;
    root.present().map_err(de)
}

fn draw_summary<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, report: &Report) -> Result<(), String> {
    root.fill(&WHITE).map_err(de)?;
    let scenarios = &report.scenarios;
    let names: Vec<String> = scenarios.iter().map(|s| s.name.clone()).collect();
    let label = |x: &f64| category_label(&names, *x);
    let m = scenarios.len();
    let y_range = padded_range(
        scenarios.iter().flat_map(|s| {
            [
                s.mean_saving_pct - s.stdev_saving_pct,
                s.mean_saving_pct + s.stdev_saving_pct,
            ]
        }),
        LEGEND_ROOM,
    );
    let mut chart = ChartBuilder::on(&root)
        .margin(16)
        .caption(
            "Mean saving W per scenario, ± population standard deviation",
            (FONT, 22),
        )
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.5..(m as f64 - 0.5), y_range)
        .map_err(de)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(m.min(MAX_X_LABELS) + 1)
        .x_label_formatter(&label)
        .y_label_formatter(&|y| format!("{y:.0} %"))
        .x_desc("scenario")
        .y_desc("mean saving W (%)")
        .draw()
        .map_err(de)?;
    chart
        .draw_series(scenarios.iter().enumerate().map(|(i, s)| {
            let (x, w) = (i as f64, s.mean_saving_pct);
            Rectangle::new(
                [(x - 0.3, w.min(0.0)), (x + 0.3, w.max(0.0))],
                SAVING_COLOR.mix(0.8).filled(),
            )
        }))
        .map_err(de)?
        .label("mean W")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], SAVING_COLOR.mix(0.8).filled()));
    let style = ERROR_COLOR.stroke_width(2);
    chart
        .draw_series(scenarios.iter().enumerate().flat_map(|(i, s)| {
            let (x, lo, hi) = (
                i as f64,
                s.mean_saving_pct - s.stdev_saving_pct,
                s.mean_saving_pct + s.stdev_saving_pct,
            );
            [
                PathElement::new(vec![(x, lo), (x, hi)], style),
                PathElement::new(vec![(x - 0.1, lo), (x + 0.1, lo)], style),
                PathElement::new(vec![(x - 0.1, hi), (x + 0.1, hi)], style),
            ]
        }))
        .map_err(de)?
        .label("± stdev of W")
        .legend(move |(x, y)| PathElement::new(vec![(x + 7, y - 6), (x + 7, y + 6)], style));
    chart
        .draw_series(scenarios.iter().enumerate().map(|(i, s)| {
            let text = format!("{:.1} ± {:.1} %", s.mean_saving_pct, s.stdev_saving_pct);
            Text::new(
                text,
                (i as f64 + 0.12, s.mean_saving_pct),
                (FONT, 14).into_font().color(&BLACK),
            )
        }))
        .map_err(de)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()
        .map_err(de)?;
    root.present().map_err(de)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_stems_and_labels() {
        assert_eq!(
            scenario_file_stem(0, "Flash crowd, 100 peers!"),
            "scenario-01-flash-crowd-100-peers"
        );
        assert_eq!(scenario_file_stem(11, "???"), "scenario-12-unnamed");
        assert_eq!(human_bytes(999.0), "999 B");
        assert_eq!(human_bytes(1_500_000_000.0), "1.50 GB");
        let names = vec!["a".to_string(), "b".to_string()];
        assert_eq!(category_label(&names, 1.0), "b");
        assert_eq!(category_label(&names, 0.5), "");
        assert_eq!(category_label(&names, 2.0), "");
        assert_eq!(category_label(&names, -1.0), "");
        assert_eq!(padded_range([10.0, 20.0].into_iter(), 0.1), 0.0..22.0);
        assert_eq!(padded_range([-10.0, 10.0].into_iter(), 0.5), -12.0..20.0);
        assert_eq!(padded_range(std::iter::empty(), 0.1), 0.0..5.0);
    }
}
