//! Output of a run: the summary table (stdout), `result.json`, `report.html` (inline SVG
//! plots) and `plot.png` (the rates plot, drawn on [`crate::raster`]'s canvas with its
//! built-in bitmap font — no font file or system library needed). Every plot carries a
//! title naming the run, axis titles with units, tick labels and a legend in words.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::raster::{Canvas, Rgb};
use crate::run::RunResult;
use crate::stats::Slot;

/// The human summary.
pub fn summary(r: &RunResult) -> String {
    let c = &r.counters;
    let mut s = String::new();
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3} s"));
    let _ = writeln!(
        s,
        "uaprof-storm {} — {} phones ({} of them go silent) over {}, fetching over {}, profiles {}, {} shard(s)",
        r.scenario,
        r.phones,
        r.ghosts,
        r.transport,
        r.fetch,
        r.profiles.join(","),
        r.threads
    );
    let _ = writeln!(
        s,
        "result: {} ({}), wall {:.2} s",
        if r.completed {
            "complete"
        } else {
            "INCOMPLETE"
        },
        r.stop_reason,
        r.wall_s
    );
    let _ = writeln!(s, "\nphones");
    let _ = writeln!(s, "  booted               {:>10}", c.phones_booted);
    let _ = writeln!(s, "  provisioned          {:>10}", c.phones_provisioned);
    let _ = writeln!(s, "  failed               {:>10}", c.phones_failed);
    if r.change_published_at_s.is_some() {
        let _ = writeln!(s, "  fetched the change   {:>10}", c.phones_changed);
    }
    let _ = writeln!(s, "\nrates");
    let _ = writeln!(
        s,
        "  boot rate            {:>10.0} phones/s",
        r.boot_rate_per_s
    );
    let _ = writeln!(
        s,
        "  SIP messages         {:>10} sent, {} received",
        c.msgs_sent, c.msgs_received
    );
    let _ = writeln!(s, "  msgs/s (wall)        {:>10.0}", r.msgs_per_s);
    let _ = writeln!(
        s,
        "  msgs/s per core      {:>10.0}   (loadtest CPU {:.2} s)",
        r.msgs_per_cpu_s, r.cpu_s
    );
    let _ = writeln!(
        s,
        "  SUBSCRIBE/refresh/unsubscribe sent {} / {} / {}",
        c.subscribes_sent, c.refreshes_sent, c.unsubscribes_sent
    );
    let _ = writeln!(
        s,
        "  NOTIFYs received     {:>10} ({} with documents, {} empty, {} terminated)",
        c.notifies_received, c.notifies_with_documents, c.notifies_empty, c.notifies_terminated
    );
    let _ = writeln!(
        s,
        "  documents fetched    {:>10} ({} hashes verified, {} inline)",
        c.fetches_ok, c.hashes_verified, c.documents_inline
    );
    let _ = writeln!(s, "\ntimes");
    let _ = writeln!(
        s,
        "  last phone provisioned   {}",
        opt(r.time_to_last_provisioned_s)
    );
    if r.change_published_at_s.is_some() {
        let _ = writeln!(
            s,
            "  change → last fetch      {}   (published at {})",
            opt(r.change_to_last_fetch_s),
            opt(r.change_published_at_s)
        );
        let _ = writeln!(
            s,
            "  change fetched again     {} times by phones that had it (duplicate NOTIFYs)",
            c.change_refetches
        );
    }
    if r.refresh_storm_s.is_some() {
        let _ = writeln!(
            s,
            "  refresh storm            {}   ({} suppressed with 204, {} NOTIFYs after refresh)",
            opt(r.refresh_storm_s),
            c.responses_204_suppressed,
            c.notifies_after_refresh
        );
    }
    let _ = writeln!(
        s,
        "\nlatency (ms)               count      p50      p95      p99      max"
    );
    for (name, l) in &r.latency {
        if l.count == 0 {
            continue;
        }
        let _ = writeln!(
            s,
            "  {name:<22} {:>9} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            l.count, l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms
        );
    }
    let _ = writeln!(s, "\nfailures by kind");
    for (name, v) in [
        ("SUBSCRIBE timeouts (Timer F)", c.timeouts_subscribe),
        ("first-NOTIFY timeouts", c.timeouts_first_notify),
        ("4xx responses", c.responses_4xx),
        ("5xx responses", c.responses_5xx),
        ("  of which 503", c.responses_503),
        ("481 (re-subscribed)", c.responses_481),
        ("SUBSCRIBE retransmissions", c.subscribe_retransmissions),
        (
            "NOTIFY retransmissions seen",
            c.notifies_retransmitted_by_server,
        ),
        ("subscription retries", c.subscription_retries),
        ("hash mismatches", c.hash_mismatches),
        ("size mismatches", c.size_mismatches),
        ("fetch HTTP errors", c.fetch_http_errors),
        ("fetch transport errors", c.fetch_transport_errors),
        ("fetch retries", c.fetch_retries),
        ("bad NOTIFY bodies", c.bad_bodies),
        ("unsupported URLs", c.unsupported_urls),
        ("malformed received", c.malformed_received),
        ("NOTIFY for unknown dialog", c.notifies_unknown_dialog),
        ("stray responses", c.stray_responses),
        ("send errors", c.send_errors),
        ("ignored by silent phones (--ghosts)", c.ghost_drops),
    ] {
        let _ = writeln!(s, "  {name:<30} {v:>10}");
    }
    s
}

