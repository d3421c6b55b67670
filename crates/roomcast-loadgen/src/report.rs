//! Reports: a table for people, then one JSON line for scripts. When a baseline ran in the
//! same invocation, each metric gets the ratio target ÷ baseline.
//!
//! ```text
//! fanout  rooms=1 clients=1000 …
//! metric                       roomcast    reference    ratio
//! deliveries/s                  998,211    1,000,013     1.00
//! {"scenario":"fanout","params":{…},"runs":[…],"ratios":{…}}
//! ```

use serde::Serialize;
use serde_json::{Map, Value, json};

/// Which way a metric is good.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// More is better (rates).
    Higher,
    /// Less is better (latency, loss, memory, CPU per unit).
    Lower,
    /// Neither (counts that describe the run).
    Neither,
}

/// One figure of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    /// JSON key.
    pub key: &'static str,
    /// Table label.
    pub label: &'static str,
    /// Unit shown in the table.
    pub unit: &'static str,
    /// The value, when it was measured.
    pub value: Option<f64>,
    /// Which way is good.
    pub better: Better,
}

/// What one scenario measured against one server.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Figures, in table order.
    pub metrics: Vec<Metric>,
    /// Lines printed above the table (sweep steps, failures).
    pub notes: Vec<String>,
    /// Everything else, for the JSON line.
    pub details: Value,
}

impl Report {
    /// Appends a figure.
    pub fn push(
        &mut self,
        key: &'static str,
        label: &'static str,
        unit: &'static str,
        value: impl Into<Option<f64>>,
        better: Better,
    ) {
        self.metrics.push(Metric {
            key,
            label,
            unit,
            value: value.into(),
            better,
        });
    }

    /// The value of `key`, if present and measured.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.key == key)
            .and_then(|m| m.value)
    }
}

/// One server's report, with its name and URL.
#[derive(Debug, Clone)]
pub struct Run {
    /// The target's label.
    pub label: String,
    /// Its URL.
    pub url: String,
    /// What was measured.
    pub report: Report,
}

/// The human-readable report.
pub fn table(scenario: &str, params: &Value, runs: &[Run]) -> String {
    let mut out = String::new();
    let params_line: Vec<String> = params
        .as_object()
        .map(|o| o.iter().map(|(k, v)| format!("{k}={}", plain(v))).collect())
        .unwrap_or_default();
    out.push_str(&format!("{scenario}  {}\n", params_line.join(" ")));
    for run in runs {
        for note in &run.report.notes {
            out.push_str(&format!("  [{}] {note}\n", run.label));
        }
    }
    let Some(first) = runs.first() else {
        return out;
    };
    let label_width = label_width(&first.report.metrics);
    let col = runs
        .iter()
        .map(|r| r.label.len())
        .max()
        .unwrap_or(0)
        .max(12);
    out.push_str(&format!("{:<label_width$}", "metric"));
    for run in runs {
        out.push_str(&format!("  {:>col$}", run.label));
    }
    if runs.len() == 2 {
        out.push_str(&format!("  {:>8}", "ratio"));
    }
    out.push('\n');
    for metric in &first.report.metrics {
        out.push_str(&format!("{:<label_width$}", label_with_unit(metric)));
        for run in runs {
            let value = run.report.get(metric.key);
            out.push_str(&format!("  {:>col$}", value.map_or("-".to_owned(), number)));
        }
        if let [a, b] = runs {
            let ratio = ratio(a.report.get(metric.key), b.report.get(metric.key));
            out.push_str(&format!(
                "  {:>8}",
                ratio.map_or("-".to_owned(), |r| format!("{r:.2}"))
            ));
        }
        out.push('\n');
    }
    out
}

/// One round of a comparison: every target's run, in the targets' order, and the label of the
/// one that ran first.
#[derive(Debug, Clone)]
pub struct Round {
    /// The label of the target that ran first in this round.
    pub first: String,
    /// The runs, in the targets' order (the target, then the baseline), whichever ran first.
    pub runs: Vec<Run>,
}

/// The machine-readable report: one line of JSON.
pub fn json_line(scenario: &str, params: &Value, runs: &[Run]) -> String {
    json_value(scenario, params, runs).to_string()
}

