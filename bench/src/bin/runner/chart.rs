//! The chart: six panels of bars in one SVG (plotters, SVG backend, no fonts needed).

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{idle_median, med, syscalls_median};
use crate::{Results, SERVERS, Settings};

/// One per server, in the order of [`SERVERS`].
const COLORS: [RGBColor; SERVERS.len()] = [
    RGBColor(90, 90, 90),    // C
    RGBColor(214, 39, 40),   // aio callbacks
    RGBColor(247, 129, 191), // aio callbacks, persistent read
    RGBColor(255, 127, 14),  // aio async
    RGBColor(188, 189, 34),  // aio async, persistent read
    RGBColor(31, 119, 180),  // tokio
    RGBColor(44, 160, 44),   // Asio
    RGBColor(148, 103, 189), // libuv
    RGBColor(140, 86, 75),   // aio callbacks on io_uring
    RGBColor(23, 190, 207),  // aio callbacks on poll
];

fn short(key: &str) -> &str {
    match key {
        "c" => "C epoll",
        "aio" => "aio cb",
        "aio-stream" => "aio each",
        "aio-async" => "aio async",
        "aio-async-stream" => "aio async each",
        "tokio" => "tokio",
        "asio" => "Asio",
        "libuv" => "libuv",
        "aio-uring" => "aio uring",
        "aio-poll" => "aio poll",
        other => other,
    }
}

fn color(key: &str) -> RGBColor {
    let i = SERVERS.iter().position(|s| s.key == key).unwrap_or(0);
    COLORS[i]
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Category names under the x axis, centred on 0.5, 1.5, ... (plotters places its own labels for
/// numeric axes, and clamps chart coordinates to the plot), drawn on the panel in pixels.
fn category_labels(
    area: &Area,
    chart: &ChartContext<'_, SVGBackend<'_>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    labels: &[String],
) -> Result<(), String> {
    let style =
        TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    let (base_x, base_y) = area.get_base_pixel();
    for (i, label) in labels.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        // A long name goes on two lines (at its last space), so that neighbours do not overlap.
        let lines = match label.rsplit_once(' ') {
            Some((head, tail)) if label.len() > 10 => vec![head, tail],
            _ => vec![label.as_str()],
        };
        for (line, text) in lines.into_iter().enumerate() {
            area.draw(&Text::new(
                text.to_string(),
                (x - base_x, y - base_y + 4 + 11 * line as i32),
                style.clone(),
            ))
            .map_err(err)?;
        }
    }
    Ok(())
}

/// A panel's axes: one category per label along x (labelled under it), 0 to `top` along y.
fn axes<'a, 'b>(
    area: &'a Area<'b>,
    title: &str,
    labels: &[String],
    top: f64,
    fmt: &dyn Fn(f64) -> String,
) -> Result<ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>, String> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..labels.len().max(1) as f64, 0f64..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_style(("sans-serif", 12))
        .y_label_formatter(&|v| fmt(*v))
        .draw()
        .map_err(err)?;
    category_labels(area, &chart, labels)?;
    Ok(chart)
}

/// A panel with nothing to show.
fn empty(area: &Area, title: &str) -> Result<(), String> {
    area.titled(title, ("sans-serif", 17))
        .map_err(err)?
        .draw(&Text::new(
            "not measured",
            (20, 40),
            ("sans-serif", 14).into_font().color(&BLACK.mix(0.6)),
        ))
        .map_err(err)
}

/// Bars, one per server, with their values written above them.
fn bars(
    area: &Area,
    title: &str,
    keys: &[&str],
    values: &[Option<f64>],
    fmt: &dyn Fn(f64) -> String,
) -> Result<(), String> {
    let max = values.iter().flatten().cloned().fold(0.0, f64::max);
    if max <= 0.0 {
        return empty(area, title);
    }
    let top = max * 1.2;
    let labels: Vec<String> = keys.iter().map(|k| short(k).to_string()).collect();
    let mut chart = axes(area, title, &labels, top, fmt)?;
    for (i, (key, v)) in keys.iter().zip(values).enumerate() {
        let Some(v) = *v else { continue };
        let x = i as f64;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x + 0.15, 0.0), (x + 0.85, v)],
                color(key).filled(),
            )))
            .map_err(err)?;
        let style = TextStyle::from(("sans-serif", 12).into_font())
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        chart
            .draw_series(std::iter::once(Text::new(
                fmt(v),
                (x + 0.5, v + top * 0.01),
                style,
            )))
            .map_err(err)?;
    }
    Ok(())
}

