//! `precond report`: a short human summary of what `observe` routes recorded, read back from a
//! scrape of the metrics and, optionally, from the JSON log (for the resources).
//!
//! Owns: [`Summary`], [`Summary::from_metrics`], [`Summary::add_log`] and [`Summary::render`].
//! Pure: text in, text out (the app fetches the scrape and opens the log).
//!
//! Invariants: unknown lines and malformed values are skipped, never fatal (a scrape of another
//! version still reports what it can); the resources listed are bounded ([`TOP`]).

use std::collections::HashMap;
use std::fmt::Write;
use std::io::BufRead;

/// Resources listed by blind overwrites and by would-be refusals.
pub const TOP: usize = 10;

/// What observe routes recorded.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    /// Writes with a precondition, and without.
    pub writes: (u64, u64),
    /// Blind overwrites.
    pub blind: u64,
    /// Writes without a precondition the census classified as informed, and could not classify.
    pub census: (u64, u64),
    /// The scrape had observe-route series at all.
    pub observed: bool,
    /// Would-be refusals by (precondition, reason).
    pub would_refuse: Vec<(String, String, u64)>,
    /// The origin's answers to them, by class.
    pub answered: Vec<(String, u64)>,
    /// Per resource (path as logged): blind overwrites, would-be refusals.
    pub resources: HashMap<String, (u64, u64)>,
    /// Log lines read.
    pub log_lines: u64,
}

/// One sample of a scrape: name, labels, value.
type Sample<'a> = (&'a str, Vec<(&'a str, &'a str)>, u64);

/// `name{a="x",b="y"} value` → (name, labels, value).
fn sample(line: &str) -> Option<Sample<'_>> {
    if line.starts_with('#') {
        return None;
    }
    // `name{labels} value [timestamp]` (label values here never hold spaces or braces).
    let (name, labels, rest) = match line.split_once('{') {
        Some((n, rest)) => {
            let (labels, rest) = rest.split_once('}')?;
            (n, labels, rest)
        }
        None => {
            let (n, rest) = line.split_once(' ')?;
            (n, "", rest)
        }
    };
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()? as u64;
    let labels = labels
        .split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.trim(), v.trim().trim_matches('"')))
        })
        .collect();
    Some((name, labels, value))
}

impl Summary {
    /// Reads a Prometheus text scrape of precond's metrics.
    pub fn from_metrics(text: &str) -> Summary {
        let mut s = Summary::default();
        for line in text.lines() {
            let Some((name, labels, v)) = sample(line) else {
                continue;
            };
            let label = |k: &str| labels.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
            if name.starts_with("precond_observed_writes") {
                s.observed = true;
            }
            match name {
                "precond_census_writes_total" => match label("result") {
                    Some("informed") => s.census.0 = v,
                    Some("unclassified") => s.census.1 = v,
                    _ => {}
                },
                "precond_observed_writes_total" => match label("precondition") {
                    Some("some") => s.writes.0 = v,
                    Some("none") => s.writes.1 = v,
                    _ => {}
                },
                "precond_blind_overwrites_total" => s.blind = v,
                "precond_would_refuse_total" => {
                    if let (Some(p), Some(r)) = (label("precondition"), label("reason")) {
                        s.would_refuse.push((p.to_string(), r.to_string(), v));
                    }
                }
                "precond_would_refuse_answered_total" => {
                    if let Some(a) = label("answer") {
                        s.answered.push((a.to_string(), v));
                    }
                }
                _ => {}
            }
        }
        s.would_refuse.sort_by_key(|w| std::cmp::Reverse(w.2));
        s
    }

    /// Adds the resources of a log's `precond::observe` lines (JSON, one object per line; other
    /// lines are skipped).
    pub fn add_log(&mut self, log: impl BufRead) {
        for line in log.lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            // Flattened (`log.format = "json"`) or nested under `fields`.
            let field = |k: &str| {
                v.get(k)
                    .or_else(|| v.get("fields").and_then(|f| f.get(k)))
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_string)
            };
            let (Some(event), Some(path)) = (field("event"), field("path")) else {
                continue;
            };
            let counts = match event.as_str() {
                "blind_overwrite" | "would_refuse" => {
                    self.log_lines += 1;
                    self.resources.entry(path).or_default()
                }
                _ => continue,
            };
            if event == "blind_overwrite" {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
    }

