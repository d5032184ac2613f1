//! Output of a run: the summary table (stdout), `result.json`, `report.html` (inline SVG
//! plots) and `plot.png` (the rates plot, drawn by a tiny rasteriser — no font or system
//! library needed).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::run::RunResult;
use crate::stats::Slot;

/// The human summary.
pub fn summary(r: &RunResult) -> String {
    let c = &r.counters;
    let mut s = String::new();
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3} s"));
    let _ = writeln!(
        s,
        "uaprof-storm {} — {} phones ({} of them go silent) over {}, profiles {}, {} shard(s)",
        r.scenario,
        r.phones,
        r.ghosts,
        r.transport,
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

/// Writes result.json, report.html and plot.png into `dir`.
pub fn write_all(r: &RunResult, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::write(dir.join("result.json"), serde_json::to_vec_pretty(r)?)?;
    std::fs::write(dir.join("report.html"), html(r))?;
    let png = png_rates(r, 960, 400)?;
    std::fs::write(dir.join("plot.png"), png)?;
    Ok(())
}

/// A series for the plots: label, colour, one value per slot.
struct Series {
    label: &'static str,
    color: (u8, u8, u8),
    values: Vec<f64>,
}

fn rate_series(r: &RunResult) -> Vec<Series> {
    let per_s = 1.0 / r.timeline_slot_s.max(1e-9);
    let col = |f: fn(&Slot) -> u32| -> Vec<f64> {
        r.timeline.iter().map(|s| f64::from(f(s)) * per_s).collect()
    };
    vec![
        Series {
            label: "SUBSCRIBE/s",
            color: (31, 119, 180),
            values: col(|s| s.subscribes),
        },
        Series {
            label: "NOTIFY/s",
            color: (255, 127, 14),
            values: col(|s| s.notifies),
        },
        Series {
            label: "fetches/s",
            color: (44, 160, 44),
            values: col(|s| s.fetches),
        },
        Series {
            label: "provisioned/s",
            color: (148, 103, 189),
            values: col(|s| s.provisioned),
        },
        Series {
            label: "failures/s",
            color: (214, 39, 40),
            values: col(|s| s.failures + s.retransmissions),
        },
    ]
}

fn latency_series(r: &RunResult) -> Vec<Series> {
    let mean = |sum: u64, n: u32| {
        if n == 0 {
            0.0
        } else {
            sum as f64 / f64::from(n) / 1000.0
        }
    };
    vec![
        Series {
            label: "SUBSCRIBE→200 mean ms",
            color: (31, 119, 180),
            values: r
                .timeline
                .iter()
                .map(|s| mean(s.sub_lat_sum_us, s.sub_lat_n))
                .collect(),
        },
        Series {
            label: "SUBSCRIBE→200 max ms",
            color: (174, 199, 232),
            values: r
                .timeline
                .iter()
                .map(|s| s.sub_lat_max_us as f64 / 1000.0)
                .collect(),
        },
        Series {
            label: "NOTIFY→fetched mean ms",
            color: (44, 160, 44),
            values: r
                .timeline
                .iter()
                .map(|s| mean(s.fetch_lat_sum_us, s.fetch_lat_n))
                .collect(),
        },
        Series {
            label: "NOTIFY→fetched max ms",
            color: (152, 223, 138),
            values: r
                .timeline
                .iter()
                .map(|s| s.fetch_lat_max_us as f64 / 1000.0)
                .collect(),
        },
    ]
}

fn max_of(series: &[Series]) -> f64 {
    series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0, f64::max)
        .max(1.0)
}

fn svg(title: &str, series: &[Series], slot_s: f64) -> String {
    let (w, h, l, b, t, rm) = (900.0, 320.0, 70.0, 40.0, 30.0, 20.0);
    let pw = w - l - rm;
    let ph = h - t - b;
    let n = series.first().map_or(0, |s| s.values.len()).max(2);
    let ymax = max_of(series);
    let span = n as f64 * slot_s;
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='11'>\
         <text x='{l}' y='18' font-size='14'>{title}</text>\
         <rect x='{l}' y='{t}' width='{pw}' height='{ph}' fill='none' stroke='#888'/>"
    );
    for i in 0..=4 {
        let y = t + ph - ph * f64::from(i) / 4.0;
        let v = ymax * f64::from(i) / 4.0;
        let _ = write!(
            s,
            "<line x1='{l}' x2='{}' y1='{y}' y2='{y}' stroke='#eee'/>\
             <text x='{}' y='{}' text-anchor='end'>{v:.0}</text>",
            l + pw,
            l - 4.0,
            y + 4.0
        );
        let x = l + pw * f64::from(i) / 4.0;
        let _ = write!(
            s,
            "<text x='{x}' y='{}' text-anchor='middle'>{:.1} s</text>",
            t + ph + 16.0,
            span * f64::from(i) / 4.0
        );
    }
    for (k, se) in series.iter().enumerate() {
        let mut pts = String::new();
        for (i, v) in se.values.iter().enumerate() {
            let x = l + pw * i as f64 / (n - 1) as f64;
            let y = t + ph - ph * v / ymax;
            let _ = write!(pts, "{x:.1},{y:.1} ");
        }
        let (r, g, bl) = se.color;
        let _ = write!(
            s,
            "<polyline fill='none' stroke='rgb({r},{g},{bl})' stroke-width='1.5' points='{pts}'/>\
             <rect x='{}' y='{}' width='10' height='10' fill='rgb({r},{g},{bl})'/>\
             <text x='{}' y='{}'>{}</text>",
            l + 10.0 + 170.0 * k as f64,
            h - 14.0,
            l + 24.0 + 170.0 * k as f64,
            h - 5.0,
            se.label
        );
    }
    s.push_str("</svg>");
    s
}

