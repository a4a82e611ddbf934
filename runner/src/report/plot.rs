//! The plots, drawn with plotters into SVG text that the page inlines: latency of every send and
//! every poll over time (one point per operation, colour and shape by outcome), and throughput
//! over time. Every plot shades the nemesis windows and labels them above the plotting area, so
//! that a reader sees at a glance what each fault did to the clients.

use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::input::{NemesisWindow, RunData, TimedOperation};
use super::ReportError;

/// Width and height of every plot, in SVG pixels (the page scales them to its width).
const PLOT_WIDTH_PX: u32 = 1100;
const PLOT_HEIGHT_PX: u32 = 380;
/// Points drawn per (plot, outcome) at most: a ten-minute run has hundreds of thousands of
/// operations and each point is about 100 bytes of SVG. Above it, every k-th operation is drawn
/// and the caption says so; failed and indeterminate operations are rare and all of them are
/// usually below the bound.
pub(crate) const LATENCY_POINTS_PER_SERIES_MAX: usize = 20_000;
/// Throughput bins at most; a bin is a whole number of seconds wide.
const THROUGHPUT_BINS_MAX: u64 = 600;
/// Height of one row of window labels, in pixels (windows whose labels would overlap stack
/// them in rows).
const LABEL_ROW_PX: i32 = 16;
/// Rows of window labels; a window whose label finds no room in any row is not labelled. The
/// labels sit in a strip above the plotting area, so they never hide a point or the legend.
const LABEL_ROWS_MAX: usize = 2;
/// Height of that strip, in pixels.
const LABEL_STRIP_PX: u32 = 6 + LABEL_ROW_PX as u32 * LABEL_ROWS_MAX as u32;
/// Opacity of a window's shading.
pub(crate) const WINDOW_OPACITY: f64 = 0.16;

const NANOS_PER_SECOND: f64 = 1e9;
const NANOS_PER_MILLISECOND: f64 = 1e6;

const COLOR_OK: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
pub(crate) const COLOR_FAIL: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const COLOR_INFO: RGBColor = RGBColor(0xe6, 0x8a, 0x00);
const COLOR_POLLED: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
const COLOR_GRID: RGBColor = RGBColor(0xe4, 0xe4, 0xe4);

/// The colour of a nemesis kind, shared by the plots' shading and the page's legend.
pub(crate) fn window_color(kind: &str) -> RGBColor {
    match kind {
        "kill" => RGBColor(0x6f, 0x6f, 0x6f),
        "pause" => RGBColor(0x94, 0x67, 0xbd),
        "partition" => RGBColor(0xe3, 0x37, 0xa2),
        "latency" => RGBColor(0x17, 0xbe, 0xcf),
        "loss" => RGBColor(0x8c, 0x56, 0x4b),
        "clock" => RGBColor(0xbc, 0xbd, 0x22),
        _ => RGBColor(0x99, 0x99, 0x99),
    }
}

/// `#rrggbb` of a colour, as plotters writes it into the SVG.
pub(crate) fn hex(color: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", color.0, color.1, color.2)
}

/// A drawn plot and what the reader must know about it.
#[derive(Debug)]
pub(crate) struct Plot {
    /// Element id on the page.
    pub id: &'static str,
    pub title: String,
    /// Inline `<svg>...</svg>`.
    pub svg: String,
    /// Sentences for the caption (thinning, operations that never completed, ...).
    pub notes: Vec<String>,
}

/// Which operations a latency plot shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LatencyOf {
    Send,
    Poll,
    /// Requests to the cluster other than sends and polls: end-offset reads, group commits and
    /// committed-offset reads (the group workloads'). Client-side events (assign, seek, ...) and
    /// the nemesis's crash and restart events have no latency worth drawing.
    Other,
}

