//! Progress on the terminal (indicatif), hidden when stdout is not a terminal so that piped
//! output stays a table and one JSON line.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar for one phase of a run.
#[derive(Debug, Clone)]
pub struct Bar(ProgressBar);

impl Bar {
    /// A bar titled `what`, drawn on stderr when stdout is a terminal, hidden otherwise.
    pub fn new(what: &str, len: u64) -> Self {
        if !std::io::stdout().is_terminal() {
            return Self::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            )
            .expect("constant template is valid"),
        );
        bar.set_prefix(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(250));
        Self(bar)
    }

    /// A bar that draws nothing.
    pub fn hidden() -> Self {
        Self(ProgressBar::hidden())
    }

    /// Sets the total.
    pub fn set_length(&self, len: u64) {
        self.0.set_length(len);
    }

    /// Sets the position.
    pub fn set_position(&self, pos: u64) {
        self.0.set_position(pos);
    }

    /// Sets the text after the bar.
    pub fn set_message(&self, msg: String) {
        self.0.set_message(msg);
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}
