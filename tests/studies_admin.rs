//! `gaittune studies` and `export` against real files: listing and exporting never create or
//! change a file; deleting asks (or takes --yes); copying carries every trial over.

mod common;
use common::*;

use std::process::{Command, Output};

fn gaittune(w: &Workdir, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(w.dir.path())
        .output()
        .expect("run gaittune")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn studies_are_listed_copied_and_deleted_and_reading_never_writes() {
    let w = Workdir::new();
    let missing = format!("sqlite:{}", w.path("missing.db").display());
    for args in [
        vec!["studies", "--storage", missing.as_str()],
        vec!["export", "--storage", missing.as_str(), "--study", "it"],
    ] {
        let out = gaittune(&w, &args);
        assert!(!out.status.success());
        assert!(
            text(&out).contains("no such database file"),
            "{}",
            text(&out)
        );
    }
    assert!(!w.path("missing.db").exists(), "reading created the file");

    let config = w.write_config(&sim_config(&w.storage_url(), &w.event_log(), 3, 30, 0.0));
    w.run_ok(&config);
    let db = w.path("study.db");
    let before = std::fs::metadata(&db).unwrap().modified().unwrap();
    let out = gaittune(&w, &["studies", "--storage", &w.storage_url()]);
    assert!(out.status.success(), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        listing.contains("it") && listing.contains("maximize"),
        "{listing}"
    );
    w.export("it");
    assert_eq!(std::fs::metadata(&db).unwrap().modified().unwrap(), before);

    let other = format!("sqlite:{}", w.path("other.db").display());
    let out = gaittune(
        &w,
        &[
            "studies",
            "--storage",
            &w.storage_url(),
            "copy",
            "it",
            "--to",
            &other,
            "--as",
            "copy",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let copied = gaittune(&w, &["export", "--storage", &other, "--study", "copy"]);
    let original: serde_json::Value = serde_json::from_slice(
        &gaittune(
            &w,
            &["export", "--storage", &w.storage_url(), "--study", "it"],
        )
        .stdout,
    )
    .unwrap();
    let copied: serde_json::Value = serde_json::from_slice(&copied.stdout).unwrap();
    let values = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| {
                serde_json::json!([
                    t["state"],
                    t["params"],
                    t["value"],
                    t["episodes"],
                    t["intermediate"]
                ])
            })
            .collect()
    };
    assert_eq!(values(&original), values(&copied));

    // Not confirmed (no terminal, no --yes): nothing is deleted.
    let out = gaittune(
        &w,
        &["studies", "--storage", &w.storage_url(), "delete", "it"],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("--yes"), "{}", text(&out));
    let out = gaittune(
        &w,
        &[
            "studies",
            "--storage",
            &w.storage_url(),
            "delete",
            "it",
            "--yes",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = gaittune(&w, &["studies", "--storage", &w.storage_url()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no studies"));
}
