//! Log output that never blocks a session: log lines go over a channel to one
//! thread that writes whatever has queued up to stderr in a single write, at
//! most one write every few milliseconds. Under load that turns thousands of
//! small writes (and thread wake-ups) per second into a few hundred large
//! ones. A line is written within milliseconds, and all of them on exit.

use std::io::Write;
use std::sync::mpsc;
use std::sync::Mutex;

/// How long lines gather after a write before the next one.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

enum Msg {
    Line(Vec<u8>),
    Stop,
}

pub struct LogWriter {
    tx: mpsc::Sender<Msg>,
    done: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl LogWriter {
    pub fn start() -> LogWriter {
        let (tx, rx) = mpsc::channel::<Msg>();
        let handle = std::thread::Builder::new()
            .name("mx6-log".into())
            .spawn(move || {
                // Locked per write only: eprintln! elsewhere must never wait on us.
                let mut stderr = std::io::stderr();
                let mut buf = Vec::with_capacity(64 * 1024);
                let mut stop = false;
                while !stop {
                    match rx.recv() {
                        Ok(Msg::Line(l)) => buf.extend_from_slice(&l),
                        Ok(Msg::Stop) | Err(_) => stop = true,
                    }
                    while buf.len() < 1 << 20 {
                        match rx.try_recv() {
                            Ok(Msg::Line(l)) => buf.extend_from_slice(&l),
                            Ok(Msg::Stop) => stop = true,
                            Err(_) => break,
                        }
                    }
                    let _ = stderr.write_all(&buf);
                    let _ = stderr.flush();
                    buf.clear();
                    // Under load, let lines gather for a moment: the sessions'
                    // sends then find the thread awake and skip waking it,
                    // and one write carries many lines. Idle, it sleeps in recv.
                    if !stop {
                        std::thread::sleep(GATHER);
                    }
                }
            })
            .expect("start the log thread");
        LogWriter { tx, done: Mutex::new(Some(handle)) }
    }

    /// Write everything queued so far and stop the thread; later lines are
    /// written directly.
    pub fn finish(&self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(h) = self.done.lock().ok().and_then(|mut d| d.take()) {
            let _ = h.join();
        }
    }
}

/// One log event's bytes; sent as a whole when dropped.
pub struct Line {
    buf: Vec<u8>,
    owner: &'static LogWriter,
}

impl Write for Line {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if let Err(mpsc::SendError(Msg::Line(buf))) = self.owner.tx.send(Msg::Line(std::mem::take(&mut self.buf))) {
            let _ = std::io::stderr().write_all(&buf);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for &'static LogWriter {
    type Writer = Line;
    fn make_writer(&'a self) -> Self::Writer {
        Line { buf: Vec::with_capacity(256), owner: self }
    }
}
