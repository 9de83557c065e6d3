//! A picture of one episode as a self-contained SVG (hand-written, no dependency): the trunk's
//! path seen from above (x–y, equal scales), its height over time, and the hip and knee
//! angles over time, with the firmware's safety trip marked if one stopped the episode.

use std::fmt::Write;

use super::body::{JOINTS, JOINT_NAMES};
use super::Replay;

const WIDTH: f32 = 960.0;
const HEIGHT: f32 = 860.0;
/// One colour per leg (fl, fr, rl, rr).
const LEG_COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"];

/// A line of a panel: colour, legend label, points (x, y).
struct Series<'a> {
    colour: &'a str,
    label: &'a str,
    points: Vec<(f32, f32)>,
}

/// A plot area on the page.
struct Panel<'a> {
    x: f32,
    y: f32,
    w: f32,
    h: f32,
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
}

/// Tick positions covering [lo, hi] with a "nice" step (1, 2 or 5 × 10ⁿ).
fn ticks(lo: f32, hi: f32, target: usize) -> Vec<f32> {
    let span = (hi - lo).max(1e-9);
    let raw = span / target.max(1) as f32;
    let mag = 10f32.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= target as f32 + 0.5)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-3 {
        out.push(if t.abs() < step * 1e-6 { 0.0 } else { t });
        t += step;
    }
    out
}

/// Range of the values, padded by 5 % (and never empty).
fn range(values: impl Iterator<Item = f32>) -> (f32, f32) {
    let (mut lo, mut hi) = (f32::MAX, f32::MIN);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    (lo - pad, hi + pad)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Draws a panel with axes, ticks, a legend and its series; `mark_x` draws a vertical
/// dashed line (the trip). Returns nothing; appends to `svg`.
fn draw(
    svg: &mut String,
    p: &Panel,
    (x0, x1): (f32, f32),
    (y0, y1): (f32, f32),
    series: &[Series],
    mark_x: Option<f32>,
) {
    let sx = |x: f32| p.x + (x - x0) / (x1 - x0) * p.w;
    let sy = |y: f32| p.y + p.h - (y - y0) / (y1 - y0) * p.h;
    let _ = writeln!(
        svg,
        r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#fbfbfb" stroke="#444"/>"##,
        p.x, p.y, p.w, p.h
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="14" font-weight="bold">{}</text>"#,
        p.x,
        p.y - 8.0,
        escape(p.title)
    );
    for t in ticks(x0, x1, 8) {
        let x = sx(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
            p.y,
            p.y + p.h,
            p.y + p.h + 14.0,
            fmt_tick(t)
        );
    }
    for t in ticks(y0, y1, 5) {
        let y = sy(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            p.x,
            p.x + p.w,
            p.x - 4.0,
            y + 4.0,
            fmt_tick(t)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
        p.x + p.w / 2.0,
        p.y + p.h + 30.0,
        escape(p.x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 {:.1} {:.1})">{}</text>"#,
        p.x - 42.0,
        p.y + p.h / 2.0,
        p.x - 42.0,
        p.y + p.h / 2.0,
        escape(p.y_label)
    );
    let _ = writeln!(
        svg,
        r#"<clipPath id="c{0:.0}_{1:.0}"><rect x="{0:.1}" y="{1:.1}" width="{2:.1}" height="{3:.1}"/></clipPath>"#,
        p.x, p.y, p.w, p.h
    );
    for s in series {
        if s.points.is_empty() {
            continue;
        }
        let mut d = String::new();
        for (i, &(x, y)) in s.points.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { " L" },
                sx(x),
                sy(y)
            );
        }
        let _ = writeln!(
            svg,
            r#"<path d="{d}" fill="none" stroke="{}" stroke-width="1.5" clip-path="url(#c{:.0}_{:.0})"/>"#,
            s.colour, p.x, p.y
        );
    }
    let mut lx = p.x + 8.0;
    for s in series.iter().filter(|s| !s.label.is_empty()) {
        let ly = p.y + 14.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"/><text x="{:.1}" y="{ly:.1}" font-size="11">{}</text>"#,
            ly - 4.0,
            lx + 16.0,
            ly - 4.0,
            s.colour,
            lx + 20.0,
            escape(s.label)
        );
        lx += 28.0 + 7.0 * s.label.len() as f32;
    }
    if let Some(m) = mark_x {
        let x = sx(m);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#c00" stroke-dasharray="5,4" stroke-width="1.5"/>"##,
            p.y,
            p.y + p.h
        );
    }
}