/// Size of `plot.png`: a screen's width, tall enough for title, plot, axis titles and a
/// legend of two rows.
pub const PNG_SIZE: (usize, usize) = (960, 480);

/// Writes result.json, report.html and plot.png into `dir`.
pub fn write_all(r: &RunResult, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::write(dir.join("result.json"), serde_json::to_vec_pretty(r)?)?;
    std::fs::write(dir.join("report.html"), html(r))?;
    let png = png_rates(r, PNG_SIZE.0, PNG_SIZE.1)?;
    std::fs::write(dir.join("plot.png"), png)?;
    Ok(())
}

/// A series for the plots: label, colour, one value per slot (NaN: nothing to show).
struct Series {
    label: &'static str,
    color: Rgb,
    /// Dashed, so a line drawn earlier shows through where both have the same values
    /// (provisioned/s equals fetches/s when each phone fetches one document).
    dashed: bool,
    values: Vec<f64>,
}

/// Dash pattern of a dashed series in the PNG: pixels drawn, pixels skipped.
const PNG_DASH: (u32, u32) = (8, 6);
/// The same in the SVG.
const SVG_DASH: &str = "6 4";

const RATES_Y_TITLE: &str = "rate (per second)";
const LATENCY_Y_TITLE: &str = "latency (ms)";
const TIME_X_TITLE: &str = "time since start (s)";
/// Marks the moment change-storm published its change.
const CHANGE_LABEL: &str = "change published";

fn rate_series(r: &RunResult) -> Vec<Series> {
    let per_s = 1.0 / r.timeline_slot_s.max(1e-9);
    let col = |f: fn(&Slot) -> u32| -> Vec<f64> {
        r.timeline.iter().map(|s| f64::from(f(s)) * per_s).collect()
    };
    vec![
        Series {
            label: "SUBSCRIBE/s",
            color: (31, 119, 180),
            dashed: false,
            values: col(|s| s.subscribes),
        },
        Series {
            label: "NOTIFY/s",
            color: (255, 127, 14),
            dashed: false,
            values: col(|s| s.notifies),
        },
        Series {
            label: "fetches/s",
            color: (44, 160, 44),
            dashed: false,
            values: col(|s| s.fetches),
        },
        Series {
            label: "provisioned/s",
            color: (148, 103, 189),
            dashed: true,
            values: col(|s| s.provisioned),
        },
        Series {
            label: "failed + retransmitted/s",
            color: (214, 39, 40),
            dashed: false,
            values: col(|s| s.failures + s.retransmissions),
        },
    ]
}

fn latency_series(r: &RunResult) -> Vec<Series> {
    // A slot without samples has no latency, not a latency of 0: NaN leaves a gap.
    let mean = |sum: u64, n: u32| {
        if n == 0 {
            f64::NAN
        } else {
            sum as f64 / f64::from(n) / 1000.0
        }
    };
    let max = |max_us: u64, n: u32| {
        if n == 0 {
            f64::NAN
        } else {
            max_us as f64 / 1000.0
        }
    };
    vec![
        Series {
            label: "SUBSCRIBE→200 mean ms",
            color: (31, 119, 180),
            dashed: false,
            values: r
                .timeline
                .iter()
                .map(|s| mean(s.sub_lat_sum_us, s.sub_lat_n))
                .collect(),
        },
        Series {
            label: "SUBSCRIBE→200 max ms",
            color: (174, 199, 232),
            dashed: false,
            values: r
                .timeline
                .iter()
                .map(|s| max(s.sub_lat_max_us, s.sub_lat_n))
                .collect(),
        },
        Series {
            label: "NOTIFY→fetched mean ms",
            color: (44, 160, 44),
            dashed: false,
            values: r
                .timeline
                .iter()
                .map(|s| mean(s.fetch_lat_sum_us, s.fetch_lat_n))
                .collect(),
        },
        Series {
            label: "NOTIFY→fetched max ms",
            color: (152, 223, 138),
            dashed: false,
            values: r
                .timeline
                .iter()
                .map(|s| max(s.fetch_lat_max_us, s.fetch_lat_n))
                .collect(),
        },
    ]
}

