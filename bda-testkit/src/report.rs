//! Running the `bda` binary from a test and comparing its JSON reports.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs `bin` with `args` (and `env`, e.g. a library path) and returns its output.
pub fn run(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the binary")
}

/// The words of `s`: command lines of literal flags written on one line
/// (`argv("fewshot --ways 3")`); paths, which may hold spaces, are pushed separately.
pub fn argv(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

/// The repository's fixture folder `name` (`fixtures/NAME`).
pub fn fixture(name: &str) -> String {
    format!("{}/../fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The one JSON report of a successful run (the first line for JSON-lines output).
pub fn json(out: &Output) -> Value {
    json_lines(out)
        .into_iter()
        .next()
        .expect("a JSON report on stdout")
}

/// The error of a failed run, checked to be what the user should see: exit `code`, nothing
/// on stdout, one line on stderr, no panic.
pub fn one_line_error(out: &Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(out.stdout.is_empty(), "a report despite the error: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// `bin ARGS`: exit code, stdout and stderr as text.
pub fn run_text(bin: &Path, args: &[&str]) -> (i32, String, String) {
    let out = run(bin, args, &[]);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// The text elements of an SVG document, trimmed.
pub fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_string())
        })
        .collect()
}

/// The JSON values printed one per line by a successful run (panics with stderr otherwise).
pub fn json_lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON report"))
        .collect()
}

/// The one-line message and exit code of a failed run.
pub fn failure(out: &Output) -> (i32, String) {
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    (out.status.code().unwrap_or(-1), err)
}

/// Whether a key holds a measurement of the machine (`seconds`, `load_seconds`, `s_per_*`,
/// `gflops*`, `max_rss_mib`): what differs between two runs of the same configuration.
pub fn is_timing(key: &str) -> bool {
    key == "seconds"
        || key == "max_rss_mib"
        || key.ends_with("_seconds")
        || key.starts_with("s_")
        || key.starts_with("gflops")
}

/// `v` with every timing entry removed, at any depth.
pub fn without_timings(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !is_timing(k))
                .map(|(k, v)| (k.clone(), without_timings(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_timings).collect()),
        other => other.clone(),
    }
}