/// Grouped bars: per scenario, one bar per server, as a ratio to the C server.
fn grouped(
    area: &Area,
    settings: &Settings,
    results: &Results,
    keys: &[&str],
) -> Result<(), String> {
    let scenarios: Vec<_> = settings
        .scenarios()
        .into_iter()
        .filter(|s| results.throughput.contains_key(s.key))
        .collect();
    if scenarios.is_empty() {
        return empty(area, "Messages/s relative to C (median)");
    }
    let n = scenarios.len().max(1);
    let ratio = |sc: &str, k: &str| match (
        med(results, sc, k, |s| s.msgs_per_sec),
        med(results, sc, "c", |s| s.msgs_per_sec),
    ) {
        (Some(v), Some(c)) if c > 0.0 => Some(v / c),
        _ => None,
    };
    let max = scenarios
        .iter()
        .flat_map(|sc| {
            keys.iter()
                .filter_map(|k| ratio(sc.key, k))
                .collect::<Vec<_>>()
        })
        .fold(1.0, f64::max);
    let top = max * 1.6; // headroom for the legend
    let labels: Vec<String> = scenarios
        .iter()
        .map(|s| match s.key {
            "pingpong" => "64x64 B",
            "inflight" => "64x64 B x16",
            "conns1000" => "1,000 conns",
            "large" => "8x64 KiB",
            "unix" => "64x64 B unix",
            other => other,
        })
        .map(str::to_string)
        .collect();
    let mut chart = axes(
        area,
        "Messages/s relative to C (median)",
        &labels,
        top,
        &|v| format!("{v:.1}"),
    )?;
    let width = 0.84 / keys.len().max(1) as f64;
    for (j, key) in keys.iter().enumerate() {
        let rects: Vec<_> = scenarios
            .iter()
            .enumerate()
            .filter_map(|(i, sc)| {
                let v = ratio(sc.key, key)?;
                let x0 = i as f64 + 0.08 + j as f64 * width;
                Some(Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.9, v)],
                    color(key).filled(),
                ))
            })
            .collect();
        let c = color(key);
        chart
            .draw_series(rects)
            .map_err(err)?
            .label(short(key))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, 1.0), (n as f64, 1.0)],
            BLACK.mix(0.5),
        ))
        .map_err(err)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(err)?;
    Ok(())
}

pub fn draw(path: &Path, settings: &Settings, results: &Results) -> Result<(), String> {
    let root = SVGBackend::new(path, (1500, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled(
            "aio echo benchmarks: single-threaded servers, one load generator (see BENCHMARKS.md)",
            ("sans-serif", 22),
        )
        .map_err(err)?;
    let panels = root.split_evenly((2, 3));
    let keys: Vec<&str> = settings.servers().iter().map(|s| s.key).collect();

    grouped(&panels[0], settings, results, &keys)?;
    let cpu: Vec<_> = keys
        .iter()
        .map(|k| med(results, "pingpong", k, |s| s.cpu_us_per_msg))
        .collect();
    bars(
        &panels[1],
        "Server CPU µs per message (64x64 B)",
        &keys,
        &cpu,
        &|v| format!("{v:.2}"),
    )?;
    let instr: Vec<_> = keys
        .iter()
        .map(|k| results.callgrind.get(*k).map(|r| r.per_msg))
        .collect();
    bars(
        &panels[2],
        "User-space instructions per message (callgrind)",
        &keys,
        &instr,
        &|v| format!("{v:.0}"),
    )?;
    let sys: Vec<_> = keys.iter().map(|k| syscalls_median(results, k)).collect();
    bars(
        &panels[3],
        "Syscalls per message (64x64 B)",
        &keys,
        &sys,
        &|v| format!("{v:.2}"),
    )?;
    let p99: Vec<_> = keys
        .iter()
        .map(|k| med(results, "pingpong", k, |s| s.p99_us))
        .collect();
    bars(
        &panels[4],
        "p99 latency µs (64x64 B ping-pong)",
        &keys,
        &p99,
        &|v| format!("{v:.0}"),
    )?;
    let idle: Vec<_> = keys.iter().map(|k| idle_median(results, k)).collect();
    bars(
        &panels[5],
        "Server bytes per idle connection",
        &keys,
        &idle,
        &|v| format!("{v:.0}"),
    )?;
    root.present().map_err(err)?;
    Ok(())
}
