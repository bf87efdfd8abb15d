//! Progress of long operations (install tasks, following a claim): a bar or spinner on a
//! terminal, plain lines otherwise, nothing with `--quiet`. Always on stderr, so stdout
//! carries only the result and can be piped.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
enum Sink {
    Bar,
    Lines,
    Quiet,
    /// Lines kept in memory, for tests.
    Record(Arc<Mutex<Vec<String>>>),
}

/// A progress reporter. Cheap to pass by reference; interior state is behind a mutex
/// because the follow loops report from async code.
pub struct Progress {
    sink: Sink,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    last_status: Option<String>,
}

impl Progress {
    /// Bar on a terminal, lines otherwise; nothing when `quiet`.
    pub fn auto(quiet: bool) -> Self {
        let sink = if quiet {
            Sink::Quiet
        } else if std::io::stderr().is_terminal() {
            Sink::Bar
        } else {
            Sink::Lines
        };
        Progress {
            sink,
            state: Mutex::new(State::default()),
        }
    }

    pub fn quiet() -> Self {
        Progress {
            sink: Sink::Quiet,
            state: Mutex::new(State::default()),
        }
    }

    pub fn lines() -> Self {
        Progress {
            sink: Sink::Lines,
            state: Mutex::new(State::default()),
        }
    }

    /// A reporter that records its lines, and the shared buffer to read them from.
    pub fn recording() -> (Self, Arc<Mutex<Vec<String>>>) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        (
            Progress {
                sink: Sink::Record(buf.clone()),
                state: Mutex::new(State::default()),
            },
            buf,
        )
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn line(&self, s: String) {
        match &self.sink {
            Sink::Lines => eprintln!("{s}"),
            Sink::Record(buf) => buf.lock().unwrap_or_else(|e| e.into_inner()).push(s),
            Sink::Bar => {
                // Printed above the bar so it is not overwritten.
                match &self.state().bar {
                    Some(bar) => bar.println(s),
                    None => eprintln!("{s}"),
                }
            }
            Sink::Quiet => {}
        }
    }

    /// Starts a run of `total` tasks.
    pub fn start(&self, total: u64, what: &str) {
        let mut st = self.state();
        st.total = total;
        st.done = 0;
        if let Sink::Bar = self.sink {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {prefix} [{bar:30}] {pos}/{len} {wide_msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(what.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            st.bar = Some(bar);
        }
    }

    /// One task finished.
    pub fn task_done(&self, msg: &str) {
        let (done, total, bar) = {
            let mut st = self.state();
            st.done += 1;
            (st.done, st.total, st.bar.clone())
        };
        match (&self.sink, bar) {
            (Sink::Bar, Some(bar)) => {
                bar.inc(1);
                bar.set_message(msg.to_string());
            }
            _ => self.line(format!("[{done}/{total}] {msg}")),
        }
    }

    /// The current state of something being waited for; repeated states are shown once.
    pub fn status(&self, msg: &str) {
        {
            let mut st = self.state();
            if st.last_status.as_deref() == Some(msg) {
                return;
            }
            st.last_status = Some(msg.to_string());
            if let Sink::Bar = self.sink {
                let bar = st.bar.get_or_insert_with(|| {
                    let b = ProgressBar::new_spinner();
                    b.enable_steady_tick(Duration::from_millis(120));
                    b
                });
                bar.set_message(msg.to_string());
                return;
            }
        }
        self.line(msg.to_string());
    }

    /// A line worth keeping in the scrollback (not replaced by the next status).
    pub fn note(&self, msg: &str) {
        self.line(msg.to_string());
    }

    /// Ends the bar or spinner.
    pub fn finish(&self) {
        let mut st = self.state();
        if let Some(bar) = st.bar.take() {
            bar.finish_and_clear();
        }
        st.last_status = None;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_tasks_and_deduplicates_statuses() {
        let (p, buf) = Progress::recording();
        p.start(2, "install");
        p.task_done("applied Namespace hwameistor");
        p.status("Pending");
        p.status("Pending");
        p.status("Bound");
        p.task_done("applied CRD x");
        let lines = buf.lock().unwrap().clone();
        assert_eq!(
            lines,
            [
                "[1/2] applied Namespace hwameistor",
                "Pending",
                "Bound",
                "[2/2] applied CRD x"
            ]
        );
    }
}