/// The largest value; NaNs (gaps) are skipped.
fn max_of(series: &[Series]) -> f64 {
    series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0, f64::max)
}

/// What ran, for the title of every picture: scenario, phones, transport.
fn run_title(r: &RunResult) -> String {
    let mut t = format!(
        "uaprof-storm {}: {} phones over {}",
        r.scenario,
        r.phones,
        r.transport.to_uppercase()
    );
    if r.ghosts > 0 {
        let _ = write!(t, ", {} silent", r.ghosts);
    }
    if !r.completed {
        t.push_str(" (INCOMPLETE)");
    }
    t
}

/// Room above the largest value, so the top line does not hide in the plot's frame.
const HEADROOM: f64 = 1.05;

/// An axis from 0 to `top` in round steps (1, 2 or 5 × 10^k) so tick labels read easily.
struct Axis {
    step: f64,
    top: f64,
    decimals: usize,
}

impl Axis {
    /// The smallest round step that covers `max` in at most `max_steps` steps.
    fn new(max: f64, max_steps: u32) -> Self {
        let max = if max.is_finite() && max > 0.0 {
            max
        } else {
            1.0
        };
        let raw = max / f64::from(max_steps.max(1));
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * mag)
            .find(|s| *s >= raw * (1.0 - 1e-9))
            .unwrap_or(10.0 * mag);
        let steps = (max / step - 1e-9).ceil().max(1.0);
        let decimals = if step >= 1.0 {
            0
        } else {
            (-step.log10() - 1e-9).ceil() as usize
        };
        Self {
            step,
            top: steps * step,
            decimals,
        }
    }

    /// (value, label) from 0 to the top.
    fn ticks(&self) -> impl Iterator<Item = (f64, String)> + '_ {
        let n = (self.top / self.step).round() as u32;
        (0..=n).map(move |i| {
            let v = self.step * f64::from(i);
            (v, format!("{v:.*}", self.decimals))
        })
    }
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&#39;")
}

