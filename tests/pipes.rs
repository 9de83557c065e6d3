//! A closed standard output (`gaittune run … | head -1`) never stops a run: progress goes on
//! on the robot and in storage, and the daemon neither panics nor fails.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

#[test]
fn a_run_whose_stdout_closes_after_one_line_finishes_its_study() {
    let w = Workdir::new();
    let config = w.write_config(&sim_config(&w.storage_url(), &w.event_log(), 4, 100, 0.0));
    let mut child = w.spawn_run(&config);
    // What `| head -1` does: read one line, then close the pipe.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        stderr.matches("standard output closed").count(),
        1,
        "one warning: {stderr}"
    );
    let trials = w.export("it");
    let finished = in_state(&trials, "COMPLETE").len() + in_state(&trials, "PRUNED").len();
    assert_eq!((trials.len(), finished), (4, 4), "{trials:?}");
}

#[test]
fn an_export_whose_reader_is_gone_neither_panics_nor_fails() {
    let w = Workdir::new();
    let config = w.write_config(&sim_config(&w.storage_url(), &w.event_log(), 2, 50, 0.0));
    w.run_ok(&config);
    let mut export = Command::new(bin())
        .args(["export", "--storage", &w.storage_url(), "--study", "it"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(export.stdout.take());
    let out = export.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}; stderr: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
