//! The simulated robot the daemon starts when `robot.device = "sim"`: `gaittune sim` as a
//! child process on its own pseudo-terminal.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::config::Config;

/// The simulated robot started as a child process on its own pseudo-terminal.
pub(super) struct SimProcess {
    child: Child,
    /// The pseudo-terminal the robot serves on.
    pub device: String,
}

impl SimProcess {
    pub fn spawn(config: &Config) -> Result<SimProcess> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe()
            .context("finding the gaittune executable to start the simulated robot")?;
        let sim = &config.sim;
        let mut cmd = Command::new(exe);
        cmd.arg("sim")
            .args(sim.sim_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group: a terminal's Ctrl-C reaches the daemon, which stops the
            // robot properly, not the robot itself.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .context("starting the simulated robot (gaittune sim)")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                bail!("the simulated robot did not announce its pseudo-terminal (got {other:?})");
            }
        };
        let device = line
            .strip_prefix("PTY ")
            .ok_or_else(|| anyhow!("the simulated robot printed {line:?}, expected 'PTY <path>'"))?
            .trim()
            .to_string();
        outln!("simulated robot started on {device}");
        Ok(SimProcess { child, device })
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