impl LatencyOf {
    fn name(self) -> &'static str {
        match self {
            LatencyOf::Send => "send",
            LatencyOf::Poll => "poll",
            LatencyOf::Other => "other request",
        }
    }

    fn selects(self, timed: &TimedOperation) -> bool {
        match self {
            LatencyOf::Send => timed.is_send(),
            LatencyOf::Poll => timed.is_poll(),
            LatencyOf::Other => matches!(
                timed.operation.kind,
                brook_jepsen::OpKind::EndOffset { .. }
                    | brook_jepsen::OpKind::Commit { .. }
                    | brook_jepsen::OpKind::FetchCommitted { .. }
            ),
        }
    }

    /// True if the history has an operation this plot would draw.
    pub fn has_operations(self, data: &RunData) -> bool {
        data.operations.iter().any(|timed| self.selects(timed))
    }
}

fn plot_error(plot: &'static str) -> impl Fn(String) -> ReportError {
    move |message| ReportError::Plot { plot, message }
}

/// The x axis of every plot: seconds since the run started, to the end of the run.
fn time_axis_seconds(data: &RunData) -> f64 {
    // A run shorter than a millisecond (a test) still gets a usable axis.
    (data.run_end_ns() as f64 / NANOS_PER_SECOND).max(0.001)
}

/// Latency of every operation of one type over time, by outcome, on a log scale.
pub(crate) fn latency_plot(data: &RunData, of: LatencyOf) -> Result<Plot, ReportError> {
    let id = match of {
        LatencyOf::Send => "plot-latency-send",
        LatencyOf::Poll => "plot-latency-poll",
        LatencyOf::Other => "plot-latency-other",
    };
    let error = plot_error(id);
    let run_end_ns = data.run_end_ns();
    let x_max = time_axis_seconds(data);
    let mut notes = Vec::new();

    let selected: Vec<&TimedOperation> = data
        .operations
        .iter()
        .filter(|timed| of.selects(timed))
        .collect();
    let never_completed = selected
        .iter()
        .filter(|timed| timed.end_ns.is_none())
        .count();
    if never_completed > 0 {
        notes.push(format!(
            "{never_completed} {} operation(s) never completed; they are drawn as info with \
             their latency counted to the end of the run.",
            of.name()
        ));
    }
    let latencies_ms: Vec<f64> = selected
        .iter()
        .map(|timed| timed.latency_ns(run_end_ns) as f64 / NANOS_PER_MILLISECOND)
        .collect();
    // Log scale: from below the fastest to above the slowest operation, in decades.
    let positive = latencies_ms
        .iter()
        .copied()
        .filter(|latency| *latency > 0.0);
    let fastest = positive.clone().fold(f64::INFINITY, f64::min);
    let slowest = positive.fold(0.0, f64::max);
    let (y_min, y_max) = if slowest > 0.0 {
        (
            10f64.powf(fastest.log10().floor()).max(1e-4),
            // Headroom above the slowest point for the window labels.
            10f64.powf((slowest * 3.0).log10().ceil()).max(1e-3),
        )
    } else {
        (0.01, 1000.0)
    };

    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (PLOT_WIDTH_PX, PLOT_HEIGHT_PX)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| error(e.to_string()))?;
        let mut chart = chart_layout(&root)
            .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())
            .map_err(|e| error(e.to_string()))?;
        mesh_style(&mut chart.configure_mesh())
            .y_desc(format!("{} latency (ms, log)", of.name()))
            .y_label_formatter(&|value| format_latency_ms(*value))
            .draw()
            .map_err(|e| error(e.to_string()))?;
        let windows = PlacedWindows::shade(&root, &data.windows, &chart, |seconds| {
            chart.backend_coord(&(seconds, y_min)).0
        })
        .map_err(&error)?;

        for (outcome, color) in [
            (brook_jepsen::Outcome::Ok, COLOR_OK),
            (brook_jepsen::Outcome::Fail, COLOR_FAIL),
            (brook_jepsen::Outcome::Info, COLOR_INFO),
        ] {
            let points: Vec<(f64, f64)> = selected
                .iter()
                .zip(&latencies_ms)
                .filter(|(timed, _)| timed.outcome() == outcome)
                .map(|(timed, latency)| {
                    (
                        timed.start_ns as f64 / NANOS_PER_SECOND,
                        latency.clamp(y_min, y_max),
                    )
                })
                .collect();
            let total = points.len();
            let stride = total.div_ceil(LATENCY_POINTS_PER_SERIES_MAX).max(1);
            if stride > 1 {
                notes.push(format!(
                    "{outcome}: 1 of every {stride} of the {total} operations is drawn."
                ));
            }
            let label = format!("{outcome} ({total})");
            let drawn = points.into_iter().step_by(stride);
            match outcome {
                brook_jepsen::Outcome::Ok => {
                    chart
                        .draw_series(
                            drawn.map(|point| Circle::new(point, 2, color.mix(0.7).filled())),
                        )
                        .map_err(|e| error(e.to_string()))?
                        .label(label)
                        .legend(move |point| Circle::new(point, 3, color.filled()));
                }
                brook_jepsen::Outcome::Fail => {
                    chart
                        .draw_series(drawn.map(|point| Cross::new(point, 4, color.stroke_width(2))))
                        .map_err(|e| error(e.to_string()))?
                        .label(label)
                        .legend(move |point| Cross::new(point, 4, color.stroke_width(2)));
                }
                brook_jepsen::Outcome::Info => {
                    chart
                        .draw_series(
                            drawn.map(|point| TriangleMarker::new(point, 4, color.filled())),
                        )
                        .map_err(|e| error(e.to_string()))?
                        .label(label)
                        .legend(move |point| TriangleMarker::new(point, 4, color.filled()));
                }
            }
        }
        finish_chart(&root, &mut chart, &windows, &mut notes).map_err(&error)?;
    }
    Ok(Plot {
        id,
        title: format!(
            "Latency of every {} over time, by outcome ({} operations)",
            of.name(),
            selected.len()
        ),
        svg,
        notes,
    })
}

