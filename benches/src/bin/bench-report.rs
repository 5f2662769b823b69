//! Reads criterion's `**/new/estimates.json` and prints, per group, each benchmark's median and
//! its ratio to the group's peer measured in the same run (`--peer`, default
//! `ring_raw_in_place`). Markdown, ready for docs/PERFORMANCE.md.
//!
//! With several `--dir`s (one per repeated run), the ratio is computed within each run and the
//! median ratio is reported with its range: on a noisy machine a ratio from one run can be off by
//! 20%, while drift between runs cancels inside each run's ratio.
//!
//! `cargo run -p credvault-benches --bin bench-report -- [--dir DIR]... [--peer NAME] [GROUP_PREFIX...]`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn median_ns(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("median")?.get("point_estimate")?.as_f64()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.ends_with("new/estimates.json") {
            out.push(p);
        }
    }
}

fn fmt_time(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.1} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

type Results = BTreeMap<String, BTreeMap<String, f64>>;

/// group -> bench id -> median (ns) for one criterion directory.
fn load(dir: &Path, prefixes: &[String]) -> Results {
    let mut files = Vec::new();
    walk(dir, &mut files);
    let mut groups: Results = BTreeMap::new();
    for f in files {
        let Ok(rel) = f.strip_prefix(dir) else {
            continue;
        };
        let parts: Vec<String> = rel
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        // group/bench[/param]/new/estimates.json
        if parts.len() < 4 || parts.iter().any(|p| p == "base" || p == "change") {
            continue;
        }
        let group = parts[0].clone();
        if !prefixes.is_empty() && !prefixes.iter().any(|p| group.starts_with(p.as_str())) {
            continue;
        }
        let id = parts[1..parts.len() - 2].join("/");
        if let Some(m) = median_ns(&f) {
            groups.entry(group).or_default().insert(id, m);
        }
    }
    groups
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut dirs = Vec::new();
    let mut peer = String::from("ring_raw_in_place");
    let mut prefixes = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dirs.extend(args.next().map(PathBuf::from)),
            "--peer" => peer = args.next().unwrap_or(peer),
            _ => prefixes.push(a),
        }
    }
    if dirs.is_empty() {
        dirs.push(PathBuf::from("target/criterion"));
    }
    let runs: Vec<Results> = dirs
        .iter()
        .map(|d| load(d, &prefixes))
        .filter(|r| !r.is_empty())
        .collect();
    let Some(first) = runs.first() else {
        eprintln!("bench-report: no criterion results under {dirs:?}");
        return ExitCode::FAILURE;
    };
    println!("{} run(s). Ratio = median / median of `{peer}` in the same run; with several runs, the median ratio [min–max].", runs.len());
    println!();
    println!("| group | benchmark | median | ratio to {peer} |");
    println!("|---|---|---:|---:|");
    for (g, benches) in first {
        for id in benches.keys() {
            let mut times = Vec::new();
            let mut ratios = Vec::new();
            for r in &runs {
                let Some(b) = r.get(g) else { continue };
                if let Some(&m) = b.get(id) {
                    times.push(m);
                    if let Some(&base) = b.get(&peer) {
                        ratios.push(m / base);
                    }
                }
            }
            let ratio = if ratios.is_empty() {
                "n/a".to_owned()
            } else if ratios.len() == 1 {
                format!("{:.2}×", ratios[0])
            } else {
                let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = ratios.iter().copied().fold(0.0, f64::max);
                format!("{:.2}× [{lo:.2}–{hi:.2}]", median(ratios))
            };
            println!("| {g} | {id} | {} | {ratio} |", fmt_time(median(times)));
        }
    }
    ExitCode::SUCCESS
}
