//! The binary's exit codes and messages for bad input (no root or kernel programs needed).

use std::process::Command;

fn agent(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(out.stdout.is_empty(), "nothing but records goes to stdout");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_exit_2() {
    // The agent has no mode: learning and monitoring are the recommender's.
    let (code, err) = agent(&["run", "--mode", "monitor"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--mode"), "{err}");
    assert_eq!(agent(&["run", "--flush-interval", "0"]).0, 2);
    assert_eq!(agent(&["frobnicate"]).0, 2);
    let (code, err) = agent(&["run", "--recommender", "http://r"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--token-file"), "{err}");
    let dir = std::env::temp_dir().join(format!("agent-cli-url-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "t").unwrap();
    let (code, err) = agent(&[
        "run",
        "--recommender",
        "recommender:8080",
        "--token-file",
        token.to_str().unwrap(),
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("http:// or https://"), "{err}");
}

#[test]
fn bad_inputs_exit_1_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("agent-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pods = dir.join("pods.yaml");
    std::fs::write(&pods, "kind: Pod\nmetadata: [unclosed\n").unwrap();
    let (code, err) = agent(&["run", "--pods-file", pods.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pods.yaml:"), "{err}");

    let (code, err) = agent(&["run", "--pods-file", "/nonexistent/pods.json"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/pods.json"), "{err}");
}

#[test]
fn the_api_without_a_client_configuration_exits_1_before_the_kernel() {
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["run", "--pods-from", "api", "--flows-out", "/dev/null"])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--pods-from api: no Kubernetes client configuration"),
        "{err}"
    );
    let (code, err) = agent(&["run", "--pods-from", "api", "--pods-file", "p.json"]);
    assert_eq!(code, 2, "{err}");
}