/// The layout every plot shares: its margins, the strip above the plotting area for the window
/// labels, and room for the axes' labels.
fn chart_layout<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .margin(12)
        .margin_top(LABEL_STRIP_PX)
        .x_label_area_size(40)
        .y_label_area_size(64);
    builder
}

/// The grid and axis text every plot shares (time on the x axis); the caller names the y axis.
fn mesh_style<'m, 'a, 'b, X: Ranged, Y: Ranged, DB: DrawingBackend>(
    mesh: &'m mut MeshStyle<'a, 'b, X, Y, DB>,
) -> &'m mut MeshStyle<'a, 'b, X, Y, DB> {
    mesh.bold_line_style(COLOR_GRID)
        .light_line_style(TRANSPARENT)
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .x_desc("time since the run started (s)")
}

/// What every plot ends with: the legend in the upper right corner, the nemesis windows
/// labelled above the plotting area (a note when some found no room), and the SVG written out.
fn finish_chart<'a, 'b: 'a, CT: CoordTranslate>(
    root: &DrawingArea<SVGBackend<'b>, Shift>,
    chart: &mut ChartContext<'a, SVGBackend<'b>, CT>,
    windows: &PlacedWindows<'_>,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(|e| e.to_string())?;
    let labelled = label_windows(root, windows.windows, &windows.spans, &windows.plot_pixels)?;
    if labelled < windows.windows.len() {
        notes.push(unlabelled_note(labelled, windows.windows.len()));
    }
    root.present().map_err(|e| e.to_string())
}

fn unlabelled_note(labelled: usize, windows: usize) -> String {
    format!(
        "{labelled} of the {windows} fault windows are labelled; the others were too close \
         together for a label (their colour says the kind; the table of nemesis windows below lists \
         them all)."
    )
}

fn format_latency_ms(value: f64) -> String {
    if value >= 1.0 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}