    /// The human summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.observed {
            let _ = writeln!(
                out,
                "No observe-route counters in this scrape: is it precond's /metrics, and is a route in mode = \"observe\"?"
            );
        }
        let (some, none) = self.writes;
        let total = some + none;
        let pct = |n: u64, of: u64| {
            if of == 0 {
                0.0
            } else {
                n as f64 * 100.0 / of as f64
            }
        };
        let _ = writeln!(
            out,
            "Writes observed: {total} ({none} without any precondition, {some} with one)"
        );
        let (informed, unclassified) = self.census;
        let classified = self.blind + informed;
        let _ = writeln!(
            out,
            "Blind overwrites: {} of {classified} classified PUT/PATCH/DELETE without a precondition ({:.1}% overwrote a version their caller had not seen); {unclassified} more could not be classified (their caller never read the resource through this instance, or the census forgot it)",
            self.blind,
            pct(self.blind, classified)
        );
        let would: u64 = self.would_refuse.iter().map(|w| w.2).sum();
        let _ = writeln!(
            out,
            "Writes guard would have refused (412 at the edge): {would}"
        );
        for (p, r, n) in &self.would_refuse {
            let _ = writeln!(out, "  {p}, {r}: {n}");
        }
        let accepted = self
            .answered
            .iter()
            .find(|(a, _)| a == "2xx")
            .map_or(0, |a| a.1);
        if would > 0 {
            let answers: Vec<String> = self
                .answered
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(a, n)| format!("{a} {n}"))
                .collect();
            let _ = writeln!(out, "  the origin answered: {}", answers.join(", "));
        }
        if !self.resources.is_empty() {
            let mut top: Vec<_> = self.resources.iter().collect();
            top.sort_by(|a, b| (b.1 .0, b.1 .1, a.0).cmp(&(a.1 .0, a.1 .1, b.0)));
            let _ = writeln!(
                out,
                "Resources (from {} log lines): blind overwrites, would-be refusals",
                self.log_lines
            );
            for (path, (blind, refuse)) in top.into_iter().take(TOP) {
                let _ = writeln!(out, "  {path}: {blind}, {refuse}");
            }
        }
        let _ = writeln!(
            out,
            "Switching these routes to guard (same policy) would answer {would} write(s) with 412 at the edge; the origin accepted {accepted} of them, each a lost update in the making. Blind overwrites need clients that send If-Match (or mode = \"enforce\" with require) to be prevented."
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_scrape_and_a_log() {
        let scrape = "# HELP x\nprecond_observed_writes_total{precondition=\"some\"} 4\nprecond_observed_writes_total{precondition=\"none\"} 6\nprecond_blind_overwrites_total 3\nprecond_census_writes_total{result=\"informed\"} 3\nprecond_census_writes_total{result=\"unclassified\"} 1\nprecond_would_refuse_total{precondition=\"If-Match\",reason=\"superseded\"} 2\nprecond_would_refuse_answered_total{answer=\"2xx\"} 2\nprecond_would_refuse_answered_total{answer=\"412\"} 0\ngarbage line\n";
        let mut s = Summary::from_metrics(scrape);
        assert_eq!(s.writes, (4, 6));
        assert_eq!(s.blind, 3);
        assert_eq!(
            s.would_refuse,
            vec![("If-Match".into(), "superseded".into(), 2)]
        );
        let log = "{\"level\":\"INFO\",\"target\":\"precond::observe\",\"event\":\"blind_overwrite\",\"path\":\"/items/1\"}\nnot json\n{\"fields\":{\"event\":\"would_refuse\",\"path\":\"/items/2\"}}\n{\"event\":\"blind_overwrite\",\"path\":\"/items/1\"}\n";
        s.add_log(log.as_bytes());
        assert_eq!(s.resources["/items/1"], (2, 0));
        assert_eq!(s.resources["/items/2"], (0, 1));
        let text = s.render();
        assert!(
            text.contains("Writes observed: 10 (6 without any precondition, 4 with one)"),
            "{text}"
        );
        assert!(
            text.contains("Blind overwrites: 3 of 6 classified"),
            "{text}"
        );
        assert!(text.contains("(50.0% overwrote"), "{text}");
        assert!(text.contains("1 more could not be classified"), "{text}");
        assert!(text.contains("If-Match, superseded: 2"), "{text}");
        assert!(text.contains("/items/1: 2, 0"), "{text}");
        assert!(text.contains("the origin accepted 2 of them"), "{text}");
    }
}