/// [`json_line`] as a value, for callers that add to it.
pub fn json_value(scenario: &str, params: &Value, runs: &[Run]) -> Value {
    let runs_json: Vec<Value> = runs
        .iter()
        .map(|run| {
            let metrics: Map<String, Value> = run
                .report
                .metrics
                .iter()
                .map(|m| (m.key.to_owned(), m.value.map_or(Value::Null, Value::from)))
                .collect();
            json!({
                "label": run.label,
                "url": run.url,
                "metrics": metrics,
                "details": run.report.details,
            })
        })
        .collect();
    let mut line = json!({
        "scenario": scenario,
        "params": params,
        "runs": runs_json,
    });
    if let [a, b] = runs {
        let ratios: Map<String, Value> = a
            .report
            .metrics
            .iter()
            .filter_map(|m| {
                ratio(m.value, b.report.get(m.key)).map(|r| (m.key.to_owned(), Value::from(r)))
            })
            .collect();
        line["ratios"] = Value::Object(ratios);
    }
    line
}

/// One figure across the rounds: the target's ratio to the baseline in each round (or, with
/// no baseline, the target's value), their median, and the rounds the target won.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// JSON key of the figure.
    pub key: &'static str,
    /// Per round: the ratio target ÷ baseline, or the target's value without a baseline;
    /// `None` where it was not measured.
    pub per_round: Vec<Option<f64>>,
    /// The median of the measured rounds.
    pub median: Option<f64>,
    /// With a baseline, for a figure with a better side that was measured: the rounds in which
    /// the target's was better (ratio above 1 for a rate, below 1 for a cost).
    pub target_won: Option<usize>,
    /// Counted with `target_won`: the rounds in which both measured the same (ratio 1).
    pub tied: Option<usize>,
}

/// Every figure of the first target across `rounds` (see [`Summary`]).
///
/// ```
/// use roomcast_loadgen::report::{Better, Report, Round, Run, summarize};
///
/// let run = |label: &str, rate: f64| {
///     let mut report = Report::default();
///     report.push("rate", "rate", "msg/s", rate, Better::Higher);
///     Run { label: label.into(), url: String::new(), report }
/// };
/// let rounds = [
///     Round { first: "roomcast".into(), runs: vec![run("roomcast", 1500.0), run("bun", 1000.0)] },
///     Round { first: "bun".into(), runs: vec![run("roomcast", 900.0), run("bun", 1000.0)] },
///     Round { first: "roomcast".into(), runs: vec![run("roomcast", 1200.0), run("bun", 1000.0)] },
/// ];
/// let rate = &summarize(&rounds)[0];
/// assert_eq!(rate.per_round, [Some(1.5), Some(0.9), Some(1.2)]);
/// assert_eq!((rate.median, rate.target_won), (Some(1.2), Some(2)));
/// ```
pub fn summarize(rounds: &[Round]) -> Vec<Summary> {
    let Some(first) = rounds.first().and_then(|r| r.runs.first()) else {
        return Vec::new();
    };
    let with_baseline = with_baseline(rounds);
    first
        .report
        .metrics
        .iter()
        .map(|metric| {
            let per_round: Vec<Option<f64>> = rounds
                .iter()
                .map(|round| match round.runs.as_slice() {
                    [a, b] => ratio(a.report.get(metric.key), b.report.get(metric.key)),
                    [a] => a.report.get(metric.key),
                    _ => None,
                })
                .collect();
            let measured = per_round.iter().any(Option::is_some);
            let target_won = match metric.better {
                _ if !with_baseline || !measured => None,
                Better::Neither => None,
                Better::Higher => Some(per_round.iter().flatten().filter(|r| **r > 1.0).count()),
                Better::Lower => Some(per_round.iter().flatten().filter(|r| **r < 1.0).count()),
            };
            let tied =
                target_won.map(|_| per_round.iter().flatten().filter(|r| **r == 1.0).count());
            Summary {
                key: metric.key,
                tied,
                median: median(per_round.iter().flatten().copied().collect()),
                per_round,
                target_won,
            }
        })
        .collect()
}

/// The summary of several rounds for people: one line per figure.
pub fn summary_table(scenario: &str, rounds: &[Round]) -> String {
    let mut out = String::new();
    let Some(first) = rounds.first().and_then(|r| r.runs.first()) else {
        return out;
    };
    let baseline = rounds
        .first()
        .and_then(|r| r.runs.get(1))
        .map(|b| b.label.as_str());
    let order: Vec<&str> = rounds.iter().map(|r| r.first.as_str()).collect();
    match baseline {
        Some(baseline) => out.push_str(&format!(
            "{scenario} summary: {} rounds, {} ÷ {baseline} (first to run: {})\n",
            rounds.len(),
            first.label,
            order.join(", ")
        )),
        None => out.push_str(&format!(
            "{scenario} summary: {} rounds of {}\n",
            rounds.len(),
            first.label
        )),
    }
    let label_width = label_width(&first.report.metrics);
    out.push_str(&format!("{:<label_width$}", "metric"));
    for i in 1..=rounds.len() {
        out.push_str(&format!("  {:>8}", format!("round {i}")));
    }
    out.push_str(&format!("  {:>8}", "median"));
    if baseline.is_some() {
        out.push_str(&format!("  {} better", first.label));
    }
    out.push('\n');
    for (metric, summary) in first.report.metrics.iter().zip(summarize(rounds)) {
        out.push_str(&format!("{:<label_width$}", label_with_unit(metric)));
        let cell = |v: Option<f64>| match (v, baseline) {
            (None, _) => "-".to_owned(),
            (Some(r), Some(_)) => format!("{r:.2}"),
            (Some(v), None) => number(v),
        };
        for value in &summary.per_round {
            out.push_str(&format!("  {:>8}", cell(*value)));
        }
        out.push_str(&format!("  {:>8}", cell(summary.median)));
        if let Some(won) = summary.target_won {
            out.push_str(&format!("  {won} of {}", rounds.len()));
        }
        if let Some(tied) = summary.tied.filter(|&t| t > 0) {
            out.push_str(&format!(", {tied} tied"));
        }
        out.push('\n');
    }
    out
}

