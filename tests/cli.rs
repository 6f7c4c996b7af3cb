//! End-to-end tests of the `sngate` command line: the real binary, real pipes
//! and real files.
//!
//! They pin what an operator sees: the default config round-trips through
//! `check-config`, and a bad config is refused with exit code 2 and a message
//! that names the offending key and its line.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_sngate");

fn sngate(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("SNGATE_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run sngate")
}

/// Runs `sngate check-config -` with `input` on its stdin.
fn check_stdin(input: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(["check-config", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sngate");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input).expect("write stdin");
    drop(stdin);
    child.wait_with_output().expect("wait for sngate")
}

/// A temporary file holding `text`, and its path; the file lives as long as
/// the returned handle.
fn temp_config(text: &str) -> (tempfile::NamedTempFile, String) {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write temp file");
    let path = file.path().to_str().expect("utf-8 temp path").to_owned();
    (file, path)
}

/// Runs `sngate check-config FILE` on a temporary file holding `text`.
fn check_file(text: &str) -> (Output, String) {
    let (_file, path) = temp_config(text);
    (sngate(&["check-config", &path]), path)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn print_config_piped_into_check_config_is_ok() {
    let printed = sngate(&["print-config"]);
    assert!(printed.status.success(), "{}", stderr(&printed));
    assert!(stdout(&printed).contains("[gateway]"));

    let checked = check_stdin(&printed.stdout);
    assert_eq!(checked.status.code(), Some(0), "{}", stderr(&checked));
    assert_eq!(stdout(&checked), "<stdin>: ok\n");
}

#[test]
fn print_config_written_to_a_file_is_ok() {
    let printed = sngate(&["print-config"]);
    let (checked, path) = check_file(&stdout(&printed));
    assert_eq!(checked.status.code(), Some(0), "{}", stderr(&checked));
    assert_eq!(stdout(&checked), format!("{path}: ok\n"));
}

#[test]
fn unknown_key_is_rejected_with_its_name_and_line() {
    let text = "[gateway]\ngateway_id = 2\n\n[limits]\nmax_clients = 5\nmax_clinets = 6\n";
    let (out, path) = check_file(text);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&path), "{err}");
    assert!(err.contains("max_clinets"), "{err}");
    assert!(err.contains("line 6"), "{err}");
    assert!(stdout(&out).is_empty());
}

#[test]
fn unknown_key_from_stdin_is_rejected() {
    let out = check_stdin(b"[udp]\nlisten = []\nbogus = 1\n");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("<stdin>") && err.contains("bogus") && err.contains("line 3"),
        "{err}"
    );
}

#[test]
fn duplicate_predefined_id_is_rejected_with_key_and_line() {
    let text = "\
[[predefined_topics]]
id = 7
topic = \"sensors/a\"

[[predefined_topics]]
topic = \"sensors/b\"
id = 7
";
    let (out, path) = check_file(text);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{path}:7: invalid `predefined_topics[1].id`")),
        "{err}"
    );
    assert!(err.contains("duplicate id 7"), "{err}");
}

#[test]
fn run_with_a_bad_config_exits_2_before_starting() {
    let (_file, path) = temp_config("");
    let out = sngate(&["run", "--config", &path, "--predefined", "0=a"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("command line: invalid `predefined_topics[0].id`"),
        "{err}"
    );

    let out = sngate(&["run", "--log-level", "inf"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("log.level"), "{}", stderr(&out));
}

#[test]
fn missing_file_is_an_io_error() {
    let out = sngate(&["check-config", "/nonexistent/sngate.toml"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("/nonexistent/sngate.toml: cannot read config file"),
        "{err}"
    );
    assert!(err.contains("caused by:"), "{err}");
}

#[test]
fn help_for_each_command_mentions_its_flags() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["--help"], &["run", "check-config", "print-config"]),
        (
            &["run", "--help"],
            &[
                "--config",
                "--log-level",
                "--log-format",
                "--udp",
                "--upstream",
                "--bridge-mode",
                "--predefined",
                "--gateway-id",
            ],
        ),
        (&["check-config", "--help"], &["FILE", "stdin"]),
        (&["print-config", "--help"], &["default config"]),
    ];
    for (args, words) in cases {
        let out = sngate(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let help = stdout(&out);
        for word in *words {
            assert!(help.contains(word), "{args:?} help lacks {word:?}:\n{help}");
        }
    }
}

/// Every config file the project ships (`config/*.toml`, `examples/*.toml`,
/// found by listing the directories, so a new file is covered without
/// touching this test) passes the real `check-config`.
#[test]
fn every_shipped_config_file_checks_ok() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["config", "examples"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("list the directory") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                files.push(path);
            }
        }
    }
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(root).unwrap_or(p).display().to_string())
        .collect();
    // The default file and at least one example: the listing found them.
    assert!(
        names.contains(&"config/sngate.toml".to_owned()),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("examples/")),
        "{names:?}"
    );
    for file in &files {
        let path = file.to_str().expect("utf-8 path");
        let out = sngate(&["check-config", path]);
        assert_eq!(out.status.code(), Some(0), "{path}: {}", stderr(&out));
        assert_eq!(stdout(&out), format!("{path}: ok\n"));
    }
}
