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
    let label_width = first
        .report
        .metrics
        .iter()
        .map(|m| label_with_unit(m).len())
        .max()
        .unwrap_or(6)
        .max(6);
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

/// The machine-readable report: one line of JSON.
pub fn json_line(scenario: &str, params: &Value, runs: &[Run]) -> String {
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
    line.to_string()
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
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

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(1234567.0), "1,234,567");
        assert_eq!(number(-1000.0), "-1,000");
        assert_eq!(number(12.345), "12.35");
        assert_eq!(number(0.1234), "0.123");
        assert_eq!(number(250.55), "250.6");
    }
}
