//! Hostile and odd input files: nesting 100,000 levels deep and "billion laughs" are refused
//! with a position (exit 2, one error line naming file:line:col), in every kind of file the
//! commands read; a UTF-8 byte-order mark changes nothing. Runs the built binary.

#[path = "fixtures/fixture.rs"]
mod fixture;

use std::path::PathBuf;

use fixture::{cluster_files, file, run_binary};

/// A file of this test's own, under cargo's temporary directory for integration tests.
fn write(name: &str, text: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli_hostile_input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn cluster_args(files: &[String]) -> Vec<String> {
    std::iter::once("--cluster".to_string())
        .chain(files.iter().cloned())
        .collect()
}

fn fixture_cluster() -> Vec<String> {
    cluster_files()
        .iter()
        .map(|p| p.display().to_string())
        .collect()
}

/// Asserts exit 2 and one `error:` line holding every part; returns the line.
fn refused(args: Vec<String>, parts: &[&str]) -> String {
    let out = run_binary(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{args:?}\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    for part in parts {
        assert!(errors[0].contains(part), "{part:?} not in {}", errors[0]);
    }
    errors[0].to_string()
}

fn recommend(cluster: &[String], flows: &str) -> Vec<String> {
    let mut args = strings(&["recommend"]);
    args.extend(cluster_args(cluster));
    args.extend(strings(&["--flows", flows]));
    args
}

fn verify(cluster: &[String], flows: &str, policies: &str) -> Vec<String> {
    let mut args = strings(&["verify"]);
    args.extend(cluster_args(cluster));
    args.extend(strings(&["--flows", flows, "--policies", policies]));
    args
}

/// 100,000 nested sequences under a key (91 s of CPU before failing, when read whole).
fn deep_yaml() -> String {
    format!(
        "apiVersion: v1\nkind: List\nitems: {}\n",
        "[".repeat(100_000)
    )
}

#[test]
fn deep_yaml_is_refused_in_cluster_and_policy_files() {
    let deep = write("deep.yaml", &deep_yaml());
    let flows = file("flows.jsonl");
    // The key `items` is one level, so the 128th bracket (column 8 + 127) is one too many.
    let at = format!("{deep}:3:135:");
    refused(
        recommend(std::slice::from_ref(&deep), &flows),
        &[&at, "nested deeper than 128 levels"],
    );
    refused(
        verify(&fixture_cluster(), &flows, &deep),
        &[&at, "nested deeper than 128 levels"],
    );
}

#[test]
fn deep_json_is_refused_in_cluster_and_flows_files() {
    let deep = write("deep.json", &"[".repeat(100_000));
    refused(
        recommend(std::slice::from_ref(&deep), &file("flows.jsonl")),
        &[&format!("{deep}:1:"), "nested deeper than 128"],
    );
    // In a field the reader does not know: serde_json skips it in one linear pass, without
    // recursion, and finds the line unfinished.
    let deep_flow = write(
        "deep.jsonl",
        &format!("{{\"extra\":{}", "[".repeat(100_000)),
    );
    refused(
        recommend(&fixture_cluster(), &deep_flow),
        &[&format!("{deep_flow}:1:"), "not a FlowRecord"],
    );
}

#[test]
fn billion_laughs_is_refused_at_the_alias_that_crosses_the_budget() {
    let mut text = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\ndata:\n  a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for pair in ["a", "b", "c", "d", "e", "f", "g", "h", "i"].windows(2) {
        let aliases = vec![format!("*{}", pair[0]); 9].join(",");
        text.push_str(&format!("  {}: &{} [{aliases}]\n", pair[1], pair[1]));
    }
    let laughs = write("laughs.yaml", &text);
    let e = refused(
        recommend(std::slice::from_ref(&laughs), &file("flows.jsonl")),
        &["alias *e expands the file past"],
    );
    // Line 10 (`f: &f [*e,...]`), at one of its aliases.
    let position = e
        .strip_prefix(&format!("error: {laughs}:"))
        .unwrap_or_else(|| panic!("{e}"));
    let mut numbers = position.split(':');
    let line: usize = numbers.next().unwrap().parse().unwrap();
    let column: usize = numbers.next().unwrap().parse().unwrap();
    assert_eq!(line, 10, "{e}");
    assert_eq!(
        text.lines().nth(line - 1).unwrap().chars().nth(column - 1),
        Some('*'),
        "{e}"
    );
}

/// The same command on the fixture files, and on copies of them that start with a BOM: the
/// same output.
#[test]
fn a_byte_order_mark_changes_nothing_in_any_file() {
    let bom = |path: &str| {
        // `cluster/shop.yaml` and `policies/shop.yaml`: the directory keeps them apart.
        let path = PathBuf::from(path);
        let name = format!(
            "bom-{}-{}",
            path.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy(),
            path.file_name().unwrap().to_string_lossy()
        );
        write(
            &name,
            &format!("\u{feff}{}", std::fs::read_to_string(path).unwrap()),
        )
    };
    let cluster = fixture_cluster();
    let cluster_bom: Vec<String> = cluster.iter().map(|f| bom(f)).collect();
    let flows = file("flows.jsonl");
    let policies = file("policies/shop.yaml");
    for (plain, with_bom) in [
        (
            recommend(&cluster, &flows),
            recommend(&cluster_bom, &bom(&flows)),
        ),
        (
            verify(&cluster, &flows, &policies),
            verify(&cluster_bom, &bom(&flows), &bom(&policies)),
        ),
    ] {
        let expected = run_binary(&plain);
        let got = run_binary(&with_bom);
        assert_eq!(
            got.status.code(),
            expected.status.code(),
            "{}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&got.stdout),
            String::from_utf8_lossy(&expected.stdout)
        );
        assert!(!got.stdout.is_empty());
    }
}