/// A line plot over the run's timeline: title, y ticks and title, time ticks and title, and
/// a legend that names every line next to its colour (wrapping onto more rows as needed).
fn svg(
    title: &str,
    y_title: &str,
    series: &[Series],
    slot_s: f64,
    change_at: Option<f64>,
) -> String {
    // Sans-serif at 12 px averages under 7.5 px a character; the legend is laid out with that.
    const CHAR_W: f64 = 7.5;
    const LEGEND_ROW: f64 = 20.0;
    let (w, l, t, rm) = (900.0, 80.0, 34.0, 24.0);
    let ph = 250.0;
    let pw = w - l - rm;
    let mut legend = Vec::new();
    let (mut lx, mut row) = (l, 0.0);
    for se in series {
        let ew = 20.0 + CHAR_W * se.label.chars().count() as f64;
        if lx > l && lx + ew > w - rm {
            lx = l;
            row += 1.0;
        }
        legend.push((lx, row));
        lx += ew + 24.0;
    }
    let legend_top = t + ph + 62.0;
    let h = legend_top + (row + 1.0) * LEGEND_ROW + 4.0;
    let n = series.first().map_or(0, |s| s.values.len());
    let xaxis = Axis::new((n as f64 * slot_s).max(change_at.unwrap_or(0.0)), 10);
    let yaxis = Axis::new(max_of(series) * HEADROOM, 5);
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\
         <text x='{l}' y='20' font-size='15' font-weight='bold'>{title}</text>",
        title = esc(title)
    );
    for (v, label) in yaxis.ticks() {
        let y = t + ph - ph * v / yaxis.top;
        let _ = write!(
            s,
            "<line x1='{l}' x2='{}' y1='{y:.1}' y2='{y:.1}' stroke='#e6e6e6'/>\
             <text x='{}' y='{:.1}' text-anchor='end'>{label}</text>",
            l + pw,
            l - 6.0,
            y + 4.0
        );
    }
    for (v, label) in xaxis.ticks() {
        let x = l + pw * v / xaxis.top;
        let _ = write!(
            s,
            "<line x1='{x:.1}' x2='{x:.1}' y1='{t}' y2='{}' stroke='#f0f0f0'/>\
             <text x='{x:.1}' y='{}' text-anchor='middle'>{label}</text>",
            t + ph,
            t + ph + 16.0
        );
    }
    let _ = write!(
        s,
        "<rect x='{l}' y='{t}' width='{pw}' height='{ph}' fill='none' stroke='#888'/>\
         <text x='{}' y='{}' text-anchor='middle' font-size='13'>{}</text>\
         <text transform='translate(18,{}) rotate(-90)' text-anchor='middle' font-size='13'>{}</text>",
        l + pw / 2.0,
        t + ph + 38.0,
        esc(TIME_X_TITLE),
        t + ph / 2.0,
        esc(y_title)
    );
    for (se, (lx, row)) in series.iter().zip(&legend) {
        // One polyline per run of values between gaps.
        let mut pts = String::new();
        for (i, v) in se.values.iter().enumerate() {
            if v.is_nan() {
                pts.push('|');
                continue;
            }
            let x = l + pw * (i as f64 + 0.5) * slot_s / xaxis.top;
            let y = t + ph - ph * v / yaxis.top;
            let _ = write!(pts, "{x:.1},{y:.1} ");
        }
        let (r, g, bl) = se.color;
        // Dashed and a little wider, so it shows over the line it may cover.
        let stroke = if se.dashed {
            format!("stroke-width='2.5' stroke-dasharray='{SVG_DASH}'")
        } else {
            "stroke-width='1.5'".to_owned()
        };
        for run in pts.split('|').filter(|p| !p.is_empty()) {
            match run.trim().split_once(',') {
                // A lone value between gaps: a dot, or it would not show at all.
                Some((x, y)) if !run.trim().contains(' ') => {
                    let _ = write!(
                        s,
                        "<circle cx='{x}' cy='{y}' r='2' fill='rgb({r},{g},{bl})'/>"
                    );
                }
                _ => {
                    let _ = write!(
                        s,
                        "<polyline fill='none' stroke='rgb({r},{g},{bl})' {stroke} points='{run}'/>"
                    );
                }
            }
        }
        let y = legend_top + row * LEGEND_ROW;
        if se.dashed {
            let _ = write!(
                s,
                "<line x1='{lx}' x2='{}' y1='{}' y2='{}' stroke='rgb({r},{g},{bl})' stroke-width='10' stroke-dasharray='4 2'/>",
                lx + 16.0,
                y - 5.0,
                y - 5.0
            );
        } else {
            let _ = write!(
                s,
                "<rect x='{lx}' y='{}' width='16' height='10' fill='rgb({r},{g},{bl})'/>",
                y - 10.0
            );
        }
        let _ = write!(
            s,
            "<text x='{}' y='{y}'>{}</text>",
            lx + 20.0,
            esc(se.label)
        );
    }
    if let Some(at) = change_at {
        let x = l + pw * at / xaxis.top;
        // Right of the line, or left of it near the right edge.
        let (tx, anchor) = if x + 130.0 < l + pw {
            (x + 4.0, "start")
        } else {
            (x - 4.0, "end")
        };
        let _ = write!(
            s,
            "<line x1='{x:.1}' x2='{x:.1}' y1='{t}' y2='{}' stroke='#555' stroke-dasharray='4 3'/>\
             <text x='{tx:.1}' y='{}' text-anchor='{anchor}' fill='#333'>{CHANGE_LABEL}</text>",
            t + ph,
            t + 14.0
        );
    }
    s.push_str("</svg>");
    s
}

fn html(r: &RunResult) -> String {
    let title = run_title(r);
    format!(
        "<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}pre{{background:#f6f6f6;padding:1em}}</style>\
         </head><body><h1>{title}</h1>\
         <p>Rates are per second, in slots of {slot:.1} s; 'failed + retransmitted/s' counts \
         phones that gave up plus SUBSCRIBE retransmissions. The JSON next to this file has \
         every figure.</p>\
         {rates}<br>{lat}<h2>Summary</h2><pre>{sum}</pre></body></html>",
        title = esc(&title),
        slot = r.timeline_slot_s,
        rates = svg(
            &format!("Rates over time — {title}"),
            RATES_Y_TITLE,
            &rate_series(r),
            r.timeline_slot_s,
            r.change_published_at_s
        ),
        lat = svg(
            &format!("Latencies over time — {title}"),
            LATENCY_Y_TITLE,
            &latency_series(r),
            r.timeline_slot_s,
            r.change_published_at_s
        ),
        sum = esc(&summary(r)),
    )
}