/// Throughput over time: acknowledged sends and polled records per second, and sends that
/// failed or ended indeterminate per second, in bins of at least one second.
pub(crate) fn throughput_plot(data: &RunData) -> Result<Plot, ReportError> {
    let id = "plot-throughput";
    let error = plot_error(id);
    let run_end_ns = data.run_end_ns();
    let x_max = time_axis_seconds(data);
    // Whole seconds, so that the rate of a bin reads as "per second" at a glance.
    let bin_ns = run_end_ns
        .div_ceil(THROUGHPUT_BINS_MAX)
        .div_ceil(1_000_000_000)
        .max(1)
        * 1_000_000_000;
    let bins = usize::try_from(run_end_ns / bin_ns + 1).unwrap_or(1);
    let bin_seconds = bin_ns as f64 / NANOS_PER_SECOND;

    // The final drain reads the whole backlog within a second or two; drawn, it would flatten
    // the run's own throughput into the axis. A poll invoked after the last send completed is
    // the drain's, and it is counted in the caption instead.
    let last_send_ns = data
        .operations
        .iter()
        .filter(|timed| timed.is_send())
        .map(|timed| timed.end_ns.unwrap_or(run_end_ns))
        .max();
    let mut drain_polls = 0u64;
    let mut drain_records = 0u64;
    let mut sends_ok = vec![0u64; bins];
    let mut sends_not_ok = vec![0u64; bins];
    let mut records_polled = vec![0u64; bins];
    for timed in &data.operations {
        // Counted when the client learned the outcome.
        let at_ns = timed.end_ns.unwrap_or(run_end_ns);
        let bin = usize::try_from(at_ns / bin_ns).unwrap_or(0).min(bins - 1);
        match &timed.operation.kind {
            brook_jepsen::OpKind::Send { .. } => {
                if timed.outcome() == brook_jepsen::Outcome::Ok {
                    sends_ok[bin] += 1;
                } else {
                    sends_not_ok[bin] += 1;
                }
            }
            brook_jepsen::OpKind::Poll { records }
                if timed.outcome() == brook_jepsen::Outcome::Ok =>
            {
                if last_send_ns.is_some_and(|last| timed.start_ns > last) {
                    drain_polls += 1;
                    drain_records += records.len() as u64;
                } else {
                    records_polled[bin] += records.len() as u64;
                }
            }
            _ => {}
        }
    }
    let rate = |counts: &[u64]| -> Vec<(f64, f64)> {
        counts
            .iter()
            .enumerate()
            .map(|(bin, count)| {
                (
                    (bin as f64 + 0.5) * bin_seconds,
                    *count as f64 / bin_seconds,
                )
            })
            .collect()
    };
    let mut notes = Vec::new();
    if drain_polls > 0 {
        notes.push(format!(
            "Not drawn: the final drain, {drain_polls} poll(s) invoked after the last send \
             completed, which read {drain_records} records."
        ));
    }
    let series = [
        ("sends ok /s", COLOR_OK, rate(&sends_ok)),
        ("records polled /s", COLOR_POLLED, rate(&records_polled)),
        ("sends fail or info /s", COLOR_FAIL, rate(&sends_not_ok)),
    ];
    let y_max = series
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|(_, rate)| *rate))
        .fold(1.0, f64::max)
        * 1.15;

    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (PLOT_WIDTH_PX, PLOT_HEIGHT_PX)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| error(e.to_string()))?;
        let mut chart = chart_layout(&root)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(|e| error(e.to_string()))?;
        mesh_style(&mut chart.configure_mesh())
            .y_desc("per second")
            .draw()
            .map_err(|e| error(e.to_string()))?;
        let windows = PlacedWindows::shade(&root, &data.windows, &chart, |seconds| {
            chart.backend_coord(&(seconds, 0.0)).0
        })
        .map_err(&error)?;
        for (name, color, points) in series {
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| error(e.to_string()))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        finish_chart(&root, &mut chart, &windows, &mut notes).map_err(&error)?;
    }
    Ok(Plot {
        id,
        title: format!(
            "Throughput over time (bins of {} s)",
            format_seconds(bin_seconds)
        ),
        svg,
        notes,
    })
}

fn format_seconds(seconds: f64) -> String {
    if seconds.fract() == 0.0 {
        format!("{seconds:.0}")
    } else {
        format!("{seconds:.3}")
    }
}

type PixelRange = (std::ops::Range<i32>, std::ops::Range<i32>);

