//! The study on a thread of its own: every storage call of the trial loop runs there, so no
//! disk, fsync or database lock ever holds up the runtime thread that sends the host's
//! heartbeats (a stalled host would otherwise trip the robot's watchdog and a good gait would
//! be booked as a fault).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::study::Study;

type Job = Box<dyn FnOnce(&mut Study) + Send>;

/// Owns a [`Study`] on a dedicated thread; the trial loop awaits each call.
pub struct StudyWorker {
    handle: Option<StudyHandle>,
    thread: Option<JoinHandle<Study>>,
}

/// A cheap, cloneable way to call the study on its thread (for tasks such as the lease
/// keeper); calls from every handle run in the order they arrive.
#[derive(Clone)]
pub struct StudyHandle {
    jobs: mpsc::Sender<Job>,
}

impl StudyHandle {
    /// Runs `f` on the study's thread and waits (asynchronously) for its result.
    pub async fn call<R, F>(&self, f: F) -> R
    where
        R: Send + 'static,
        F: FnOnce(&mut Study) -> R + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |study| {
            let _ = tx.send(f(study));
        });
        self.jobs
            .send(job)
            .expect("the storage thread stopped (it panicked: see above)");
        rx.await
            .expect("the storage thread stopped (it panicked: see above)")
    }

    /// [`StudyHandle::call`] for a plain thread: blocks until `f` has run.
    pub fn call_blocking<R, F>(&self, f: F) -> R
    where
        R: Send + 'static,
        F: FnOnce(&mut Study) -> R + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |study| {
            let _ = tx.send(f(study));
        });
        self.jobs
            .send(job)
            .expect("the storage thread stopped (it panicked: see above)");
        rx.recv()
            .expect("the storage thread stopped (it panicked: see above)")
    }
}

/// No trial is watched.
const NONE: u64 = u64::MAX;

/// Keeps this worker's lease on the trial it runs alive: a thread of its own (not the one
/// that sends heartbeats) renews it every third of the lease through the study's thread.
/// When a renewal finds the trial taken over (this worker was silent longer than the lease),
/// [`LeaseKeeper::lost`] says so and the trial loop abandons the trial.
pub struct LeaseKeeper {
    current: Arc<AtomicU64>,
    lost: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LeaseKeeper {
    /// Starts renewing leases of `duration` through `study`.
    pub fn start(study: StudyHandle, duration: Duration) -> LeaseKeeper {
        let current = Arc::new(AtomicU64::new(NONE));
        let lost = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, l, st) = (current.clone(), lost.clone(), stop.clone());
        let every = (duration / 3).max(Duration::from_millis(10));
        let thread = std::thread::Builder::new()
            .name("lease".into())
            .spawn(move || {
                let mut due = Instant::now() + every;
                while !st.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20).min(every));
                    if Instant::now() < due {
                        continue;
                    }
                    due = Instant::now() + every;
                    let number = c.load(Ordering::SeqCst);
                    if number == NONE {
                        continue;
                    }
                    match study.call_blocking(move |s| s.renew_lease(number)) {
                        Ok(true) => {}
                        Ok(false) => {
                            if c.load(Ordering::SeqCst) == number {
                                l.store(true, Ordering::SeqCst);
                            }
                        }
                        Err(e) => tracing::warn!("renewing the lease on trial {number}: {e}"),
                    }
                }
            })
            .ok();
        LeaseKeeper {
            current,
            lost,
            stop,
            thread,
        }
    }

    /// Keeps the lease on trial `number` from now on.
    pub fn watch(&self, number: u64) {
        self.lost.store(false, Ordering::SeqCst);
        self.current.store(number, Ordering::SeqCst);
    }

    /// No trial to keep (between trials).
    pub fn release(&self) {
        self.current.store(NONE, Ordering::SeqCst);
    }

    /// Whether the trial watched was taken over by another worker.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl StudyWorker {
    /// Moves `study` onto a new thread named `storage`.
    pub fn spawn(study: Study) -> std::io::Result<StudyWorker> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("storage".into())
            .spawn(move || {
                let mut study = study;
                for job in rx {
                    job(&mut study);
                }
                study
            })?;
        Ok(StudyWorker {
            handle: Some(StudyHandle { jobs: tx }),
            thread: Some(thread),
        })
    }

    /// Runs `f` on the study's thread and waits (asynchronously) for its result. Calls run in
    /// the order they are made.
    pub async fn call<R, F>(&self, f: F) -> R
    where
        R: Send + 'static,
        F: FnOnce(&mut Study) -> R + Send + 'static,
    {
        self.handle().call(f).await
    }

    /// A handle for other tasks; the thread ends when the worker and every handle are gone.
    pub fn handle(&self) -> StudyHandle {
        self.handle
            .clone()
            .expect("the storage thread runs until the worker is dropped")
    }

    /// Stops the thread after the calls already made (once every handle is dropped too) and
    /// gives the study back.
    pub fn into_study(mut self) -> Study {
        self.handle.take();
        self.thread
            .take()
            .expect("joined once")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for StudyWorker {
    fn drop(&mut self) {
        self.handle.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::RandomSampler;
    use crate::space::{Distribution, SearchSpace};
    use crate::storage;
    use crate::trial::Direction;

    #[tokio::test(flavor = "current_thread")]
    async fn calls_run_in_order_on_another_thread_and_the_runtime_stays_free() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("w.db").display());
        let space = SearchSpace::new([(
            "x".to_string(),
            Distribution::Float {
                low: 0.0,
                high: 1.0,
                log: false,
                step: None,
            },
        )])
        .unwrap();
        let study = Study::create_or_load(
            storage::open(&url).unwrap(),
            "w",
            Direction::Maximize,
            space,
            Box::new(RandomSampler::new(1)),
        )
        .unwrap();
        let worker = StudyWorker::spawn(study).unwrap();
        let main = std::thread::current().id();
        let on = worker.call(|_| std::thread::current().id()).await;
        assert_ne!(on, main);
        // A call that blocks its thread does not block this runtime: a timer still fires.
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let slow = worker.call(move |s| {
            let _ = blocked.recv();
            s.ask().unwrap().number
        });
        let ticked = async {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            release.send(()).unwrap();
        };
        let (number, ()) = tokio::join!(slow, ticked);
        assert_eq!(number, 0);
        let second = worker.call(|s| s.ask().unwrap().number).await;
        assert_eq!(second, 1);
        let study = worker.into_study();
        assert_eq!(study.trials().unwrap().len(), 2);
    }
}
