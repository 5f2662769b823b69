//! Reads criterion's `target/criterion/**/new/estimates.json` and prints, per group, each
//! benchmark's median and its ratio to the group's peer (the `*_raw_*` or `peer_*` entry named
//! by `--peer`, default `ring_raw_in_place`). Markdown, ready for docs/PERFORMANCE.md.
//!
//! `cargo run -p credvault-benches --bin bench-report -- [--dir target/criterion] [--peer NAME] [GROUP_PREFIX...]`

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

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut dir = PathBuf::from("target/criterion");
    let mut peer = String::from("ring_raw_in_place");
    let mut prefixes = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from).unwrap_or(dir),
            "--peer" => peer = args.next().unwrap_or(peer),
            _ => prefixes.push(a),
        }
    }
    let mut files = Vec::new();
    walk(&dir, &mut files);
    // group -> bench id -> median
    let mut groups: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for f in files {
        let Ok(rel) = f.strip_prefix(&dir) else {
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
    if groups.is_empty() {
        eprintln!("bench-report: no criterion results under {}", dir.display());
        return ExitCode::FAILURE;
    }
    println!("| group | benchmark | median | ratio to {peer} |");
    println!("|---|---|---:|---:|");
    for (g, benches) in &groups {
        let base = benches.get(&peer).copied();
        for (id, m) in benches {
            let ratio = base.map_or_else(|| "n/a".to_owned(), |b| format!("{:.2}×", m / b));
            println!("| {g} | {id} | {} | {ratio} |", fmt_time(*m));
        }
    }
    ExitCode::SUCCESS
}