/// The nemesis windows of one plot, placed on its plotting area.
struct PlacedWindows<'a> {
    windows: &'a [NemesisWindow],
    /// Each window's horizontal extent in pixels (see `window_spans`).
    spans: Vec<(i32, i32)>,
    plot_pixels: PixelRange,
}

impl<'a> PlacedWindows<'a> {
    /// Places every window on `chart`'s plotting area (`to_x`: seconds to a pixel column) and
    /// shades it, before the data is drawn.
    fn shade<CT: CoordTranslate>(
        root: &DrawingArea<SVGBackend<'_>, Shift>,
        windows: &'a [NemesisWindow],
        chart: &ChartContext<'_, SVGBackend<'_>, CT>,
        to_x: impl Fn(f64) -> i32,
    ) -> Result<PlacedWindows<'a>, String> {
        let plot_pixels = chart.plotting_area().get_pixel_range();
        let spans = window_spans(windows, &plot_pixels, to_x);
        shade_windows(root, windows, &spans, &plot_pixels)?;
        Ok(PlacedWindows {
            windows,
            spans,
            plot_pixels,
        })
    }
}

/// Every window's horizontal extent in pixels, clipped to the plotting area and at least 2 px
/// wide so that an instantaneous fault is still visible.
fn window_spans(
    windows: &[NemesisWindow],
    plot_pixels: &PixelRange,
    to_x: impl Fn(f64) -> i32,
) -> Vec<(i32, i32)> {
    let (x_range, _) = plot_pixels;
    windows
        .iter()
        .map(|window| {
            let start = to_x(window.start_ns as f64 / NANOS_PER_SECOND);
            let end = to_x(window.end_ns.max(window.start_ns) as f64 / NANOS_PER_SECOND);
            let start = start.clamp(x_range.start, x_range.end);
            let end = end.clamp(x_range.start, x_range.end).max(start + 2);
            (start, end)
        })
        .collect()
}

/// Shades every nemesis window over the full height of the plotting area (drawn before the
/// data, so the points stay on top).
fn shade_windows(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    windows: &[NemesisWindow],
    spans: &[(i32, i32)],
    plot_pixels: &PixelRange,
) -> Result<(), String> {
    let (_, y_range) = plot_pixels;
    for (window, &(start, end)) in windows.iter().zip(spans) {
        let color = window_color(&window.kind);
        root.draw(&Rectangle::new(
            [(start, y_range.start), (end, y_range.end)],
            color.mix(WINDOW_OPACITY).filled(),
        ))
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Labels every window in the strip above the plotting area, at the window's left edge;
/// a label that would overlap an earlier one takes the next row down.
fn label_windows(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    windows: &[NemesisWindow],
    spans: &[(i32, i32)],
    plot_pixels: &PixelRange,
) -> Result<usize, String> {
    let (x_range, y_range) = plot_pixels;
    // Per row: the pixel where its last label ends.
    let mut row_ends: Vec<i32> = vec![i32::MIN; LABEL_ROWS_MAX];
    let mut labelled = 0;
    for (window, &(start, _)) in windows.iter().zip(spans) {
        let label = window.label();
        // The naive font measure of plotters' SVG backend: about 8 px per character at this size.
        let label_width = i32::try_from(label.chars().count()).unwrap_or(i32::MAX / 16) * 8;
        // Keep a label near the right edge inside the picture.
        let x = (start + 2).min(x_range.end - label_width).max(0);
        // No room left in any row (a long run's windows are close): the shading and the
        // table below say what it was.
        let Some(row) = row_ends.iter().position(|&end| end <= x) else {
            continue;
        };
        row_ends[row] = x + label_width + 4;
        let color = window_color(&window.kind);
        let style = ("sans-serif", 15).into_font().color(&color);
        let strip_top = y_range.start - i32::try_from(LABEL_STRIP_PX).unwrap_or(0);
        let y = strip_top + 2 + LABEL_ROW_PX * i32::try_from(row).unwrap_or(0);
        root.draw(&Text::new(label, (x, y), style))
            .map_err(|e| e.to_string())?;
        labelled += 1;
    }
    Ok(labelled)
}