fn fmt_tick(t: f32) -> String {
    let s = format!("{t:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// The SVG document for a replayed episode; `title` heads the page.
pub fn episode_svg(replay: &Replay, title: &str) -> String {
    let f = &replay.frames;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="20" y="26" font-size="16" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let summary = match replay.trip {
        Some((reason, value, step)) => format!(
            "{} steps, mean forward speed {:.3} m/s, return {:.2}; firmware SafetyTrip {reason} = {value:.3} at step {step}",
            f.len(),
            replay.mean_forward_speed(),
            replay.episode_return()
        ),
        None => format!(
            "{} steps, mean forward speed {:.3} m/s, return {:.2}; completed",
            f.len(),
            replay.mean_forward_speed(),
            replay.episode_return()
        ),
    };
    let _ = writeln!(
        svg,
        r#"<text x="20" y="46" font-size="12">{}</text>"#,
        escape(&summary)
    );
    let trip_t = replay
        .trip
        .and_then(|(_, _, k)| f.get(k as usize).map(|fr| fr.t));

    // Top view, equal scales on both axes.
    let path: Vec<(f32, f32)> = std::iter::once((replay.start[0], replay.start[1]))
        .chain(f.iter().map(|fr| (fr.position[0], fr.position[1])))
        .collect();
    let top = Panel {
        x: 70.0,
        y: 80.0,
        w: 400.0,
        h: 260.0,
        title: "trunk path, top view",
        x_label: "x (forward), m",
        y_label: "y (left), m",
    };
    let (mut ax0, mut ax1) = range(path.iter().map(|p| p.0));
    let (mut ay0, mut ay1) = range(path.iter().map(|p| p.1));
    let scale = ((ax1 - ax0) / top.w)
        .max((ay1 - ay0) / top.h)
        .max(0.5 / top.w);
    let (cx, cy) = ((ax0 + ax1) / 2.0, (ay0 + ay1) / 2.0);
    ax0 = cx - scale * top.w / 2.0;
    ax1 = cx + scale * top.w / 2.0;
    ay0 = cy - scale * top.h / 2.0;
    ay1 = cy + scale * top.h / 2.0;
    let start_mark = vec![(replay.start[0], replay.start[1])];
    draw(
        &mut svg,
        &top,
        (ax0, ax1),
        (ay0, ay1),
        &[
            Series {
                colour: "#333",
                label: "",
                points: path,
            },
            Series {
                colour: "#2ca02c",
                label: "",
                points: start_mark,
            },
        ],
        None,
    );
    let _ = writeln!(
        svg,
        r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="#2ca02c"/>"##,
        top.x + (replay.start[0] - ax0) / (ax1 - ax0) * top.w,
        top.y + top.h - (replay.start[1] - ay0) / (ay1 - ay0) * top.h
    );

    let t_max = f.last().map_or(1.0, |fr| fr.t).max(0.1);
    let height = Panel {
        x: 540.0,
        y: 80.0,
        w: 390.0,
        h: 260.0,
        title: "trunk height",
        x_label: "time, s",
        y_label: "height, m",
    };
    let h_points: Vec<(f32, f32)> = std::iter::once((0.0, replay.start[2]))
        .chain(f.iter().map(|fr| (fr.t, fr.position[2])))
        .collect();
    let (h0, h1) = range(h_points.iter().map(|p| p.1).chain([0.0, 0.3]));
    draw(
        &mut svg,
        &height,
        (0.0, t_max),
        (h0, h1),
        &[Series {
            colour: "#333",
            label: "",
            points: h_points,
        }],
        trip_t,
    );

    for (row, (kind, title)) in [("hip", "hip angles"), ("knee", "knee angles")]
        .iter()
        .enumerate()
    {
        let panel = Panel {
            x: 70.0,
            y: 420.0 + row as f32 * 220.0,
            w: 860.0,
            h: 170.0,
            title,
            x_label: "time, s",
            y_label: "angle, rad",
        };
        let series: Vec<Series> = (0..JOINTS)
            .filter(|j| JOINT_NAMES[*j].ends_with(kind))
            .map(|j| Series {
                colour: LEG_COLOURS[j / 2],
                label: JOINT_NAMES[j],
                points: f.iter().map(|fr| (fr.t, fr.joints[j])).collect(),
            })
            .collect();
        let (y0, y1) = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
        draw(&mut svg, &panel, (0.0, t_max), (y0, y1), &series, trip_t);
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::super::{replay, PhysicsQuadruped, RobotModel};
    use super::*;

    #[test]
    fn ticks_are_nice_and_cover_the_range() {
        assert_eq!(ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        let t = ticks(-0.13, 0.42, 5);
        assert!(t.first().unwrap() >= &-0.13 && t.last().unwrap() <= &0.42);
        assert!(t.len() >= 3);
        assert_eq!(fmt_tick(0.5), "0.5");
        assert_eq!(fmt_tick(2.0), "2");
    }

    #[test]
    fn svg_has_the_four_panels_and_every_joint() {
        let m = PhysicsQuadruped::new(1, 0.0, false);
        let v: Vec<f32> = m.params().iter().map(|p| p.default).collect();
        let r = replay(&m, &v, 1, 20);
        let svg = episode_svg(&r, "defaults <test>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for text in [
            "trunk path, top view",
            "trunk height",
            "hip angles",
            "knee angles",
            "defaults &lt;test&gt;",
        ] {
            assert!(svg.contains(text), "{text}");
        }
        for name in JOINT_NAMES {
            assert!(svg.contains(name), "{name}");
        }
        assert!(!svg.contains("NaN"));
    }
}