/// The summary of several rounds for scripts: one line of JSON.
pub fn summary_json_line(scenario: &str, params: &Value, rounds: &[Round]) -> String {
    let summaries = summarize(rounds);
    let pick = |f: &dyn Fn(&Summary) -> Value| -> Map<String, Value> {
        summaries.iter().map(|s| (s.key.to_owned(), f(s))).collect()
    };
    let with_baseline = with_baseline(rounds);
    let mut summary = json!({
        "rounds": rounds.len(),
        "first": rounds.iter().map(|r| r.first.clone()).collect::<Vec<_>>(),
        "target": rounds.first().and_then(|r| r.runs.first()).map(|r| r.label.clone()),
        "baseline": rounds.first().and_then(|r| r.runs.get(1)).map(|r| r.label.clone()),
    });
    let (per_round, median) = if with_baseline {
        ("ratios", "median_ratios")
    } else {
        ("values", "median_values")
    };
    summary[per_round] = Value::Object(pick(&|s| json!(s.per_round)));
    summary[median] = Value::Object(pick(&|s| json!(s.median)));
    if with_baseline {
        summary["target_won"] = Value::Object(pick(&|s| json!(s.target_won)));
        summary["tied"] = Value::Object(pick(&|s| json!(s.tied)));
    }
    json!({"scenario": scenario, "params": params, "summary": summary}).to_string()
}

/// Whether every round compared a target with a baseline (two runs), so figures are ratios.
fn with_baseline(rounds: &[Round]) -> bool {
    rounds.iter().all(|r| r.runs.len() == 2)
}

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

/// The width of the first column: the longest label, at least "metric".
fn label_width(metrics: &[Metric]) -> usize {
    metrics
        .iter()
        .map(|m| label_with_unit(m).len())
        .max()
        .unwrap_or(6)
        .max(6)
}

