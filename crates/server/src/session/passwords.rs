//! Password checks on a small pool of dedicated threads, one per core.
//! argon2 is memory-hard on purpose (19 MiB per check): on the runtime's
//! blocking pool, hundreds of threads would each keep such a block in their
//! own allocator arena and an AUTH flood would take the host's memory. Here
//! at most one check per core runs, each thread reuses its memory, and an
//! attempt that finds no free thread within its wait is told so.

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};

use crate::users::UserDb;

struct Check {
    user: String,
    password: String,
    reply: oneshot::Sender<bool>,
}

pub struct Passwords {
    tx: Mutex<mpsc::Sender<Check>>,
    slots: Arc<Semaphore>,
}

/// Why a check gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Every thread was busy for the whole wait.
    NoSlot,
    /// The pool is gone (shutting down).
    Gone,
}

impl Passwords {
    /// `threads` checkers (at least one) for the users of `db`.
    pub fn start(db: Arc<UserDb>, threads: usize) -> Passwords {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Check>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let (rx, db) = (rx.clone(), db.clone());
            let _ = std::thread::Builder::new().name(format!("mx6-auth-{i}")).spawn(move || {
                // This thread's argon2 memory, reused by every check it runs.
                let mut memory = Vec::new();
                loop {
                    let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                        Ok(j) => j,
                        Err(_) => return,
                    };
                    let ok = db.authenticate_in(&job.user, &job.password, &mut memory);
                    let _ = job.reply.send(ok);
                }
            });
        }
        Passwords { tx: Mutex::new(tx), slots: Arc::new(Semaphore::new(threads)) }
    }

    /// Check `password` for `user`, waiting at most `wait` for a free thread.
    pub async fn check(&self, user: &str, password: String, wait: Duration) -> Result<bool, Busy> {
        let _permit = match tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(Busy::Gone),
            Err(_) => return Err(Busy::NoSlot),
        };
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.lock().unwrap_or_else(|e| e.into_inner()).send(Check { user: user.to_string(), password, reply });
        if sent.is_err() {
            return Err(Busy::Gone);
        }
        rx.await.map_err(|_| Busy::Gone)
    }
}
