//! Progress of long operations (install tasks, following a claim, volume operations moving
//! data): a bar or spinner on a terminal, plain lines otherwise, nothing with `--quiet`.
//! Always on stderr, so stdout carries only the result and can be piped.
//!
//! Several things followed at once (a node drain's migrations) each get a bar of their own,
//! keyed by name ([`Progress::track`]); on a terminal they are drawn together (indicatif's
//! `MultiProgress`), otherwise each change is one line prefixed with the key.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
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
    /// The bars of tracked items, drawn together; created with the first one.
    multi: Option<MultiProgress>,
    tracks: BTreeMap<String, Tracked>,
}

/// One tracked item: its bar on a terminal, and the last line shown (changes only are
/// printed without a terminal).
struct Tracked {
    bar: Option<ProgressBar>,
    last: String,
}

/// What one tracked item shows now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackView {
    /// Bytes done and total, when the item moves data and says how far it got.
    pub position: Option<(u64, u64)>,
    /// The text beside the bar (or the whole line without a terminal).
    pub message: String,
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
                // Printed above the bars so it is not overwritten.
                let st = self.state();
                match (&st.multi, &st.bar) {
                    (Some(multi), _) => {
                        if multi.println(&s).is_err() {
                            eprintln!("{s}");
                        }
                    }
                    (None, Some(bar)) => bar.println(s),
                    (None, None) => eprintln!("{s}"),
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

    /// Shows where item `key` stands: on a terminal a bar of its own (filled by bytes when
    /// the view has a position, a spinner otherwise) labelled `key`; otherwise a line
    /// `key: message`, printed only when it changed.
    pub fn track(&self, key: &str, view: &TrackView) {
        let line = format!("{key}: {}", view.message);
        let mut st = self.state();
        if let Sink::Bar = self.sink {
            let multi = st.multi.get_or_insert_with(MultiProgress::new).clone();
            let tracked = st.tracks.entry(key.to_string()).or_insert_with(|| Tracked {
                bar: None,
                last: String::new(),
            });
            let wants_bar = view.position.is_some();
            let has_bar = tracked.bar.as_ref().is_some_and(|b| b.length().is_some());
            if tracked.bar.is_none() || wants_bar != has_bar {
                // A spinner becomes a bar once the item reports bytes (and back).
                if let Some(old) = tracked.bar.take() {
                    old.finish_and_clear();
                    multi.remove(&old);
                }
                let bar = if let Some((done, total)) = view.position {
                    // Sized before it is first drawn, so it never flashes full or empty.
                    let b = ProgressBar::new(total.max(1));
                    b.set_position(done.min(total));
                    b.set_style(
                        ProgressStyle::with_template(
                            "{prefix:.bold} [{bar:20}] {percent:>3}% {wide_msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    b
                } else {
                    let b = ProgressBar::new_spinner();
                    b.set_style(
                        ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    b
                };
                bar.set_prefix(key.to_string());
                bar.set_message(view.message.clone());
                let bar = multi.add(bar);
                bar.enable_steady_tick(Duration::from_millis(120));
                tracked.bar = Some(bar);
            }
            if let Some(bar) = &tracked.bar {
                if let Some((done, total)) = view.position {
                    bar.set_length(total.max(1));
                    bar.set_position(done.min(total));
                }
                bar.set_message(view.message.clone());
            }
            tracked.last = line;
            return;
        }
        let tracked = st.tracks.entry(key.to_string()).or_insert_with(|| Tracked {
            bar: None,
            last: String::new(),
        });
        if tracked.last == line {
            return;
        }
        tracked.last = line.clone();
        drop(st);
        self.line(line);
    }

    /// Item `key` ended: its bar stops (kept on screen with `message`), or the line is
    /// printed once more when it says something new.
    pub fn track_done(&self, key: &str, message: &str) {
        let view = TrackView {
            position: None,
            message: message.to_string(),
        };
        let take = || {
            let mut st = self.state();
            st.tracks.get_mut(key).and_then(|t| t.bar.take())
        };
        let bar = match take() {
            Some(bar) => Some(bar),
            None => {
                // Never shown yet (or no terminal): show it once, as it ended.
                self.track(key, &view);
                take()
            }
        };
        if let Some(bar) = bar {
            bar.finish_with_message(message.to_string());
        }
    }

    /// Ends the bar or spinner, and the bars of tracked items.
    pub fn finish(&self) {
        let mut st = self.state();
        if let Some(bar) = st.bar.take() {
            bar.finish_and_clear();
        }
        for (_, t) in std::mem::take(&mut st.tracks) {
            if let Some(bar) = t.bar {
                bar.finish_and_clear();
            }
        }
        if let Some(multi) = st.multi.take() {
            let _ = multi.clear();
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

    #[test]
    fn tracked_items_print_their_changes_only() {
        let (p, buf) = Progress::recording();
        let view = |m: &str| TrackView {
            position: Some((1, 2)),
            message: m.into(),
        };
        p.track("m1", &view("Pending: waiting"));
        p.track("m2", &view("Running Copy 10%"));
        p.track("m1", &view("Pending: waiting"));
        p.track("m1", &view("Running Sync 50%"));
        p.track_done("m1", "Succeeded");
        p.track_done("m1", "Succeeded");
        let lines = buf.lock().unwrap().clone();
        assert_eq!(
            lines,
            [
                "m1: Pending: waiting",
                "m2: Running Copy 10%",
                "m1: Running Sync 50%",
                "m1: Succeeded"
            ]
        );
    }
}