/// A rectangle on the PNG canvas.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rect {
    x: i64,
    y: i64,
    w: i64,
    h: i64,
}

/// Where [`draw_rates`] put each part, so tests can look there.
#[derive(Debug)]
#[cfg_attr(not(test), expect(dead_code, reason = "read by the tests only"))]
struct Layout {
    title: Rect,
    plot: Rect,
    x_title: Rect,
    y_title: Rect,
    /// Per series: its colour swatch and its name.
    legend: Vec<(Rect, Rect)>,
    /// The "change published" label, in change-storm.
    change: Option<Rect>,
}

const FONT_SCALE: i64 = 2;
const INK: Rgb = (20, 20, 20);
const TICK_INK: Rgb = (70, 70, 70);
const AXIS_INK: Rgb = (136, 136, 136);
const GRID: Rgb = (232, 232, 232);
const PAD: i64 = 12;

/// The rates plot as a PNG: titled with the run, y-axis in per second, x-axis in seconds
/// since the start, a legend naming each line; colours as in the HTML.
pub fn png_rates(r: &RunResult, w: usize, h: usize) -> anyhow::Result<Vec<u8>> {
    draw_rates(r, w, h).0.png()
}

/// The legend's sample of a series: a bar in its colour, broken like the line if dashed.
fn draw_swatch(c: &mut Canvas, at: Rect, se: &Series) {
    if se.dashed {
        let (on, off) = (6, 3);
        let mut x = at.x;
        while x < at.x + at.w {
            c.rect(x, at.y, on.min(at.x + at.w - x), at.h, se.color);
            x += on + off;
        }
    } else {
        c.rect(at.x, at.y, at.w, at.h, se.color);
    }
}

