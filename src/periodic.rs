//! A background thread that runs a task at an interval until it is dropped:
//! how the checkpoint signer and the metrics' database refresher run.

use std::sync::mpsc;
use std::time::Duration;

/// The running task. Dropping it stops the thread, after the run in
/// progress, and waits for it.
pub struct Periodic {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Periodic {
    /// Runs `tick` on a thread called `name` every `every`: the first time at
    /// once when `at_once`, else after the first interval.
    pub fn start(
        name: &str,
        every: Duration,
        at_once: bool,
        mut tick: impl FnMut() + Send + 'static,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                if at_once {
                    tick();
                }
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    tick();
                }
            })?;
        Ok(Periodic {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