fn label_with_unit(metric: &Metric) -> String {
    if metric.unit.is_empty() {
        metric.label.to_owned()
    } else {
        format!("{} ({})", metric.label, metric.unit)
    }
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A number for the table: integers with thousands separators, others with 2-3 significant
/// decimals.
fn number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    if value.fract() == 0.0 && value.abs() < 1e15 {
        return group(value as i64);
    }
    let abs = value.abs();
    if abs >= 1000.0 {
        group(value.round() as i64)
    } else if abs >= 100.0 {
        format!("{value:.1}")
    } else if abs >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(label: &str, rate: f64, p99: f64) -> Run {
        let mut report = Report::default();
        report.push("rate", "rate", "msg/s", rate, Better::Higher);
        report.push("p99", "p99", "ms", p99, Better::Lower);
        report.push("server_cpu", "server CPU", "s", None, Better::Lower);
        Run {
            label: label.to_owned(),
            url: "ws://127.0.0.1:1/ws".to_owned(),
            report,
        }
    }

    #[test]
    fn two_runs_get_ratios_in_the_table_and_the_json() {
        let runs = [run("a", 1500.0, 12.5), run("b", 1000.0, 25.0)];
        let params = json!({"rooms": 1});
        let table = table("fanout", &params, &runs);
        assert!(table.starts_with("fanout  rooms=1\n"), "{table}");
        assert!(table.contains("1,500"), "{table}");
        assert!(table.contains("1.50"), "{table}");
        let line: Value = serde_json::from_str(&json_line("fanout", &params, &runs)).unwrap();
        assert_eq!(line["ratios"]["rate"], 1.5);
        assert_eq!(line["ratios"]["p99"], 0.5);
        assert!(line["ratios"].get("server_cpu").is_none());
        assert_eq!(line["runs"][1]["metrics"]["rate"], 1000.0);
    }

    fn round(first: &str, runs: Vec<Run>) -> Round {
        Round {
            first: first.to_owned(),
            runs,
        }
    }

    #[test]
    fn rounds_are_summarized_as_ratios_with_their_median_and_the_rounds_won() {
        let rounds = [
            round("a", vec![run("a", 1500.0, 12.5), run("b", 1000.0, 25.0)]),
            round("b", vec![run("a", 900.0, 30.0), run("b", 1000.0, 20.0)]),
            round("a", vec![run("a", 1200.0, 10.0), run("b", 1000.0, 20.0)]),
        ];
        let summary = summarize(&rounds);
        let rate = summary.iter().find(|s| s.key == "rate").unwrap();
        assert_eq!(rate.per_round, [Some(1.5), Some(0.9), Some(1.2)]);
        assert_eq!(rate.median, Some(1.2));
        assert_eq!(rate.target_won, Some(2));
        // A cost is won with a ratio below 1.
        let p99 = summary.iter().find(|s| s.key == "p99").unwrap();
        assert_eq!(p99.per_round, [Some(0.5), Some(1.5), Some(0.5)]);
        assert_eq!(p99.target_won, Some(2));
        // Not measured: no ratio, no median, no count of rounds won.
        let cpu = summary.iter().find(|s| s.key == "server_cpu").unwrap();
        assert_eq!(cpu.per_round, [None, None, None]);
        assert_eq!((cpu.median, cpu.target_won), (None, None));

        let table = summary_table("sweep", &rounds);
        assert!(
            table.starts_with("sweep summary: 3 rounds, a ÷ b (first to run: a, b, a)\n"),
            "{table}"
        );
        let rate_line = table.lines().find(|l| l.starts_with("rate")).unwrap();
        assert!(rate_line.contains("1.50"), "{table}");
        assert!(rate_line.ends_with("1.20  2 of 3"), "{table}");
        let line: Value =
            serde_json::from_str(&summary_json_line("sweep", &json!({}), &rounds)).unwrap();
        assert_eq!(line["summary"]["rounds"], 3);
        assert_eq!(line["summary"]["first"], json!(["a", "b", "a"]));
        assert_eq!(line["summary"]["ratios"]["rate"], json!([1.5, 0.9, 1.2]));
        assert_eq!(line["summary"]["median_ratios"]["rate"], 1.2);
        assert_eq!(line["summary"]["target_won"]["p99"], 2);
        assert_eq!(line["summary"]["tied"]["rate"], 0);

        // Equal figures are ties, not losses.
        let tie = [round(
            "a",
            vec![run("a", 1000.0, 20.0), run("b", 1000.0, 25.0)],
        )];
        let rate = summarize(&tie)
            .into_iter()
            .find(|s| s.key == "rate")
            .unwrap();
        assert_eq!((rate.target_won, rate.tied), (Some(0), Some(1)));
        let table = summary_table("sweep", &tie);
        let rate_line = table.lines().find(|l| l.starts_with("rate")).unwrap();
        assert!(rate_line.ends_with("0 of 1, 1 tied"), "{table}");
    }

    #[test]
    fn rounds_without_a_baseline_are_summarized_as_values() {
        let rounds = [
            round("a", vec![run("a", 1500.0, 12.5)]),
            round("a", vec![run("a", 1000.0, 20.0)]),
        ];
        let rate = summarize(&rounds)
            .into_iter()
            .find(|s| s.key == "rate")
            .unwrap();
        assert_eq!(rate.per_round, [Some(1500.0), Some(1000.0)]);
        assert_eq!(rate.median, Some(1250.0), "the mean of the middle two");
        assert_eq!((rate.target_won, rate.tied), (None, None));
        let table = summary_table("history", &rounds);
        assert!(
            table.starts_with("history summary: 2 rounds of a\n"),
            "{table}"
        );
        assert!(table.contains("1,250"), "{table}");
        let line: Value =
            serde_json::from_str(&summary_json_line("history", &json!({}), &rounds)).unwrap();
        assert_eq!(line["summary"]["values"]["rate"], json!([1500.0, 1000.0]));
        assert_eq!(line["summary"]["median_values"]["rate"], 1250.0);
        assert!(line["summary"].get("target_won").is_none());
        assert!(line["summary"]["baseline"].is_null());
    }

    #[test]
    fn median_of_nothing_is_none() {
        assert_eq!(median(Vec::new()), None);
        assert_eq!(median(vec![f64::NAN]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(1234567.0), "1,234,567");
        assert_eq!(number(-1000.0), "-1,000");
        assert_eq!(number(12.345), "12.35");
        assert_eq!(number(0.1234), "0.123");
        assert_eq!(number(250.55), "250.6");
    }
}