fn draw_rates(r: &RunResult, w: usize, h: usize) -> (Canvas, Layout) {
    let series = rate_series(r);
    let mut c = Canvas::new(w, h);
    let (w, h) = (c.width(), c.height());
    let s = FONT_SCALE;
    let th = Canvas::text_height(s);
    let body_mid = 7 * s / 2;

    let title = run_title(r);
    let title_r = Rect {
        x: PAD,
        y: PAD,
        w: Canvas::text_width(&title, s) + 1,
        h: th,
    };
    c.text_bold(title_r.x, title_r.y, &title, s, INK);

    // The legend goes first: how many rows it wraps onto decides the plot's height.
    let (swatch_w, swatch_gap, entry_gap, row_h) = (24, 8, 28, th + 8);
    let mut entries = Vec::new();
    let (mut lx, mut row) = (PAD, 0);
    for se in &series {
        let tw = Canvas::text_width(se.label, s);
        let ew = swatch_w + swatch_gap + tw;
        if lx > PAD && lx + ew > w - PAD {
            lx = PAD;
            row += 1;
        }
        entries.push((lx, row, tw));
        lx += ew + entry_gap;
    }
    let legend_top = h - PAD - row * row_h - th;
    let x_title_y = legend_top - 16 - th;
    let tick_y = x_title_y - 8 - th;

    let n = series.first().map_or(0, |s| s.values.len());
    let change_at = r.change_published_at_s;
    let xaxis = Axis::new(
        (n as f64 * r.timeline_slot_s).max(change_at.unwrap_or(0.0)),
        10,
    );
    let yaxis = Axis::new(max_of(&series) * HEADROOM, 5);
    let y_ticks: Vec<_> = yaxis.ticks().collect();
    let label_w = y_ticks
        .iter()
        .map(|(_, t)| Canvas::text_width(t, s))
        .max()
        .unwrap_or(0);
    let l = PAD + th + 10 + label_w + 8;
    let t = PAD + th + 16;
    // Room for half the last time label to the right of the plot.
    let rm = PAD + 24;
    let plot = Rect {
        x: l,
        y: t,
        w: w - l - rm,
        h: tick_y - 8 - t,
    };
    let x_at = |v: f64| plot.x + (plot.w as f64 * v / xaxis.top).round() as i64;
    let y_at = |v: f64| plot.y + plot.h - (plot.h as f64 * v / yaxis.top).round() as i64;

    for (v, label) in &y_ticks {
        let y = y_at(*v);
        c.line((plot.x, y), (plot.x + plot.w, y), GRID, 1);
        c.line((plot.x - 4, y), (plot.x, y), AXIS_INK, 1);
        let tw = Canvas::text_width(label, s);
        c.text(plot.x - 8 - tw, y - body_mid, label, s, TICK_INK);
    }
    for (v, label) in xaxis.ticks() {
        let x = x_at(v);
        c.line((x, plot.y), (x, plot.y + plot.h), GRID, 1);
        c.line((x, plot.y + plot.h), (x, plot.y + plot.h + 4), AXIS_INK, 1);
        let tw = Canvas::text_width(&label, s);
        c.text(x - tw / 2, tick_y, &label, s, TICK_INK);
    }

    let tw = Canvas::text_width(TIME_X_TITLE, s);
    let x_title = Rect {
        x: plot.x + (plot.w - tw) / 2,
        y: x_title_y,
        w: tw,
        h: th,
    };
    c.text(x_title.x, x_title.y, TIME_X_TITLE, s, INK);
    let tw = Canvas::text_width(RATES_Y_TITLE, s);
    let y_title = Rect {
        x: PAD,
        y: plot.y + (plot.h - tw) / 2,
        w: th,
        h: tw,
    };
    c.text_up(y_title.x, y_title.y + y_title.h - 1, RATES_Y_TITLE, s, INK);

    for se in &series {
        let pt = |i: usize| {
            (
                x_at((i as f64 + 0.5) * r.timeline_slot_s),
                y_at(se.values[i]),
            )
        };
        let dash = se.dashed.then_some(PNG_DASH);
        let mut run = Vec::new();
        for i in 0..=se.values.len() {
            if i < se.values.len() && !se.values[i].is_nan() {
                run.push(pt(i));
                continue;
            }
            match run.len() {
                0 => {}
                // A lone value between gaps: a dot, or it would not show at all.
                1 => c.rect(run[0].0 - 1, run[0].1 - 1, 3, 3, se.color),
                _ => c.polyline(&run, se.color, 2, dash),
            }
            run.clear();
        }
    }
    c.line((plot.x, plot.y), (plot.x, plot.y + plot.h), AXIS_INK, 1);
    c.line(
        (plot.x, plot.y + plot.h),
        (plot.x + plot.w, plot.y + plot.h),
        AXIS_INK,
        1,
    );

    let change = change_at.map(|at| {
        let x = x_at(at);
        c.polyline(
            &[(x, plot.y), (x, plot.y + plot.h)],
            AXIS_INK,
            1,
            Some((4, 4)),
        );
        let tw = Canvas::text_width(CHANGE_LABEL, s);
        // Right of the line, or left of it near the right edge; on white, above the lines.
        let lx = if x + 6 + tw < plot.x + plot.w {
            x + 6
        } else {
            x - 6 - tw
        };
        let label = Rect {
            x: lx,
            y: plot.y + 6,
            w: tw,
            h: th,
        };
        c.rect(
            label.x - 2,
            label.y - 2,
            label.w + 4,
            label.h + 4,
            (255, 255, 255),
        );
        c.text(label.x, label.y, CHANGE_LABEL, s, INK);
        label
    });

    let mut legend = Vec::new();
    for (se, (lx, row, tw)) in series.iter().zip(entries) {
        let y = legend_top + row * row_h;
        let swatch = Rect {
            x: lx,
            y: y + body_mid - 5,
            w: swatch_w,
            h: 10,
        };
        draw_swatch(&mut c, swatch, se);
        let label = Rect {
            x: lx + swatch_w + swatch_gap,
            y,
            w: tw,
            h: th,
        };
        c.text(label.x, label.y, se.label, s, INK);
        legend.push((swatch, label));
    }
    let layout = Layout {
        title: title_r,
        plot,
        x_title,
        y_title,
        legend,
        change,
    };
    (c, layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Counters;

    /// A power-up of 2000 phones over 4 s in 0.1 s slots: SUBSCRIBEs, then NOTIFYs, fetches
    /// and provisioned phones a little later, a few retransmissions in the middle.
    fn fixture() -> RunResult {
        let timeline = (0..60u32)
            .map(|i| {
                let boot = if i < 40 { 50 } else { 0 };
                let later = if (3..45).contains(&i) { 47 } else { 0 };
                Slot {
                    subscribes: boot,
                    notifies: later,
                    fetches: if (5..50).contains(&i) { 44 } else { 0 },
                    provisioned: if (6..56).contains(&i) { 40 } else { 0 },
                    retransmissions: if (15..25).contains(&i) { 5 } else { 0 },
                    sub_lat_sum_us: u64::from(boot) * 2_000,
                    sub_lat_n: boot,
                    sub_lat_max_us: if boot > 0 { 9_000 } else { 0 },
                    fetch_lat_sum_us: u64::from(later) * 5_000,
                    fetch_lat_n: later,
                    fetch_lat_max_us: if later > 0 { 20_000 } else { 0 },
                    ..Slot::default()
                }
            })
            .collect();
        RunResult {
            scenario: "power-up".into(),
            phones: 2000,
            ghosts: 0,
            transport: "udp".into(),
            fetch: "http1".into(),
            profiles: vec!["device".into()],
            seed: 1,
            threads: 1,
            completed: true,
            stop_reason: "all phones provisioned".into(),
            wall_s: 6.0,
            cpu_s: 0.5,
            msgs_per_s: 1000.0,
            msgs_per_cpu_s: 12000.0,
            boot_rate_per_s: 500.0,
            time_to_last_provisioned_s: Some(4.6),
            change_published_at_s: None,
            change_to_last_fetch_s: None,
            refresh_storm_s: None,
            counters: Counters::default(),
            latency: Default::default(),
            timeline_slot_s: 0.1,
            timeline,
        }
    }

    const WHITE: Rgb = (255, 255, 255);

    /// `got` shows, at `at`, exactly the pixels `draw` puts on a blank canvas of the rect's
    /// size: the text is there, whole, and nothing is drawn over it.
    fn assert_shows(got: &Canvas, at: Rect, what: &str, draw: impl Fn(&mut Canvas)) {
        let mut want = Canvas::new(at.w as usize, at.h as usize);
        draw(&mut want);
        let mut ink = 0;
        for y in 0..at.h {
            for x in 0..at.w {
                let w = want.get(x, y).unwrap();
                assert_eq!(got.get(at.x + x, at.y + y), Some(w), "{what} at ({x}, {y})");
                ink += usize::from(w != WHITE);
            }
        }
        assert!(
            ink > 20 * what.chars().count(),
            "{what}: {ink} pixels of ink"
        );
    }

    #[test]
    fn png_has_a_title_axis_titles_and_a_legend_in_words() {
        let r = fixture();
        let (w, h) = PNG_SIZE;
        let (c, lay) = draw_rates(&r, w, h);
        let title = "uaprof-storm power-up: 2000 phones over UDP";
        assert_shows(&c, lay.title, title, |c| {
            c.text_bold(0, 0, title, FONT_SCALE, INK)
        });
        assert_shows(&c, lay.x_title, TIME_X_TITLE, |c| {
            c.text(0, 0, TIME_X_TITLE, FONT_SCALE, INK)
        });
        assert_shows(&c, lay.y_title, RATES_Y_TITLE, |c| {
            c.text_up(0, c.height() - 1, RATES_Y_TITLE, FONT_SCALE, INK)
        });
        let series = rate_series(&r);
        assert_eq!(lay.legend.len(), series.len());
        for (se, (swatch, label)) in series.iter().zip(&lay.legend) {
            assert_shows(&c, *swatch, "swatch", |c| {
                draw_swatch(
                    c,
                    Rect {
                        x: 0,
                        y: 0,
                        ..*swatch
                    },
                    se,
                )
            });
            assert_shows(&c, *label, se.label, |c| {
                c.text(0, 0, se.label, FONT_SCALE, INK)
            });
            // The name sits right of its own colour, on the same row.
            assert!(label.x > swatch.x && label.y <= swatch.y && swatch.y < label.y + label.h);
        }
        // Everything is on the canvas and nothing overlaps the plot.
        let mut parts = vec![lay.title, lay.x_title, lay.y_title];
        parts.extend(lay.legend.iter().flat_map(|(a, b)| [*a, *b]));
        let p = lay.plot;
        for q in parts {
            assert!(q.x >= 0 && q.y >= 0 && q.x + q.w <= w as i64 && q.y + q.h <= h as i64);
            let apart =
                q.x + q.w <= p.x || p.x + p.w <= q.x || q.y + q.h <= p.y || p.y + p.h <= q.y;
            assert!(apart, "{q:?} overlaps the plot {p:?}");
        }
    }

    #[test]
    fn png_decodes_to_the_requested_size_with_every_line_drawn() {
        let r = fixture();
        let bytes = png_rates(&r, 960, 480).unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut rd = dec.read_info().unwrap();
        let mut buf = vec![0; rd.output_buffer_size().unwrap()];
        let info = rd.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (960, 480));
        let px: Vec<Rgb> = buf[..info.buffer_size()]
            .chunks(3)
            .map(|p| (p[0], p[1], p[2]))
            .collect();
        for se in rate_series(&r) {
            let n = px.iter().filter(|p| **p == se.color).count();
            assert!(n > 300, "{}: {n} pixels", se.label);
        }
        // Ink above the plot (the title) and in the bottom rows (the legend).
        let ink_rows = |ys: std::ops::Range<usize>| {
            ys.map(|y| {
                px[y * 960..(y + 1) * 960]
                    .iter()
                    .filter(|p| **p == INK)
                    .count()
            })
            .sum::<usize>()
        };
        assert!(ink_rows(0..30) > 200);
        assert!(ink_rows(440..480) > 200);
    }

    #[test]
    fn change_storm_plots_mark_when_the_change_was_published() {
        let mut r = fixture();
        assert_eq!(draw_rates(&r, 960, 480).1.change, None);
        r.change_published_at_s = Some(2.5);
        let (c, lay) = draw_rates(&r, 960, 480);
        let at = lay.change.expect("a change label");
        assert_shows(&c, at, CHANGE_LABEL, |c| {
            c.text(0, 0, CHANGE_LABEL, FONT_SCALE, INK)
        });
        let page = html(&r);
        assert_eq!(page.matches(&format!(">{CHANGE_LABEL}</text>")).count(), 2);
    }

    #[test]
    fn a_long_legend_wraps_onto_another_row() {
        let r = fixture();
        let (_, lay) = draw_rates(&r, 600, 400);
        let rows: std::collections::BTreeSet<_> = lay.legend.iter().map(|(_, l)| l.y).collect();
        assert!(rows.len() >= 2, "{:?}", lay.legend);
        for (_, l) in &lay.legend {
            assert!(l.x + l.w <= 600, "{l:?}");
        }
    }

    #[test]
    fn latency_gaps_are_gaps_and_a_lone_value_is_a_dot() {
        let mut r = fixture();
        for (i, s) in r.timeline.iter_mut().enumerate() {
            if i != 10 {
                (s.sub_lat_n, s.sub_lat_sum_us, s.sub_lat_max_us) = (0, 0, 0);
            }
        }
        let lat = latency_series(&r);
        assert!(lat[0].values[9].is_nan() && lat[1].values[11].is_nan());
        assert_eq!((lat[0].values[10], lat[1].values[10]), (2.0, 9.0));
        let svg = svg("t", LATENCY_Y_TITLE, &lat, r.timeline_slot_s, None);
        // SUBSCRIBE→200 mean and max: one dot each.
        assert_eq!(svg.matches("<circle").count(), 2, "{svg}");
    }

    #[test]
    fn axes_step_in_round_numbers_and_cover_the_data() {
        for (max, steps, step, top) in [
            (1000.0, 5, 200.0, 1000.0),
            (1234.0, 5, 500.0, 1500.0),
            (6.0, 10, 1.0, 6.0),
            (0.37, 5, 0.1, 0.4),
            (0.0, 5, 0.2, 1.0),
        ] {
            let a = Axis::new(max, steps);
            assert_eq!((a.step, a.top), (step, top), "max {max}");
        }
        let labels: Vec<_> = Axis::new(0.37, 5).ticks().map(|(_, l)| l).collect();
        assert_eq!(labels, ["0.0", "0.1", "0.2", "0.3", "0.4"]);
    }

    #[test]
    fn every_svg_plot_has_a_title_axis_titles_and_named_lines() {
        let r = fixture();
        let page = html(&r);
        let svgs: Vec<_> = page.split("<svg").skip(1).collect();
        assert_eq!(svgs.len(), 2);
        for (svg, title, y_title, series) in [
            (svgs[0], "Rates over time", RATES_Y_TITLE, rate_series(&r)),
            (
                svgs[1],
                "Latencies over time",
                LATENCY_Y_TITLE,
                latency_series(&r),
            ),
        ] {
            let texts: Vec<_> = svg
                .split("<text")
                .skip(1)
                .filter_map(|t| t.split_once('>').and_then(|(_, t)| t.split_once("</text>")))
                .map(|(t, _)| t)
                .collect();
            assert!(
                texts
                    .iter()
                    .any(|t| t.starts_with(title) && t.contains("2000 phones over UDP")),
                "{texts:?}"
            );
            for want in [TIME_X_TITLE, y_title] {
                assert!(texts.contains(&want), "{want} in {texts:?}");
            }
            for se in series {
                assert!(texts.contains(&se.label), "{} in {texts:?}", se.label);
                let (r, g, b) = se.color;
                // Its line (one polyline per run between gaps) and its swatch.
                assert!(svg.matches(&format!("rgb({r},{g},{b})")).count() >= 2);
            }
        }
    }
}