fn html(r: &RunResult) -> String {
    let esc = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    format!(
        "<!doctype html><html><head><meta charset='utf-8'><title>uaprof-storm {scen}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}pre{{background:#f6f6f6;padding:1em}}</style>\
         </head><body><h1>uaprof-storm: {scen}</h1>\
         <p>Rates are per second, in slots of {slot:.1} s; 'failures/s' counts failed phones \
         plus SUBSCRIBE retransmissions. The JSON next to this file has every figure.</p>\
         {rates}<br>{lat}<h2>Summary</h2><pre>{sum}</pre></body></html>",
        scen = esc(&r.scenario),
        slot = r.timeline_slot_s,
        rates = svg(
            "Rates over time (per second)",
            &rate_series(r),
            r.timeline_slot_s
        ),
        lat = svg(
            "Latencies over time (ms)",
            &latency_series(r),
            r.timeline_slot_s
        ),
        sum = esc(&summary(r)),
    )
}

/// 3×5 bitmap digits (and '.'), for axis labels in the PNG.
const DIGITS: [[u8; 5]; 11] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
    [0, 0, 0, 0, 2],
];

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Self {
        Self {
            w,
            h,
            px: vec![255; w * h * 3],
        }
    }

    fn set(&mut self, x: i64, y: i64, c: (u8, u8, u8)) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = (y as usize * self.w + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&[c.0, c.1, c.2]);
        }
    }

    /// Bresenham, `thick` pixels wide vertically.
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: (u8, u8, u8), thick: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            for t in 0..thick {
                self.set(x, y + t, c);
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: (u8, u8, u8)) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, c);
            }
        }
    }

    /// Digits at scale 2, left-aligned at (x, y).
    fn text(&mut self, x: i64, y: i64, t: &str, c: (u8, u8, u8)) {
        for (k, ch) in t.chars().enumerate() {
            let g = match ch {
                '0'..='9' => DIGITS[(ch as u8 - b'0') as usize],
                '.' => DIGITS[10],
                _ => continue,
            };
            for (row, bits) in g.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        self.rect(x + k as i64 * 8 + col * 2, y + row as i64 * 2, 2, 2, c);
                    }
                }
            }
        }
    }
}

/// The rates plot as a PNG: y-axis labelled in messages per second, x-axis in seconds,
/// colours as in the HTML legend.
pub fn png_rates(r: &RunResult, w: usize, h: usize) -> anyhow::Result<Vec<u8>> {
    let series = rate_series(r);
    let mut c = Canvas::new(w, h);
    let (l, rm, t, b) = (70i64, 20i64, 20i64, 50i64);
    let (pw, ph) = (w as i64 - l - rm, h as i64 - t - b);
    let grey = (136, 136, 136);
    let light = (235, 235, 235);
    let ymax = max_of(&series);
    for i in 0..=4 {
        let y = t + ph - ph * i / 4;
        c.line((l, y), (l + pw, y), light, 1);
        c.text(4, y - 5, &format!("{:.0}", ymax * i as f64 / 4.0), grey);
        let x = l + pw * i / 4;
        let n = series.first().map_or(0, |s| s.values.len()) as f64;
        c.text(
            x - 10,
            t + ph + 8,
            &format!("{:.1}", n * r.timeline_slot_s * i as f64 / 4.0),
            grey,
        );
    }
    c.line((l, t), (l, t + ph), grey, 1);
    c.line((l, t + ph), (l + pw, t + ph), grey, 1);
    for (k, s) in series.iter().enumerate() {
        let n = s.values.len().max(2);
        let pt = |i: usize, v: f64| {
            (
                l + (pw as f64 * i as f64 / (n - 1) as f64) as i64,
                t + ph - (ph as f64 * v / ymax) as i64,
            )
        };
        for i in 1..s.values.len() {
            c.line(pt(i - 1, s.values[i - 1]), pt(i, s.values[i]), s.color, 2);
        }
        c.rect(l + 10 + 120 * k as i64, h as i64 - 18, 24, 10, s.color);
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header()?;
        wr.write_image_data(&c.px)?;
    }
    Ok(out)
}
