//! The study on a thread of its own: every storage call of the trial loop runs there, so no
//! disk, fsync or database lock ever holds up the runtime thread that sends the host's
//! heartbeats (a stalled host would otherwise trip the robot's watchdog and a good gait would
//! be booked as a fault).

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::study::Study;

type Job = Box<dyn FnOnce(&mut Study) + Send>;

/// Owns a [`Study`] on a dedicated thread; the trial loop awaits each call.
pub struct StudyWorker {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<Study>>,
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
            jobs: Some(tx),
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
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |study| {
            let _ = tx.send(f(study));
        });
        self.jobs
            .as_ref()
            .expect("the storage thread runs until the worker is dropped")
            .send(job)
            .expect("the storage thread stopped (it panicked: see above)");
        rx.await
            .expect("the storage thread stopped (it panicked: see above)")
    }

    /// Stops the thread after the calls already made and gives the study back.
    pub fn into_study(mut self) -> Study {
        self.jobs.take();
        self.thread
            .take()
            .expect("joined once")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for StudyWorker {
    fn drop(&mut self) {
        self.jobs.take();
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
